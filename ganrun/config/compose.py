"""Composing ganrun's config from overrides, as Hydra will, with one-line errors.

``compose_or_explain`` turns Hydra's multi-line composition errors (unknown option,
unknown key, bad syntax) into one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import difflib
import re
from typing import Optional

from ganrun import config_dir
from ganrun.errors import ConfigError


def compose_or_explain(overrides: list[str], resume=None):
    """(the composed config, its group choices such as ``{"model": "dcgan"}``), or a
    ConfigError whose one line says what Hydra refused."""
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _compose(overrides, hydra=True)
    except (HydraException, OmegaConfBaseException) as error:
        problem = explain(error, overrides)
        if resume is not None and _composes(resume.given):
            problem = resume.refusal(problem, built=False)  # the command line clashes with the run's overrides
        raise ConfigError(problem) from None
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]  # ${hydra:...} cannot be resolved before Hydra runs
    return cfg, choices


def _composes(overrides: list[str]) -> bool:
    try:
        _compose(overrides)
        return True
    except Exception:
        return False


def compose_choices(overrides: list[str]) -> dict[str, str]:
    """The option chosen in each config group by ``overrides`` (``{"model": "dcgan", ...}``)."""
    return {k: v for k, v in _compose(overrides, hydra=True).hydra.runtime.choices.items() if v is not None}


def _compose(overrides: list[str], hydra: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running ganrun job: its Hydra, the same configs
        return compose("train", overrides=overrides, return_hydra_config=hydra)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="ganrun"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def explain(error: Exception, overrides: list[str]) -> str:
    text = str(error)
    missing = re.search(r"Could not find '(?P<group>[^']+)/(?P<option>[^']+)'", text)
    if missing:
        group, option = missing["group"], missing["option"]
        listing = text.split("Available options in", 1)[-1].split("Config search path", 1)[0]
        options = re.findall(r"^\t(\S+)$", listing, flags=re.MULTILINE)
        close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
        guess = f"; did you mean {group}={close[0]}?" if close else ""
        choices = f" (choose one of: {', '.join(options)})" if options else ""
        return f"{group}={option} is not a known {group} option{guess}{choices}"
    unknown = re.search(r"Could not override '(?P<key>[^']+)'", text)
    if unknown and "not in struct" in str(error.__cause__ or ""):
        key = unknown["key"]
        others = [item for item in overrides if item.partition("=")[0].lstrip("+") != key]
        guess = _closest_key(key, others)
        hint = f"did you mean {guess}? " if guess else ""
        return f"{key} is not a config key; {hint}(ganrun --cfg job lists every key; +{key}=VALUE adds a new one)"
    lines = [line.strip() for line in text.split("Config search path", 1)[0].splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _closest_key(key: str, overrides: list[str]) -> Optional[str]:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(_compose(overrides), resolve=False)
    except Exception:
        return None
    keys = list(_keys(cfg))
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    if close:
        return close[0]
    # A key given without its group (lr=1e-3 for optimizer.lr): match on the last path component.
    by_name: dict[str, list[str]] = {}
    for candidate in keys:
        by_name.setdefault(candidate.rsplit(".", 1)[-1], []).append(candidate)
    name = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=1, cutoff=0.8)
    return min(by_name[name[0]], key=len) if name else None


def _keys(node, prefix: str = ""):
    if isinstance(node, dict):
        for name, value in node.items():
            yield f"{prefix}{name}"
            yield from _keys(value, f"{prefix}{name}.")
