"""Lightning callbacks: sample grids, checkpoints of the run's state, metrics, divergence guard, collapse alarm."""
from ganrun.callbacks.checkpoint import LastCheckpoint
from ganrun.callbacks.collapse import CollapseAlarm
from ganrun.callbacks.divergence import DivergenceGuard
from ganrun.callbacks.evaluation import Evaluation
from ganrun.callbacks.samples import SampleGrid

__all__ = ["CollapseAlarm", "DivergenceGuard", "Evaluation", "LastCheckpoint", "SampleGrid"]
