"""The typed schema of ganrun's common keys, checked before anything runs or is written.

Each rule names a key, what it must be, and the words for "what is allowed"; a bad
value is refused with one line such as ``dataset.batch_size=abc is not valid; it must
be a positive integer``. Keys a config does not have (e.g. ``dataset.image_size`` on
2-D data) are skipped. Model-specific constraints live with the model (e.g. the DCGAN
sizes in ``ganrun/models/dcgan.py``). Imports no torch: ``ganrun`` runs it on the
composed config before Hydra creates or touches the run directory.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganrun.errors import ConfigError


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value == value  # not NaN


Check = Callable[[Any], bool]
POSITIVE_INT: tuple[Check, str] = (lambda v: _integer(v) and v >= 1, "it must be a positive integer")
NON_NEGATIVE_INT: tuple[Check, str] = (lambda v: _integer(v) and v >= 0, "it must be an integer >= 0")
POSITIVE_NUMBER: tuple[Check, str] = (lambda v: _number(v) and 0 < v < float("inf"), "it must be a positive number")
NON_NEGATIVE_NUMBER: tuple[Check, str] = (lambda v: _number(v) and 0 <= v < float("inf"), "it must be a number >= 0")


def optional(rule: tuple[Check, str]) -> tuple[Check, str]:
    check, allowed = rule
    return (lambda v: v is None or check(v), f"{allowed.replace('it must be', 'it must be null or')}")


# key -> (check, what is allowed). Order: the most common mistakes first.
SCHEMA: dict[str, tuple[Check, str]] = {
    "seed": (lambda v: _integer(v) and 0 <= v < 2**32, "it must be an integer from 0 to 4294967295"),
    "steps": (lambda v: v is None or (_integer(v) and v >= 1), "it must be a positive integer (G updates) or null"),
    "n_critic": POSITIVE_INT,
    "threads": (lambda v: v == "auto" or (_integer(v) and v >= 1), "choose auto or a positive integer"),
    "ckpt_path": (
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "it must be a checkpoint path, last, or null",
    ),
    "optimizer.lr": POSITIVE_NUMBER,
    "optimizer.lr_g": optional(POSITIVE_NUMBER),
    "optimizer.lr_d": optional(POSITIVE_NUMBER),
    "model.z_dim": POSITIVE_INT,
    "model.image_size": optional(POSITIVE_INT),
    "dataset.batch_size": POSITIVE_INT,
    "dataset.image_size": optional(POSITIVE_INT),
    "loss.gradient_penalty": NON_NEGATIVE_NUMBER,
    "loss.weight_clip": optional(POSITIVE_NUMBER),
    # tricks.*: null leaves the trick's term as configured
    "tricks.label_smoothing": (lambda v: v is None or (_number(v) and 0 <= v < 1), "it must be a number in [0, 1)"),
    "tricks.instance_noise_std": optional(NON_NEGATIVE_NUMBER),
    "tricks.instance_noise_anneal_steps": optional(NON_NEGATIVE_INT),
    "tricks.ema_decay": (
        lambda v: v is None or (_number(v) and 0 < v < 1),
        "it must be null or a number in (0, 1), e.g. 0.999",
    ),
    "tricks.grad_clip_norm": optional(POSITIVE_NUMBER),
    "tricks.minibatch_discrimination": (lambda v: v is None or isinstance(v, bool), "choose true, false or null"),
    "tricks.mine_weight": optional(NON_NEGATIVE_NUMBER),
    "tricks.mine_anneal_steps": (
        optional(NON_NEGATIVE_INT)[0],
        "it must be a number of G updates >= 0 (0: a constant MINE weight)",
    ),
    "tricks.mine_target": (
        lambda v: v in (None, "code", "noise"),
        "choose code (I(G([eps, c]); c)) or noise (I(z; G(z)))",
    ),
    "tricks.mine_code_dims": optional(POSITIVE_INT),
    "trainer.max_epochs": (
        lambda v: _integer(v) and (v >= 1 or v == -1),
        "it must be a positive integer (or -1: no limit)",
    ),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "callbacks.divergence.action": (lambda v: v in ("stop", "warn"), "choose stop or warn"),
    "callbacks.divergence.patience": POSITIVE_INT,
    "eval.num_samples": (lambda v: _integer(v) and v >= 2, "it must be an integer >= 2"),
    "eval.judge_size": (lambda v: _integer(v) and v >= 8, "it must be an integer >= 8 (pixels)"),
    "callbacks.evaluation.num_samples": (lambda v: _integer(v) and v >= 2, "it must be an integer >= 2"),
}
# Every callback's period, e.g. callbacks.samples.every_n_steps (0: only at the end).
CALLBACK_KEYS: dict[str, tuple[Check, str]] = {"every_n_steps": NON_NEGATIVE_INT}


FAST_SWITCHES = ("data_on_device", "channels_last", "compile", "fused_optimizers")


def check_fast(fast) -> None:
    """``fast.*``: one-line error for an unknown switch or a value other than auto/true/false."""
    for name, value in (fast or {}).items():
        if name not in FAST_SWITCHES:
            raise ConfigError(f"fast.{name} is not a fast-path switch; valid switches: {', '.join(FAST_SWITCHES)}")
        if not (isinstance(value, bool) or value == "auto"):
            raise ConfigError(f"fast.{name}={value} is not valid; choose auto, true or false")


def check_config(cfg: DictConfig, typed: Optional[dict[str, str]] = None) -> None:
    """Raise ConfigError (one line) for the first key whose value breaks the schema.

    ``typed``: the command line's ``key -> value`` as typed, so that the error echoes
    ``steps=1e3`` rather than the parsed ``1000.0``."""
    check_fast(cfg.get("fast"))
    for key, (check, allowed) in SCHEMA.items():
        _check_key(cfg, key, check, allowed, typed)
    for name, node in (cfg.get("callbacks") or {}).items():
        for key, (check, allowed) in CALLBACK_KEYS.items():
            if isinstance(node, DictConfig) and key in node:
                _check_key(cfg, f"callbacks.{name}.{key}", check, allowed, typed)
    scheduler = cfg.get("scheduler")
    if scheduler and "total_iters" in scheduler and scheduler.total_iters is None:
        raise ConfigError(
            "scheduler.total_iters=None: this learning-rate schedule needs the run's length; "
            "set steps=N (total_iters follows it) or scheduler.total_iters=N"
        )


def _check_key(cfg: DictConfig, key: str, check: Check, allowed: str, typed: Optional[dict[str, str]] = None) -> None:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
    except OmegaConfBaseException as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{key} cannot be read ({first_line}); {allowed}") from None
    if value is _ABSENT:
        return
    if isinstance(value, (DictConfig,)) or OmegaConf.is_config(value) or not check(value):
        shown = (typed or {}).get(key, _show(value))
        raise ConfigError(f"{key}={shown} is not valid; {allowed}")


_ABSENT = object()


def _show(value: Any) -> str:
    if OmegaConf.is_config(value):
        return str(OmegaConf.to_container(value))
    return "null" if value is None else str(value)


# A constructor parameter's annotation (a string: ganrun's modules use postponed annotations)
# -> (check, what is allowed), for the plain scalar types a config value can break.
_SCALAR_ANNOTATIONS: dict[str, tuple[Check, str]] = {
    "float": (_number, "it must be a number"),
    "int": (_integer, "it must be an integer"),
    "bool": (lambda v: isinstance(v, bool), "choose true or false"),
}


def _scalar_rule(annotation: Any) -> Optional[tuple[Check, str]]:
    """The rule for an annotation such as ``float``, ``int``, ``Optional[float]`` or
    ``float | None``; None for anything else (lists, modules, callables: left to the class)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = text.replace(" ", "")
    nullable = False
    for wrapper in ("Optional[", "typing.Optional["):
        if text.startswith(wrapper) and text.endswith("]"):
            text, nullable = text[len(wrapper) : -1], True
    if text.endswith("|None"):
        text, nullable = text[: -len("|None")], True
    rule = _SCALAR_ANNOTATIONS.get(text)
    if rule is None or not nullable:
        return rule
    return optional(rule)


def check_arguments(node: DictConfig, target: Callable) -> None:
    """Refuse (one line) a value in a ``_target_`` node that its class's constructor
    declares as a number, an integer or a bool but that is not one, e.g.
    ``model.module.q_shift=abc is not valid; it must be a number``. The class's own
    signature is the schema, so a new model's keys are checked without a rule here."""
    import inspect

    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    root = node._get_root()
    for name in node.keys():
        if not isinstance(name, str) or name.startswith("_") or name not in parameters:
            continue
        rule = _scalar_rule(parameters[name].annotation)
        if rule is not None:
            _check_key(root, node._get_full_key(name), *rule)
