"""ganrun: a config-driven experiment runner for generative adversarial networks."""
from pathlib import Path

__version__ = "0.1.0"


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
