"""``train(cfg)``: config -> datamodule -> GANModule -> Trainer.fit -> metrics.

Reads top to bottom: seed, data, networks, objective, module, callbacks, logger,
trainer, fit. Tests call it directly with a composed config.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ganrun.callbacks.evaluation import Evaluation
from ganrun.callbacks.processes import ProcessRecord
from ganrun.callbacks.progress import progress_callbacks, quiet_third_party
from ganrun.callbacks.threads import ThreadBalancer
from ganrun.config import recipe
from ganrun.config.build import build_latent, build_module, build_networks, instantiate  # noqa: F401 (re-exported)
from ganrun.config.checks import check_config
from ganrun.config.preflight import check_accelerator
from ganrun.metrics.protocol import final_metrics
from ganrun.records.hparams import log_hyperparameters, option_choices, tensorboard_run_name
from ganrun.records.summary import RunSummary
from ganrun.runtime import environment, fast
from ganrun.runtime.slurm.job import check_main_address
from ganrun.runtime.threads import ThreadPolicy
from ganrun.training.module import GANModule


def train(
    cfg: DictConfig, overrides: Optional[list[str]] = None, callbacks: Sequence[pl.Callback] = ()
) -> dict[str, float]:
    """``overrides``: the command line this config was composed from, stored in every
    checkpoint so that ``ganrun ckpt_path=...`` alone resumes with it (``ganrun.config.resume``).
    ``callbacks``: Lightning callbacks added to the configured ones, e.g. one whose
    ``on_train_batch_end(trainer, module, outputs, ...)`` observes every G update (``outputs``:
    that update's statistics, empty after a batch with a D step only)."""
    extra_callbacks = list(callbacks)
    check_config(cfg)
    quiet_third_party()
    check_accelerator(cfg.trainer)
    check_main_address()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)

    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    datamodule.batches_done = lambda: module.batches_done
    ckpt_path, resume_step = checked_resume(cfg, module, run_dir)
    module.run_config["environment"] = environment.collect(resumed_from=ckpt_path)
    module.run_config["overrides"] = None if overrides is None else [str(item) for item in overrides]
    module.run_config["choices"] = option_choices(cfg, datamodule)

    threads = ThreadPolicy(cfg.get("threads", "auto"), processes_on_node=processes_on_node(cfg.trainer))
    module.run_config["environment"]["threads"] = threads.record()
    # Console: the G-update progress bar first, the end-of-run summary after every other callback.
    callbacks = [
        *progress_callbacks(cfg.trainer),
        *build_callbacks(cfg),
        *extra_callbacks,
        ThreadBalancer(threads),
        ProcessRecord(cfg.run_dir),
        RunSummary(cfg.run_dir),
    ]
    loggers = build_loggers(cfg, resume_step)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_epochs=-1 if cfg.steps is not None else cfg.trainer.max_epochs,
        precision=fast.resolve_precision(
            cfg.trainer.get("precision"),
            cfg.trainer.get("accelerator", "auto"),
            convolutional=fast.has_convolutions(module.generator, module.discriminator),
        ),
    )
    paths = fast.FastPaths.resolve(cfg.get("fast"), trainer.strategy.root_device)
    fast.apply_to_module(paths, module, gradient_penalty=module.terms.double_backward)
    datamodule.data_on_device = paths.data_on_device
    if trainer.is_global_zero:
        print(f"ganrun: run directory {run_dir.resolve()}", flush=True)
        recipe.announce(overrides)  # what configs/model_dataset, configs/loss_dataset add to the paper's settings
        environment.write(run_dir, module.run_config["environment"])
        log_hyperparameters(loggers, cfg, datamodule)  # values of its hp/* columns are logged at the end

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = dict(module.last_metrics)
    metrics.update(final_metrics(module, datamodule, callbacks))  # reuses the end-of-run measurement
    for callback in callbacks:
        if isinstance(callback, Evaluation):
            metrics.update(callback.summary())  # hp/metric: the best value of the monitored metric
    if trainer.is_global_zero:
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("hp/")}, step=module.g_updates)
            logger.finalize("success")
    metrics["g_updates"] = float(module.g_updates)
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["world_size"], metrics["num_nodes"] = trainer.world_size, trainer.num_nodes  # result.json keeps them apart
    received = [cb.received_signal for cb in callbacks if getattr(cb, "received_signal", None)]
    if received:
        metrics["stopped_by_signal"] = float(received[0])
    return metrics


def processes_on_node(trainer_cfg: DictConfig) -> int:
    """Training processes this run starts on this machine (``trainer.devices``; 1 unless DDP)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if devices == -1 and trainer_cfg.get("accelerator") in ("gpu", "cuda"):
        import torch

        return max(1, torch.cuda.device_count())
    return len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else 1


def checked_resume(cfg: DictConfig, module: GANModule, run_dir: Path) -> tuple[Optional[str], Optional[int]]:
    """The checkpoint to resume from (``ckpt_path=last``: RUN_DIR/checkpoints/last.ckpt
    when there is one; the same in a Slurm job that Slurm restarted) and its G update,
    after checking that it is a readable ganrun checkpoint whose networks fit this run's;
    (None, None) for a fresh run."""
    from ganrun.records.checkpoints import check_resumable, load_checkpoint, resolve_ckpt_path
    from ganrun.runtime.slurm.job import job_id as slurm_job_id
    from ganrun.runtime.slurm.job import restart_count, resume_after_restart

    setting = resume_after_restart(cfg.ckpt_path, run_dir)  # a requeued Slurm job continues its run
    if setting != cfg.ckpt_path:
        print(
            f"ganrun: slurm restarted job {slurm_job_id()} (restart {restart_count()}): continuing from its last.ckpt",
            flush=True,
        )
    ckpt_path = resolve_ckpt_path(setting, run_dir)
    if ckpt_path is None:
        if setting == "last":
            print(
                f"ganrun: ckpt_path=last: no checkpoint in {run_dir / 'checkpoints'} yet, starting the run", flush=True
            )
        return None, None
    checkpoint = load_checkpoint(ckpt_path)
    check_resumable(checkpoint, module, ckpt_path)
    return ckpt_path, int(checkpoint.get("ganrun_counters", {}).get("g_updates", 0))


def build_loggers(cfg: DictConfig, resume_step: Optional[int]) -> list:
    """``logger.*``. On resume, TensorBoard drops events logged after the checkpoint
    (a run killed between two checkpoints logged steps that are now replayed), so
    every step appears once."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        extra = {}
        if resume_step is not None and node._target_.endswith("TensorBoardLogger"):
            extra["purge_step"] = resume_step + 1
        if node._target_.endswith("TensorBoardLogger") and not node.get("version"):
            extra["version"] = tensorboard_run_name(cfg.run_dir, cfg)
        loggers.append(instantiate(node, **extra))
    return loggers


def build_callbacks(cfg: DictConfig) -> list:
    """``callbacks.*`` nodes with a ``_target_``. A node without one only tunes a callback
    that callbacks=none switched off (e.g. an experiment's callbacks.samples.every_n_steps),
    or is a typo: it is skipped with a warning naming it."""
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node and "_target_" in node:
            callbacks.append(instantiate(node))
        elif node:
            warnings.warn(f"callbacks.{name} has no _target_ (switched off by callbacks=none, or misspelt): ignored")
    return callbacks
