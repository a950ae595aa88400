"""Lightning callbacks: fixed-noise sample grids, checkpoints of the run's state, divergence guard."""
from ganrun.callbacks.checkpoint import LastCheckpoint
from ganrun.callbacks.divergence import DivergenceGuard
from ganrun.callbacks.samples import SampleGrid

__all__ = ["DivergenceGuard", "LastCheckpoint", "SampleGrid"]
