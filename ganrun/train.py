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
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from ganrun import environment, fast
from ganrun.callbacks.evaluation import Evaluation
from ganrun.config_check import check_config
from ganrun.errors import ConfigError
from ganrun.module import GANModule, optimizer_factory


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
    fast.apply_to_module(paths, module, gradient_penalty=bool(cfg.loss.gradient_penalty))
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


def instantiate(node, **kwargs):
    """Hydra's instantiate, re-raising the user's error (bad value) that Hydra wraps."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, (ConfigError, FileNotFoundError)):
            raise cause from None
        raise


def build_latent(model_cfg: DictConfig):
    """G's input distribution: ``model.latent`` (default: N(0, I) of ``model.z_dim`` dims)."""
    from ganrun.latent import GaussianLatent

    if model_cfg.get("latent") is None:
        return GaussianLatent(z_dim=model_cfg.z_dim)
    return instantiate(model_cfg.latent, z_dim=model_cfg.z_dim)


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


def build_networks(model_cfg: DictConfig, data_shape, num_classes: int, is_image: bool, tricks=None):
    """G and D from ``model.generator`` / ``model.discriminator`` for data of this shape.

    On 2-D data, ``model.toy`` (set by ``configs/model_dataset/<model>_<dataset>.yaml``,
    e.g. WGAN-GP's 3 x 512 MLPs) replaces image networks such as DCGAN's.
    ``tricks``: the ones built into D (``tricks.minibatch_discrimination``).
    """
    architecture = model_cfg
    if not is_image and model_cfg.get("toy") is not None:
        architecture = model_cfg.toy
    generator = instantiate(
        architecture.generator,
        z_dim=build_latent(model_cfg).dim,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        bounded_output=is_image,
    )
    discriminator = instantiate(
        architecture.discriminator,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        **discriminator_tricks(architecture.discriminator, tricks),
    )
    return generator, discriminator


def discriminator_tricks(node: DictConfig, tricks) -> dict:
    """Keyword arguments for D's constructor from the tricks that live in D's architecture."""
    import inspect

    from hydra.utils import get_class

    if not (tricks and tricks.get("minibatch_discrimination")):
        return {}
    if "minibatch_discrimination" not in inspect.signature(get_class(node._target_)).parameters:
        raise ConfigError(
            f"tricks.minibatch_discrimination=true is not supported by {node._target_}; "
            "it works with the MLP and DCGAN discriminators (model=gan, cgan, dcgan, lsgan, wgan, wgan_gp, infogan)"
        )
    return {"minibatch_discrimination": True}


def build_module(cfg: DictConfig, datamodule) -> GANModule:
    num_classes = datamodule.num_classes if cfg.model.conditional else 0
    if cfg.model.conditional and not datamodule.num_classes:
        raise ConfigError(
            f"this model is class-conditional but {datamodule.describe()} has no labels; "
            "use a labelled dataset: digits, mnist, fashion_mnist, cifar10, fake, or folder with class subfolders"
        )
    generator, discriminator = build_networks(
        cfg.model, datamodule.data_shape, num_classes, datamodule.is_image, cfg.tricks
    )
    objective = build_objective(cfg)
    check_critic(cfg, discriminator)
    tricks = cfg.tricks
    lr = cfg.optimizer.lr
    fast_kernels = fast.switch(cfg.get("fast"), "fused_optimizers", auto=True)
    module = instantiate(
        cfg.model.module,
        generator=generator,
        discriminator=discriminator,
        objective=objective,
        latent=build_latent(cfg.model),
        num_classes=num_classes,
        n_critic=cfg.n_critic,
        optimizer_g=optimizer_factory(cfg.optimizer, cfg.optimizer.lr_g or lr, fast_kernels),
        optimizer_d=optimizer_factory(cfg.optimizer, cfg.optimizer.lr_d or lr, fast_kernels),
        max_g_updates=cfg.steps,
        gradient_penalty_weight=cfg.loss.gradient_penalty,
        weight_clip=cfg.loss.weight_clip,
        grad_clip_norm=tricks.grad_clip_norm,
        instance_noise_std=tricks.instance_noise_std,
        instance_noise_anneal_steps=tricks.instance_noise_anneal_steps,
        ema_decay=tricks.ema_decay,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    module.run_config = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data_shape": list(datamodule.data_shape),
        "num_classes": num_classes,
        "is_image": datamodule.is_image,
    }
    return module


def build_objective(cfg: DictConfig):
    objective = instantiate(cfg.loss.objective)
    smoothing = cfg.tricks.label_smoothing
    if smoothing:
        if not getattr(objective, "supports_label_smoothing", False):
            raise ConfigError(
                f"tricks.label_smoothing={smoothing} needs a loss with a real-label target "
                f"(minimax, ns, ls); {type(objective).__name__} has none"
            )
        objective.real_target = 1.0 - smoothing
    return objective


def check_critic(cfg: DictConfig, discriminator) -> None:
    """A gradient penalty is per example: batch norm in the critic mixes examples and breaks it."""
    import torch

    if cfg.loss.gradient_penalty and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        raise ConfigError(
            "a gradient penalty (loss=wgan_gp) cannot be used with batch norm in the critic "
            "(model.discriminator.norm=batch); use model.discriminator.norm=layer or none"
        )


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
