"""Lightning callbacks: fixed-noise sample grids, checkpoints of the run's state, metrics."""
from ganrun.callbacks.checkpoint import LastCheckpoint
from ganrun.callbacks.evaluation import Evaluation
from ganrun.callbacks.samples import SampleGrid

__all__ = ["Evaluation", "LastCheckpoint", "SampleGrid"]
