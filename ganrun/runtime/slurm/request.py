"""What a ganrun job asks Slurm for, and the request's checks.

``configs/launcher/slurm.yaml`` derives the request from the trainer: one task per
process (``trainer.devices`` per node, ``trainer.num_nodes`` nodes), GPUs only when the
run trains on them (``--gpus-per-node`` on a CPU-only partition is refused by sbatch),
and memory per node in proportion to its processes. Every value stays a plain
``hydra.launcher.*`` key that a user overrides.
"""

from __future__ import annotations

from typing import Any, Optional

from ganrun.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")
MEM_GB_PER_PROCESS = 8
# hydra.launcher keys derived from the trainer, named in the refusals.
SOURCES = {"nodes": "trainer.num_nodes", "tasks_per_node": "trainer.devices"}


def gpus_per_node(accelerator: Any, devices: Any) -> Optional[int]:
    """``--gpus-per-node``: one GPU per process for a GPU run (``accelerator=gpu|ddp``); None
    (no GPU request at all) for ``cpu``, ``ddp_cpu`` and ``auto``."""
    if str(accelerator) in GPU_ACCELERATORS and isinstance(devices, int) and devices > 0:
        return devices
    return None


def mem_gb(processes_per_node: Any) -> int:
    """``--mem`` (per node): MEM_GB_PER_PROCESS for each process on the node."""
    processes = processes_per_node if isinstance(processes_per_node, int) and processes_per_node > 0 else 1
    return MEM_GB_PER_PROCESS * processes


def check_request(params: dict) -> None:
    """Raise a one-line ConfigError for a request sbatch cannot express (``params``: the
    resolved ``hydra.launcher`` keys)."""
    for key in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
        _whole_number(key, params.get(key), minimum=1)
    gpus = params.get("gpus_per_node")
    if gpus is not None:
        _whole_number("gpus_per_node", gpus, minimum=0)
    memory = params.get("mem_gb")
    if memory is not None and not (isinstance(memory, (int, float)) and not isinstance(memory, bool) and memory > 0):
        raise ConfigError(
            f"hydra.launcher.mem_gb={memory} is not valid; give the memory per node in GB (> 0), or null for the partition's default"
        )


def _whole_number(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return
    source = f" (it follows {SOURCES[key]})" if key in SOURCES else ""
    hint = (
        "; with launcher=slurm, trainer.devices is the number of processes per node, e.g. 4"
        if key == "tasks_per_node"
        else ""
    )
    raise ConfigError(
        f"hydra.launcher.{key}={value}{source} is not valid; it must be a whole number >= {minimum}{hint}"
    )


def sbatch_parameters(params: dict) -> tuple[dict, dict]:
    """(executor arguments, sbatch parameters) for submitit from the ``hydra.launcher`` keys,
    as hydra-submitit-launcher maps them: its queue-independent keys keep their names, the
    others are Slurm's (``slurm_`` prefix); a GPU count of 0 is no GPU request."""
    from omegaconf import OmegaConf

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = {"folder": params["submitit_folder"], "slurm_max_num_timeout": params.get("max_num_timeout", 0)}
    sbatch = {}
    for key, value in params.items():
        if key in ("submitit_folder", "max_num_timeout", "_target_"):
            continue
        if key == "gpus_per_node" and not value:
            value = None
        sbatch[key if key in common else f"slurm_{key}"] = value
    return executor, sbatch
