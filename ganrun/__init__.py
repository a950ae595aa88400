"""ganrun: a config-driven experiment runner for generative adversarial networks.

From Python (docs/python-api.md): ``ganrun.run(overrides)`` trains what ``ganrun OVERRIDES``
trains, ``ganrun.load(ckpt)`` gives its generator, ready to sample, ``ganrun.evaluate(ckpt)``
its ``ganrun-eval`` metrics; bad input raises ``ganrun.ConfigError``. They load on first use
(``ganrun.api``), so ``import ganrun`` stays light: no torch, and ``ganrun --help`` stays quick.
"""

from pathlib import Path

from ganrun.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["run", "load", "evaluate", "RunResult", "LoadedGenerator", "ConfigError", "config_dir"]
_API = ("run", "load", "evaluate", "RunResult", "LoadedGenerator")


def __getattr__(name: str):
    if name in _API:
        from ganrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'ganrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


def config_dir() -> str:
    """Absolute path of the Hydra config root.

    A wheel carries the YAML tree as ``ganrun/configs``; a source checkout (and an
    editable install) keeps it at the repository's top-level ``configs/``.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ganrun's configs/ not found next to {package}")
