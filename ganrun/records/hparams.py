"""TensorBoard's HPARAMS tab: the row of a run and its ``hp/*`` columns.

One row per run: the *option names* chosen on the command line (``model=dcgan``,
``loss=wgan_gp``, ``dataset=digits``, ``recipe=tuned``, from Hydra's runtime choices), the values
that distinguish runs (``steps`` is the planned number of G updates, also when
``trainer.max_epochs`` decides it), and ``monitor``, which says what ``hp/metric``
is and which way is better (e.g. ``cfid (lower is better)``). Only the metric
columns that apply to the run are declared (``ganrun.metrics.protocol.applicable_metrics``),
and none is logged before it has a value (no NaN placeholders); their values are the
end-of-run measurement (``ganrun.metrics.protocol.final_metrics``).

A TensorBoard run is named by what it trains and when it started
(``tensorboard_run_name``): ``RUN/tensorboard/model=gan,dataset=ring,seed=0@2026-12-03_10-45-57/``
for a single run; ``JOB/tensorboard/`` in a sweep, whose job folder (Hydra's override
string, one per job) already names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from ganrun.metrics.protocol import applicable_metrics, monitored_metric, planned_steps

# Config groups whose chosen option name is a hyperparameter column.
CHOICE_GROUPS = ("model", "loss", "dataset", "recipe", "experiment", "hparams_search")


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


def hyperparameters(cfg: DictConfig, datamodule) -> dict[str, Any]:
    """A flat, readable view of what distinguishes runs (for TensorBoard's HPARAMS tab)."""
    from ganrun.metrics.suite import METRICS, higher_is_better

    monitor = monitored_metric(cfg, datamodule) or ("modes_covered" if datamodule.is_mixture else None)
    if monitor in METRICS:
        monitor = f"{monitor} ({'higher' if higher_is_better(monitor) else 'lower'} is better)"
    flat: dict[str, Any] = dict(option_choices(cfg, datamodule))
    flat.update(
        {
            "monitor": monitor or "none",
            "seed": cfg.seed,
            "steps": planned_steps(cfg, datamodule),
            "n_critic": cfg.n_critic,
            "lr_g": cfg.optimizer.lr_g or cfg.optimizer.lr,
            "lr_d": cfg.optimizer.lr_d or cfg.optimizer.lr,
            "batch_size": cfg.dataset.batch_size,
            "z_dim": cfg.model.z_dim,
            "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        }
    )
    flat.update(trick_values(cfg))
    return flat


def trick_values(cfg: DictConfig) -> dict[str, Any]:
    """``tricks/<key>``: each trick's value in the terms this run builds (``term=NAME``, a
    recipe's ``terms.NAME`` or the ``tricks.*`` alias alike); "none" when its term is off."""
    from ganrun.config.build import TRICK_ALIASES, term_nodes

    nodes = term_nodes(cfg)
    values = {}
    for key, (name, field) in TRICK_ALIASES.items():
        node = nodes.get(name)
        value = None if node is None else (True if field is None else node.get(field))
        values[f"tricks/{key}"] = "none" if value is None else value
    return values


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


# Overrides that change where, how long, how loudly or on what hardware a run trains, not
# what it trains: left out of TensorBoard run names, so a run resumed with a new ``steps=``
# keeps its name and its curves.
NOT_IN_RUN_NAME = (
    "hydra.",
    "run_dir",
    "ckpt_path",
    "launcher",
    "hparams_search",
    "steps",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.enable_",
    "trainer.log_every_n_steps",
    "threads",
    "accelerator",
    "fast.",
    "callbacks",
    "logger",
    "eval.",
)
RUN_NAME_GROUPS = ("experiment", "model", "dataset")  # named by their chosen option, defaults included
RUN_NAME_TIME = "%Y-%m-%d_%H-%M-%S"
RUN_NAME_LENGTH = 150  # of the description; the time follows it


def tensorboard_run_name(run_dir: Path, cfg: Optional[DictConfig] = None) -> str:
    """The TensorBoard logger's version folder below ``RUN/tensorboard/`` (TensorBoard names a
    run by the folder of its event files).

    A single run: ``<description>@<start time>``, e.g. ``model=gan,dataset=ring,seed=0@2026-12-03_10-45-57``
    (``run_description``). A resumed run continues the event folder whose name still
    describes it, so its curves go on; when the resume changed something the name shows
    (e.g. ``optimizer.lr=``), or a run folder named by its overrides has another ``steps=``,
    the resumed part is a new TensorBoard run under its own name, and the old one is kept
    as it was. "" (events in ``tensorboard/`` itself) in a sweep, whose job folders are
    named by their overrides, and outside Hydra."""
    root = Path(run_dir) / "tensorboard"
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return _most_recent(_event_folders(root)) or ""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return ""
    overrides = [str(item) for item in hydra_cfg.overrides.task]
    description = run_description(overrides, hydra_choices(), None if cfg is None else cfg.get("seed"))
    continued = _continued_folder(root, description, _override_items(overrides))
    if continued is not None:
        return continued
    from datetime import datetime

    return f"{description}@{datetime.now().strftime(RUN_NAME_TIME)}"


def run_description(overrides: list[str], choices: dict[str, str], seed: Any = None) -> str:
    """``model=gan,dataset=ring,seed=0,loss=wgan_gp,optimizer.lr=0.0001``: the chosen experiment,
    model and dataset, the seed, then every other override that changes what is trained
    (groups first, then dotted keys, each sorted, so the order they were typed in does not matter)."""
    items = _override_items(overrides)
    if seed is None and "seed" in items:
        seed = items["seed"]
    named = [f"{group}={choices[group]}" for group in RUN_NAME_GROUPS if group in choices]
    named += [] if seed is None else [f"seed={seed}"]
    others = [key for key in items if key not in (*RUN_NAME_GROUPS, "seed") and not key.startswith(NOT_IN_RUN_NAME)]
    named += [f"{key}={items[key]}" for key in sorted(others, key=lambda key: ("." in key, key))]
    return ",".join(named).replace("/", "_")[:RUN_NAME_LENGTH]


def _override_items(overrides: list[str]) -> dict[str, str]:
    """``{"model": "gan", "optimizer.lr": "1e-4"}`` from ``["model=gan", "+optimizer.lr=1e-4"]``."""
    items = {}
    for item in overrides:
        key, _, value = item.partition("=")
        items[key.lstrip("+~")] = value
    return items


def _event_folders(root: Path) -> list[tuple[str, Path]]:
    """(version, folder) of every folder below ``root`` that holds event files ("" for ``root`` itself)."""
    if not root.is_dir():
        return []
    folders = [("", root)] if any(root.glob("events.*")) else []
    folders += [(path.name, path) for path in sorted(root.iterdir()) if path.is_dir() and any(path.glob("events.*"))]
    return folders


def _continued_folder(root: Path, description: str, items: dict[str, str]) -> Optional[str]:
    """The version a resumed run continues: the most recently written event folder whose name
    describes this run. A ``<description>@<time>`` folder must match the description exactly;
    any other name (the run folder's own, for events in ``tensorboard/`` itself) must not set
    a key to a value other than this run's (``steps=200`` in a run resumed with ``steps=400``)."""
    matching = []
    for version, folder in _event_folders(root):
        name = version or root.parent.name
        if "@" in version:
            agrees = version.rpartition("@")[0] == description
        else:
            named = _override_items([part for part in name.split(",") if "=" in part])
            agrees = all(items.get(key, value).replace("/", "_") == value for key, value in named.items())
        if agrees:
            matching.append((version, folder))
    return _most_recent(matching)


def _most_recent(folders: list[tuple[str, Path]]) -> Optional[str]:
    """The version of the folder whose event files were written last; None for no folder."""
    if not folders:
        return None
    return max((max(path.stat().st_mtime for path in folder.glob("events.*")), version) for version, folder in folders)[
        1
    ]
