"""Lightning callbacks: sample grids, the 2-D landscape, the timelapse GIF, checkpoints of the run's state, metrics, divergence guard, collapse alarm."""

from ganrun.callbacks.checkpoint import LastCheckpoint
from ganrun.callbacks.collapse import CollapseAlarm
from ganrun.callbacks.divergence import DivergenceGuard
from ganrun.callbacks.evaluation import Evaluation
from ganrun.callbacks.landscape import Landscape
from ganrun.callbacks.samples import SampleGrid
from ganrun.callbacks.timelapse import Timelapse

__all__ = ["CollapseAlarm", "DivergenceGuard", "Evaluation", "Landscape", "LastCheckpoint", "SampleGrid", "Timelapse"]
