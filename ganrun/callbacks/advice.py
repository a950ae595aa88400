"""What a warning advises: a diagnosis, and only overrides that apply to this run.

A warning about G's samples (the collapse alarm's, the final evaluation's dropped
classes) ends with ``diagnosis``:

- ``undertrained: train longer (steps=N)`` for a G that has had few updates: fewer than
  the evaluation protocol's minimum (100), or D far ahead of it early in the run (mean
  D(x) above 0.99 and D(G(z)) below 0.01, the divergence guard's thresholds, before
  1,000 G updates). Collapse is not the word for a G that has not been trained yet.
- else the problem (e.g. ``mode collapse``) and ``try A, B``, where each suggested
  override is checked as the run itself was: the run's command line with the override
  is composed (``ganrun.config.compose``), passes the schema (``ganrun.config.checks``)
  and builds (``ganrun.config.build``: the networks' and terms' own refusals, such as a
  gradient penalty on MSG-GAN's discriminator). An override that is refused, or already
  in effect (the composed config does not change, or ``Suggestion.in_effect`` says so),
  is left out; so is every override when the run's command line is unknown (``train(cfg)``
  called without it).

Checking builds networks: it runs under ``torch.random.fork_rng``, so a warning in the
middle of a run does not change the training's random stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from ganrun.config.recipe import format_number
from ganrun.metrics.protocol import EVALUATION_MIN_G_UPDATES

# D far ahead: mean D(x) above / mean D(G(z)) below these (callbacks.divergence's defaults),
# before this many G updates.
D_REAL_ABOVE, D_FAKE_BELOW = 0.99, 0.01
EARLY_G_UPDATES = 1000
# "train longer": this many times the G updates made, at least 10 x the protocol's minimum.
LONGER = 10


@dataclass(frozen=True)
class Suggestion:
    """One override to suggest; ``in_effect(cfg)`` says when the run already does what it asks
    in a way the composed config shows differently (e.g. MINE on at another weight)."""

    override: str
    in_effect: Optional[Callable[[DictConfig], bool]] = None


def mine_is_on(cfg: DictConfig) -> bool:
    """The run builds MINE's term (``term=mine``, a recipe's ``terms.mine``, ``tricks.mine_weight``)."""
    return "mine" in term_nodes(cfg)


def term_nodes(cfg: DictConfig) -> dict:
    from ganrun.config.build import term_nodes as nodes

    return nodes(cfg)


def collapse_suggestions(module) -> list[Suggestion]:
    """Overrides against mode collapse: a lower learning rate, instance noise, a longer run,
    losses that resist collapse."""
    lr = run_learning_rate(module)
    lower = [Suggestion(f"optimizer.lr={format_number(lr / 2)}")] if lr else []
    return lower + [
        Suggestion("tricks.instance_noise_std=0.1", in_effect=lambda cfg: "instance_noise" in term_nodes(cfg)),
        Suggestion(f"steps={longer_run(module.g_updates)}"),
        Suggestion("loss=ns"),
        Suggestion("loss=ls"),
        Suggestion("loss=wgan_gp"),
    ]


def dropped_modes_suggestions(module) -> list[Suggestion]:
    """Overrides against modes dropped on a 2-D mixture: MINE, a longer run, WGAN-GP."""
    return [
        Suggestion("tricks.mine_weight=0.5", in_effect=mine_is_on),
        Suggestion(f"steps={longer_run(module.g_updates)}"),
        Suggestion("loss=wgan_gp"),
    ]


def diagnosis(
    module, datamodule, problem: str, suggestions: list[Suggestion], min_g_updates: int = EVALUATION_MIN_G_UPDATES
) -> str:
    """``undertrained (why): train longer (steps=N)``, or ``problem; try A, B`` with the
    suggestions that apply to this run (``problem`` alone when none does)."""
    why = undertrained(module, min_g_updates)
    if why is not None:
        return f"undertrained ({why}): train longer (steps={longer_run(module.g_updates, min_g_updates)})"
    valid = applicable(module, datamodule, suggestions)
    return f"{problem}; try {', '.join(valid)}" if valid else problem


def undertrained(module, min_g_updates: int = EVALUATION_MIN_G_UPDATES) -> Optional[str]:
    """Why G counts as undertrained (a phrase), or None: fewer G updates than the evaluation
    protocol's minimum, or D far ahead of it before ``EARLY_G_UPDATES``."""
    step = module.g_updates
    if step < min_g_updates:
        return f"only {step} G updates"
    metrics = module.last_metrics
    if step >= EARLY_G_UPDATES or not module.objective.d_outputs_are_probabilities or "d/fake" not in metrics:
        return None
    d_real, d_fake = metrics["d/real"], metrics["d/fake"]
    if d_real > D_REAL_ABOVE and d_fake < D_FAKE_BELOW:
        return f"D far ahead after {step} G updates: D(x)={d_real:.4f}, D(G(z))={d_fake:.2g}"
    return None


def longer_run(g_updates: int, min_g_updates: int = EVALUATION_MIN_G_UPDATES) -> int:
    """``steps=`` for a longer run: ``LONGER`` x the G updates made (at least ``LONGER`` x the
    protocol's minimum), rounded up to two significant digits (1,470 -> 1,500)."""
    target = max(LONGER * g_updates, LONGER * min_g_updates)
    unit = 10 ** max(0, len(str(target)) - 2)
    return -(-target // unit) * unit


def applicable(module, datamodule, suggestions: list[Suggestion]) -> list[str]:
    """The overrides of ``suggestions`` that this run's checks accept and that change what it
    trains; [] when the run's command line is unknown."""
    import torch

    overrides = module.run_config.get("overrides")
    if overrides is None or not suggestions:
        return []
    with torch.random.fork_rng(devices=[]):
        base = _composed(overrides)
        if base is None:
            return []
        return [s.override for s in suggestions if _accepted(overrides, s, base, datamodule)]


def _accepted(overrides: list[str], suggestion: Suggestion, base: DictConfig, datamodule) -> bool:
    from ganrun.config.resume import merge

    cfg = _composed(merge(overrides, [suggestion.override]))
    if cfg is None or _container(cfg) == _container(base):
        return False  # refused by composition, or already what the run trains
    if suggestion.in_effect is not None and suggestion.in_effect(base):
        return False
    return _builds(cfg, datamodule)


def _composed(overrides: list[str]) -> Optional[DictConfig]:
    from ganrun.config.compose import compose_or_explain

    try:
        return compose_or_explain(overrides)[0]
    except Exception:  # noqa: BLE001 - any refusal leaves the override out
        return None


def _builds(cfg: DictConfig, datamodule) -> bool:
    """The schema and the build accept ``cfg`` for this data (what preflight checks)."""
    from ganrun.config.build import build_module
    from ganrun.config.checks import check_config

    cfg = cfg.copy()
    cfg.run_dir = "<advice>"  # ${hydra:runtime.output_dir} outside a Hydra job; nothing is written
    try:
        check_config(cfg)
        build_module(cfg, datamodule)
    except Exception:  # noqa: BLE001 - a refusal (ConfigError) or any failure to build
        return False
    return True


def _container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def run_learning_rate(module) -> Optional[float]:
    """The run's ``optimizer.lr`` (from the config it was built with), or None."""
    config = module.run_config.get("config") or {}
    lr = (config.get("optimizer") or {}).get("lr")
    return float(lr) if isinstance(lr, (int, float)) and lr > 0 else None
