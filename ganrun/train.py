"""``train(cfg)``: config -> datamodule -> GANModule -> Trainer.fit -> metrics.

Reads top to bottom: seed, data, networks, objective, module, callbacks, logger,
trainer, fit. Tests call it directly with a composed config.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

from ganrun import environment, fast
from ganrun.callbacks.evaluation import Evaluation
from ganrun.config_check import check_config
from ganrun.build import build_latent, build_module, build_networks, instantiate  # noqa: F401 (re-exported)
from ganrun.modules.gan import GANModule


def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)

    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    datamodule.batches_done = lambda: module.batches_done
    ckpt_path, resume_step = checked_resume(cfg, module, run_dir)
    module.run_config["environment"] = environment.collect(resumed_from=ckpt_path)

    callbacks = build_callbacks(cfg)
    loggers = build_loggers(cfg, resume_step)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_epochs=-1 if cfg.steps is not None else cfg.trainer.max_epochs,
        precision=fast.resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto")),
    )
    paths = fast.FastPaths.resolve(cfg.get("fast"), trainer.strategy.root_device)
    fast.apply_to_module(paths, module, gradient_penalty=module.terms.double_backward)
    datamodule.data_on_device = paths.data_on_device
    if trainer.is_global_zero:
        print(f"ganrun: run directory {run_dir.resolve()}", flush=True)
        environment.write(run_dir, module.run_config["environment"])
        for logger in loggers:
            # Declares the HPARAMS tab's metric columns; their values are logged at the end.
            logger.log_hyperparams(hyperparameters(cfg, datamodule), {name: float("nan") for name in HP_METRICS})

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = dict(module.last_metrics)
    metrics.update(final_metrics(module, datamodule))
    for callback in callbacks:
        if isinstance(callback, Evaluation):
            metrics.update(callback.summary())  # hp/metric: the best value of the monitored metric
    if trainer.is_global_zero:
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("hp/")}, step=module.g_updates)
            logger.finalize("success")
    metrics["g_updates"] = float(module.g_updates)
    metrics["wall_time_s"] = time.perf_counter() - started
    received = [cb.received_signal for cb in callbacks if getattr(cb, "received_signal", None)]
    if received:
        metrics["stopped_by_signal"] = float(received[0])
    return metrics


HP_METRICS = ("hp/metric", "hp/loss_d", "hp/loss_g", "hp/modes_covered", "hp/high_quality_fraction")


def final_metrics(module: GANModule, datamodule) -> dict[str, float]:
    """End-of-run numbers for the HPARAMS tab and for sweepers (``hp/metric``).

    2-D mixtures: modes covered by 2,500 samples (higher is better) is ``hp/metric``
    unless the Evaluation callback ran; then ``hp/metric`` is its best monitored value.
    """
    from ganrun.callbacks.samples import generate
    from ganrun.metrics.toy import mode_coverage

    metrics = {}
    if "loss/d" in module.last_metrics:
        metrics["hp/loss_d"] = module.last_metrics["loss/d"]
        metrics["hp/loss_g"] = module.last_metrics["loss/g"]
    modes = getattr(datamodule, "modes", None)
    if modes is not None:
        import torch

        noise = module.latent.sample(2500, generator=torch.Generator().manual_seed(0))
        coverage = mode_coverage(generate(module, noise, None), modes, datamodule.std)
        metrics["hp/modes_covered"] = coverage["modes_covered"]
        metrics["hp/high_quality_fraction"] = coverage["high_quality_fraction"]
        metrics["hp/metric"] = coverage["modes_covered"]
    return metrics


def checked_resume(cfg: DictConfig, module: GANModule, run_dir: Path) -> tuple[Optional[str], Optional[int]]:
    """The checkpoint to resume from (``ckpt_path=last``: RUN_DIR/checkpoints/last.ckpt
    when there is one) and its G update, after checking that it is a readable ganrun
    checkpoint whose networks fit this run's; (None, None) for a fresh run."""
    from ganrun.checkpoint_io import check_resumable, load_checkpoint, resolve_ckpt_path

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir)
    if ckpt_path is None:
        if cfg.ckpt_path == "last":
            print(f"ganrun: ckpt_path=last: no checkpoint in {run_dir / 'checkpoints'} yet, starting the run", flush=True)
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


def hyperparameters(cfg: DictConfig, datamodule) -> dict[str, Any]:
    """A flat, readable view of what distinguishes runs (for TensorBoard's HPARAMS tab)."""
    flat = {
        "model": _target_name(cfg.model.generator),
        "loss": _target_name(cfg.loss.objective),
        "dataset": type(datamodule).__name__,
        "seed": cfg.seed,
        "steps": cfg.steps if cfg.steps is not None else -1,
        "n_critic": cfg.n_critic,
        "lr_g": cfg.optimizer.lr_g or cfg.optimizer.lr,
        "lr_d": cfg.optimizer.lr_d or cfg.optimizer.lr,
        "batch_size": cfg.dataset.batch_size,
        "z_dim": cfg.model.z_dim,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
    }
    for key, value in cfg.tricks.items():
        flat[f"tricks/{key}"] = value if value is not None else "none"
    return flat


def _target_name(node: DictConfig) -> str:
    return node._target_.rsplit(".", 1)[-1]
