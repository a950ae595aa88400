"""Config resolvers for sweeps: devices of jobs side by side (``launcher=joblib``), trial folders
(Optuna), what a Slurm job asks for (``launcher=slurm``, ``ganrun.runtime.slurm.request``).

Registered when ``ganrun.commands.cli`` is imported, i.e. in the sweep's main process and in
every worker that runs a job. Light to import: torch is imported only when resolved.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from ganrun.runtime.slurm.request import gpus_per_node, mem_gb


def parallel_jobs() -> int:
    """How many jobs run at once: one per GPU, else one per CPU core."""
    import torch

    return torch.cuda.device_count() or os.cpu_count() or 1


def job_devices(job_num: int, accelerator: str):
    """``trainer.devices`` of sweep job ``job_num``: GPU ``job_num mod #GPUs`` on a GPU machine, else 1 device."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus and str(accelerator) in ("gpu", "cuda", "auto"):
        return [int(job_num) % gpus]
    return 1


def trial_name(number, task_overrides, searched) -> str:
    """Folder of an Optuna trial: its number and the searched keys' values (4 significant digits),
    e.g. ``3_n_critic=2,optimizer.lr=0.000443``; unique even when two trials draw the same values."""
    parts = []
    for override in task_overrides:
        key, _, value = str(override).partition("=")
        if key in searched:
            try:
                value = f"{float(value):.4g}" if "." in value or "e" in value.lower() else value
            except ValueError:
                pass
            parts.append(f"{key}={value}")
    return f"{number}_" + ",".join(sorted(parts))


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("ganrun_parallel_jobs", parallel_jobs, replace=True)
    OmegaConf.register_new_resolver("ganrun_job_devices", job_devices, replace=True)
    OmegaConf.register_new_resolver("ganrun_trial_name", trial_name, replace=True)
    OmegaConf.register_new_resolver("ganrun_slurm_gpus", gpus_per_node, replace=True)
    OmegaConf.register_new_resolver("ganrun_slurm_mem_gb", mem_gb, replace=True)
