"""Lightning callbacks: fixed-noise sample grids, checkpoints of the run's state."""
from ganrun.callbacks.checkpoint import LastCheckpoint
from ganrun.callbacks.samples import SampleGrid

__all__ = ["LastCheckpoint", "SampleGrid"]
