"""Old path of ``ganrun.modules.gan`` (configs saved in older checkpoints name it)."""
from ganrun.modules.gan import GANModule, OptimizerFactory, optimizer_factory  # noqa: F401
