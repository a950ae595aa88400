"""Reading ganrun checkpoints with one-line errors, and finding the one to resume from.

``load_checkpoint(path)`` is the single gate every command goes through
(``ganrun ckpt_path=``, ``ganrun-sample``, ``ganrun-eval``): a missing, truncated or
foreign file is refused with a ``FileNotFoundError`` / ``ConfigError`` naming it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Optional

from ganrun.errors import ConfigError

# What ganrun.training.module.GANModule.on_save_checkpoint writes, besides Lightning's own keys.
REQUIRED_KEYS = ("state_dict", "ganrun")
RUN_INFO_KEYS = ("config", "data_shape", "num_classes", "is_image")


def load_checkpoint(path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (on the CPU), or a one-line error saying what is wrong."""
    import torch

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"checkpoint {path} is a directory; give a .ckpt file (e.g. {path / 'checkpoints' / 'last.ckpt'})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # weights_only: tensors and plain containers only. A pickle that would import
        # or call anything else (a shared .ckpt that runs code) is refused, never run.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Refused because it names a class or function to import (what a code-running pickle
        # needs); any other unpickling failure is a damaged or foreign file.
        culprit = re.search(r"(?:global|GLOBAL)[:\s]+([\w.]+)", str(error))
        if "Weights only load failed" not in str(error) or culprit is None:
            raise _unreadable(path, error) from None
        raise ConfigError(
            f"checkpoint {path} holds objects other than tensors and plain data ({culprit.group(1)}); refused: "
            "loading it could run code (ganrun checkpoints never need that)"
        ) from None
    except Exception as error:
        raise _unreadable(path, error) from None
    if not isinstance(checkpoint, dict) or "ganrun" not in checkpoint:
        raise ConfigError(f"checkpoint {path} was not written by ganrun (no 'ganrun' entry)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    missing += [f"ganrun.{key}" for key in RUN_INFO_KEYS if key not in (checkpoint["ganrun"] or {})]
    if missing:
        raise ConfigError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    checkpoint["ganrun"]["config"] = renamed(checkpoint["ganrun"]["config"])
    return checkpoint


# Where the classes a saved config names (``_target_``) live now, for configs saved under
# older module paths: old module prefix -> current one. Applied at load time, so old
# checkpoints rebuild their module, networks and terms without alias modules.
MOVED_MODULES = {
    "ganrun.module": "ganrun.training.module",
    "ganrun.infogan": "ganrun.training.infogan",
    "ganrun.lapgan": "ganrun.training.lapgan",
    "ganrun.modules.gan": "ganrun.training.module",
    "ganrun.modules.infogan": "ganrun.training.infogan",
    "ganrun.modules.lapgan": "ganrun.training.lapgan",
    "ganrun.modules.msggan": "ganrun.training.msggan",
    "ganrun.modules.ema": "ganrun.training.ema",
    "ganrun.latent": "ganrun.training.latent",
    "ganrun.losses": "ganrun.objectives.losses",
    "ganrun.terms": "ganrun.objectives.terms",
    "ganrun.mine": "ganrun.objectives.mine",
    "ganrun.distributed": "ganrun.runtime.distributed",
    "ganrun.fast": "ganrun.runtime.fast",
    "ganrun.slurm": "ganrun.runtime.slurm",
}


def renamed(node):
    """``node`` (a saved config) with every ``_target_`` under an old module path rewritten."""
    if isinstance(node, dict):
        return {key: _renamed_target(value) if key == "_target_" else renamed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [renamed(value) for value in node]
    return node


def _renamed_target(target):
    if not isinstance(target, str):
        return target
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def _unreadable(path: Path, error: Exception) -> ConfigError:
    size = path.stat().st_size
    return ConfigError(
        f"checkpoint {path} cannot be read ({type(error).__name__}, {size} bytes): truncated or not a checkpoint"
    )


def resolve_ckpt_path(ckpt_path: Optional[str], run_dir) -> Optional[str]:
    """``ckpt_path=last`` -> ``RUN_DIR/checkpoints/last.ckpt`` if it exists, else None
    (nothing to resume yet: the same command starts a run and continues it after a
    preemption). Any other value is returned as given."""
    if ckpt_path != "last":
        return None if ckpt_path is None else str(Path(ckpt_path).expanduser())
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def run_dir_of(ckpt_path) -> Optional[Path]:
    """The run directory holding ``RUN/checkpoints/NAME.ckpt`` (a folder with ``.hydra/``), or None."""
    path = Path(ckpt_path).expanduser().resolve()
    run_dir = path.parent.parent
    if path.parent.name == "checkpoints" and (run_dir / ".hydra").is_dir():
        return run_dir
    return None


def check_resumable(checkpoint: dict, module, ckpt_path) -> None:
    """Refuse (one line) a checkpoint whose networks do not fit this run's, naming the
    config keys that differ, instead of Lightning's multi-line state_dict error."""
    problem = network_mismatch(checkpoint, module)
    if problem is None:
        return
    differences = config_differences(checkpoint["ganrun"]["config"], module.run_config.get("config", {}))
    hint = (
        f"it was trained with {', '.join(differences)}"
        if differences
        else "resume with the overrides it was trained with"
    )
    raise ConfigError(f"ckpt_path={ckpt_path} does not fit this run's networks ({problem}); {hint}")


def network_mismatch(checkpoint: dict, module) -> Optional[str]:
    """The first parameter or buffer of ``module`` that the checkpoint lacks or holds with
    another shape (or one the checkpoint has in excess), in words; None when they fit."""
    saved = module.terms.numbered_to_named(checkpoint["state_dict"])
    current = module.state_dict()
    for name, tensor in current.items():
        if name not in saved:
            return f"{name} is missing from the checkpoint"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return f"{name} has shape {tuple(saved[name].shape)} there, {tuple(tensor.shape)} here"
    extra = sorted(set(saved) - set(current))
    return f"the checkpoint has {extra[0]}, this run has not" if extra else None


def stored_overrides(checkpoint: dict, ckpt_path) -> Optional[list[str]]:
    """The command-line overrides the checkpoint's run was started with: stored in the
    checkpoint (``checkpoint["ganrun"]["overrides"]``), or for checkpoints written before
    they were, its run directory's ``.hydra/overrides.yaml``; None when neither is known."""
    overrides = (checkpoint.get("ganrun") or {}).get("overrides")
    if overrides is None:
        run_dir = run_dir_of(ckpt_path)
        recorded = run_dir / ".hydra" / "overrides.yaml" if run_dir is not None else None
        if recorded is None or not recorded.is_file():
            return None
        from omegaconf import OmegaConf

        overrides = OmegaConf.to_container(OmegaConf.load(recorded))
    return [str(item) for item in overrides] + compatibility_overrides(checkpoint)


def compatibility_overrides(checkpoint: dict) -> list[str]:
    """What a run trained before a default changed needs to be rebuilt as it was trained:
    MINE (``tricks.mine_weight`` > 0) once estimated I(z; G(z)) over all of G's input, and
    its checkpoints' configs have no ``tricks.mine_target``."""
    config = (checkpoint.get("ganrun") or {}).get("config") or {}
    tricks = config.get("tricks") or {}
    if (tricks.get("mine_weight") or 0) > 0 and "mine_target" not in tricks:
        return ["tricks.mine_target=noise"]
    return []


IGNORED_IN_DIFF = ("run_dir", "ckpt_path", "steps", "trainer", "callbacks", "logger", "hydra")


def config_differences(saved: dict, current: dict, limit: int = 4) -> list[str]:
    """``key=saved_value (now current_value)`` for keys that differ, model and data first."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    keys = [
        k
        for k in flat_saved.keys() | flat_current.keys()
        if not k.startswith(IGNORED_IN_DIFF) and not k.endswith("_target_")
    ]
    keys.sort(key=lambda k: (not k.startswith(("model.", "dataset.", "loss.")), k))
    out = []
    for key in keys:
        a, b = flat_saved.get(key, "<absent>"), flat_current.get(key, "<absent>")
        if str(a) != str(b):
            out.append(f"{key}={a} (now {b})")
    return out[:limit]


def _flatten(node, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
