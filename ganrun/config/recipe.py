"""What a dataset recipe adds to a paper's settings: computed, for the run's first lines.

``recipe=tuned`` (the default) loads, after the model and its loss, the settings ganrun
has for that model or loss on the dataset: ``configs/model_dataset/<model>_<dataset>.yaml``
and ``configs/loss_dataset/<loss>_<dataset>.yaml`` (``configs/recipe/extras/tuned.yaml``);
``recipe=paper`` leaves them out. ``recipe_line`` composes the run's command line twice,
as given and with ``recipe=paper``, and names every setting that differs, e.g.::

    ganrun: recipe gan_ring adds: model.z_dim=2, ..., optimizer.lr=1e-3, steps=12000,
    scheduler LinearLR(start_factor=1, end_factor=0, total_iters=12000),
    terms.mine (weight 1 -> 0 over 12000 G updates); recipe=paper trains without them

A key the command line sets has the same value in both compositions (the command line
wins over the recipe), so it is never listed. Terms are shown as the run builds them
(``tricks.*`` aliases applied): a recipe's ``terms.mine`` switched off by
``tricks.mine_weight=0`` is not listed.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

RECIPE_KINDS = ("model_dataset", "loss_dataset")  # the config groups a recipe loads, in order
PAPER = "recipe=paper"
MAX_RETRIES = 8  # command-line keys that only exist with the recipe, left out of the paper composition


def announce(overrides: Optional[list[str]]) -> None:
    """Print ``recipe_line`` for the run's command line (nothing when it is unknown, e.g.
    ``train(cfg)`` called directly, or when no recipe applies)."""
    if overrides is None:
        return
    try:
        line = recipe_line(overrides)
    except Exception as error:  # noqa: BLE001 - the run goes on; the line is information
        warnings.warn(f"could not list the settings the recipe adds: {error}")
        return
    if line:
        print(line, flush=True)


def recipe_line(overrides: list[str]) -> Optional[str]:
    """``ganrun: recipe NAME adds: ...`` for a run composed from ``overrides``, or None when no
    recipe file applies (or the command line chose ``recipe=paper``)."""
    from ganrun.config.compose import compose_or_explain

    cfg, choices = compose_or_explain(list(overrides))
    files = recipe_files(choices)
    if not files:
        return None
    paper, dropped = _compose_paper(overrides)
    additions = differences(cfg, paper, skipped=dropped)
    if not additions:
        return None
    names = " + ".join(dict.fromkeys(name for _, name in files))
    return f"ganrun: recipe {names} adds: {', '.join(additions)}; recipe=paper trains without them"


def recipe_files(choices: dict[str, str]) -> list[tuple[str, str]]:
    """(group, option) of the recipe files this composition loaded, e.g. [("model_dataset", "gan_ring")]."""
    from ganrun import config_dir

    if choices.get("recipe") == "paper":
        return []
    root = Path(config_dir())
    return [
        (kind, choices[kind])
        for kind in RECIPE_KINDS
        if choices.get(kind) and (root / kind / f"{choices[kind]}.yaml").is_file()
    ]


def _compose_paper(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The run's config with ``recipe=paper``, and the command-line keys left out because they
    only exist with the recipe (e.g. ``terms.mine.weight=0.3`` on a recipe that adds MINE)."""
    from ganrun.config.compose import compose_or_explain
    from ganrun.config.resume import key_of
    from ganrun.errors import ConfigError

    given = [item for item in overrides if key_of(item) != "recipe"]
    dropped: list[str] = []
    for _ in range(MAX_RETRIES):
        try:
            return compose_or_explain(given + [PAPER])[0], dropped
        except ConfigError as error:
            unknown = re.match(r"(\S+) is not a config key", str(error))
            if unknown is None or not any(key_of(item) == unknown[1] for item in given):
                raise
            dropped.append(unknown[1])
            given = [item for item in given if key_of(item) != unknown[1]]
    raise ConfigError(f"composing with {PAPER} failed after leaving out {', '.join(dropped)}")


def differences(tuned: DictConfig, paper: DictConfig, skipped: list[str] = ()) -> list[str]:
    """One phrase per setting ``tuned`` has and ``paper`` lacks or sets differently, in the
    order of ``tuned``'s keys; keys in ``skipped`` (and below them) are left out."""
    from ganrun.config.build import TRICK_ALIASES

    tuned, paper = _readable(tuned), _readable(paper)
    raw_tuned, raw_paper = (OmegaConf.to_container(c, resolve=False) for c in (tuned, paper))
    terms = term_differences(tuned, paper)
    phrases = []
    for key in _changed(raw_tuned, raw_paper):
        if any(key == skip or key.startswith(skip + ".") for skip in skipped):
            continue
        if key == "terms" or key.startswith("terms."):
            continue  # listed as the run builds them
        alias = TRICK_ALIASES.get(key.partition("tricks.")[2]) if key.startswith("tricks.") else None
        if alias is not None and alias[0] in terms:
            continue  # tricks.ema_decay=0.999 is terms.ema's decay, listed with the term
        phrases.append(describe(key, OmegaConf.select(tuned, key, default=None)))
    return phrases + [f"terms.{name} ({phrase})" for name, phrase in terms.items()]


def term_differences(tuned: DictConfig, paper: DictConfig) -> dict[str, str]:
    """{name: description} of each term the run builds that it would not build, or would
    build otherwise, with ``recipe=paper``."""
    from ganrun.config.build import term_nodes

    built, plain = term_nodes(tuned), term_nodes(paper)
    changed = {}
    for name, node in built.items():
        node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        other = plain.get(name)
        other = OmegaConf.to_container(other, resolve=True) if OmegaConf.is_config(other) else other
        if node != other:
            changed[name] = describe_term(node)
    return changed


def _readable(cfg: DictConfig) -> DictConfig:
    """A copy whose interpolations resolve outside a Hydra job (``run_dir`` is not compared)."""
    from omegaconf import open_dict

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.run_dir = "<run_dir>"
    return cfg


def _changed(tuned: Any, paper: Any, prefix: str = "") -> list[str]:
    """Dotted keys where ``tuned`` differs from ``paper``: the deepest that differ, except a
    node whose class (``_target_``) is new or another, which is one key."""
    if tuned == paper:
        return []
    if not isinstance(tuned, dict):
        return [prefix.rstrip(".")]
    paper = paper if isinstance(paper, dict) else {}
    if "_target_" in tuned and tuned.get("_target_") != paper.get("_target_"):
        return [prefix.rstrip(".")]
    keys = []
    for name, value in tuned.items():
        keys += _changed(value, paper.get(name, _ABSENT), f"{prefix}{name}.")
    return keys


_ABSENT = object()


def describe(key: str, value: Any) -> str:
    """``optimizer.lr=1e-3``; ``scheduler LinearLR(start_factor=1, end_factor=0, total_iters=12000)``."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict) and "_target_" in value:
        arguments = ", ".join(
            f"{name}={format_value(v)}" for name, v in value.items() if name not in ("_target_", "_partial_")
        )
        return f"{key} {str(value['_target_']).rsplit('.', 1)[-1]}({arguments})"
    return f"{key}={format_value(value)}"


def describe_term(node: dict) -> str:
    """``weight 1 -> 0 over 12000 G updates`` (annealed) or ``weight 0.5``, then its other fields."""
    weight, anneal = node.get("weight"), node.get("anneal_steps") or 0
    parts = []
    if weight is not None:
        parts.append(
            f"weight {format_value(weight)} → 0 over {anneal} G updates" if anneal else f"weight {format_value(weight)}"
        )
    parts += [
        f"{name}={format_value(v)}" for name, v in node.items() if name not in ("_target_", "weight", "anneal_steps")
    ]
    return ", ".join(parts) or str(node.get("_target_", "")).rsplit(".", 1)[-1]


def format_value(value: Any) -> str:
    """A value as it is typed on the command line: ``1e-3``, ``0.5``, ``12000``, ``false``, ``[128, 128]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{name}: {format_value(item)}" for name, item in value.items()) + "}"
    return str(value)


def format_number(value: float) -> str:
    """``1e-3``, ``2.5e-4``, ``0.05``, ``1``, ``12000``: short and exact to 3 digits."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) < 0.01 or abs(value) >= 1e6:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.4g}"
