"""Old path of ``ganrun.modules.lapgan`` (configs saved in older checkpoints name it)."""
from ganrun.modules.lapgan import LAPGANModule  # noqa: F401
