"""TensorBoard's HPARAMS tab and the end-of-run numbers sweepers read (``hp/*``).

One row per run: the *option names* chosen on the command line (``model=dcgan``,
``loss=wgan_gp``, ``dataset=digits``, from Hydra's runtime choices), the values
that distinguish runs (``steps`` is the planned number of G updates, also when
``trainer.max_epochs`` decides it), and ``monitor``, which says what ``hp/metric``
is and which way is better (e.g. ``cfid (lower is better)``). Only the metric
columns that apply to the run are declared, and none is logged before it has a
value (no NaN placeholders).

A TensorBoard run is named by its overrides: ``RUN/tensorboard/<override string>/``
for a single run (e.g. ``model=gan,steps=200``), ``JOB/tensorboard/`` in a sweep
(whose job folders already carry the override string).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

# Config groups whose chosen option name is a hyperparameter column.
CHOICE_GROUPS = ("model", "loss", "dataset", "experiment", "hparams_search")
LOSS_METRICS = ("hp/loss_d", "hp/loss_g")
MIXTURE_METRICS = ("hp/modes_covered", "hp/high_quality_fraction")
# Every hp/* a run may report (final_metrics and Evaluation.summary).
HP_METRICS = ("hp/metric", *LOSS_METRICS, *MIXTURE_METRICS)


def hydra_choices() -> dict[str, str]:
    """``{"model": "dcgan", "loss": "wgan_gp", ...}`` from the running Hydra job; {} outside one
    (e.g. tests calling ``train(cfg)`` on a composed config)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ImportError, ValueError):
        return {}
    return {group: str(choices[group]) for group in CHOICE_GROUPS if choices.get(group) not in (None, "null")}


def option_choices(cfg: DictConfig, datamodule) -> dict[str, str]:
    """The option names of model/loss/dataset: Hydra's choices when running under Hydra
    (or recorded in ``cfg.choices``), else names read from the config's classes."""
    recorded = dict(cfg.get("choices") or {}) or hydra_choices()
    fallback = {
        "model": cfg.model.generator._target_.rsplit(".", 1)[-1],
        "loss": cfg.loss.objective._target_.rsplit(".", 1)[-1],
        "dataset": type(datamodule).__name__.replace("DataModule", "").lower(),
    }
    return {**fallback, **recorded}


def planned_steps(cfg: DictConfig, datamodule) -> int:
    """G updates this run is set to make: ``steps``, else max_epochs × batches per epoch / n_critic."""
    if cfg.steps is not None:
        return int(cfg.steps)
    batches = len(datamodule.train_dataloader())
    return int(cfg.trainer.max_epochs * batches) // max(1, int(cfg.n_critic))


def monitored_metric(cfg: DictConfig, datamodule) -> Optional[str]:
    """What ``hp/metric`` will be: ``eval.monitor`` (auto resolved), or None when no run evaluates it."""
    from ganrun.metrics import suite

    monitor = cfg.eval.get("monitor", "auto")
    return suite.default_monitor(datamodule) if monitor == "auto" else monitor


def hyperparameters(cfg: DictConfig, datamodule) -> dict[str, Any]:
    """A flat, readable view of what distinguishes runs (for TensorBoard's HPARAMS tab)."""
    from ganrun.metrics.suite import METRICS, higher_is_better

    mixture = getattr(datamodule, "modes", None) is not None
    monitor = monitored_metric(cfg, datamodule) or ("modes_covered" if mixture else None)
    if monitor in METRICS:
        monitor = f"{monitor} ({'higher' if higher_is_better(monitor) else 'lower'} is better)"
    flat: dict[str, Any] = dict(option_choices(cfg, datamodule))
    flat.update({
        "monitor": monitor or "none",
        "seed": cfg.seed,
        "steps": planned_steps(cfg, datamodule),
        "n_critic": cfg.n_critic,
        "lr_g": cfg.optimizer.lr_g or cfg.optimizer.lr,
        "lr_d": cfg.optimizer.lr_d or cfg.optimizer.lr,
        "batch_size": cfg.dataset.batch_size,
        "z_dim": cfg.model.z_dim,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
    })
    for key, value in cfg.tricks.items():
        flat[f"tricks/{key}"] = value if value is not None else "none"
    return flat


def applicable_metrics(cfg: DictConfig, datamodule) -> list[str]:
    """The hp/* columns this run will fill: losses always; modes covered on 2-D mixtures;
    hp/metric when something computes it (2-D mixtures, or an evaluation at the end)."""
    names = list(LOSS_METRICS)
    mixture = getattr(datamodule, "modes", None) is not None
    if mixture:
        names += MIXTURE_METRICS
    evaluation = (cfg.get("callbacks") or {}).get("evaluation") or {}
    evaluated = (
        "_target_" in evaluation
        and bool(evaluation.get("every_n_steps", 500))
        and planned_steps(cfg, datamodule) >= evaluation.get("final_min_steps", 100)
        and monitored_metric(cfg, datamodule) is not None
    )
    return (["hp/metric"] if mixture or evaluated else []) + names


def log_hyperparameters(loggers: list, cfg: DictConfig, datamodule) -> None:
    """Declare the HPARAMS row: the hyperparameters and the metric columns that apply
    (their values are logged at the end, by ``train``)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    params = hyperparameters(cfg, datamodule)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _tensorboard_hparams(logger, params, applicable_metrics(cfg, datamodule))
        else:
            logger.log_hyperparams(params)


def _tensorboard_hparams(logger, params: dict[str, Any], metric_names: list[str]) -> None:
    # TensorBoardLogger.log_hyperparams(params, metrics) also logs each metric's value at
    # step 0, which leaves NaN cards for metrics without a value yet: write the session here.
    from torch.utils.tensorboard.summary import hparams

    logger.log_hyperparams(params)  # hparams.yaml beside the events (no metric columns)
    experiment, start, end = hparams(params, {name: 0.0 for name in metric_names})
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)


def tensorboard_run_name(run_dir: Path) -> str:
    """The TensorBoard logger's version folder: the one already there (a resumed run
    continues it); else the override string of a single run; "" in a sweep or outside Hydra."""
    root = Path(run_dir) / "tensorboard"
    if root.is_dir():
        existing = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("events.*")))
        if any(root.glob("events.*")) or not existing:
            return ""
        return existing[0]
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return ""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return ""
    return hydra_cfg.job.override_dirname.replace("/", "_")[:150]


def final_metrics(module, datamodule) -> dict[str, float]:
    """End-of-run numbers for the HPARAMS tab and for sweepers (``hp/metric``).

    2-D mixtures: modes covered by 2,500 samples (higher is better) is ``hp/metric``
    unless the Evaluation callback ran; then ``hp/metric`` is its best monitored value.
    """
    metrics = {}
    if "loss/d" in module.last_metrics:
        metrics["hp/loss_d"] = module.last_metrics["loss/d"]
        metrics["hp/loss_g"] = module.last_metrics["loss/g"]
    coverage = end_of_run_coverage(module, datamodule)
    if coverage is not None:
        metrics["hp/modes_covered"] = coverage["modes_covered"]
        metrics["hp/high_quality_fraction"] = coverage["high_quality_fraction"]
        metrics["hp/metric"] = coverage["modes_covered"]
    return metrics


def end_of_run_coverage(module, datamodule) -> Optional[dict[str, float]]:
    """``mode_coverage`` of the sampling G (EMA copy when enabled) on 2,500 samples from
    seed 0, or None for data without modes: the one protocol of ``hp/modes_covered``
    and of the collapse alarm's end-of-run mode count."""
    import torch

    from ganrun.callbacks.samples import generate
    from ganrun.metrics.toy import mode_coverage

    modes = getattr(datamodule, "modes", None)
    if modes is None:
        return None
    noise = module.latent.sample(2500, generator=torch.Generator().manual_seed(0))
    return mode_coverage(generate(module, noise, None), modes, datamodule.std)
