"""What every run prints when it ends, however it ends (completed, interrupted by a
signal, diverged, failed):

    ganrun: run completed
      G updates    200 of 200
      wall time    31 s
      cfid         12.41 at G update 200 (best; lower is better)
      best.ckpt    /.../checkpoints/best.ckpt
      last.ckpt    /.../checkpoints/last.ckpt
      samples      /.../samples/step_0000200.png
      run folder   /.../

The run folder is always the last line. ``RunSummary`` is a callback placed after
every other one, so the final evaluation, checkpoint and grid are written when it
prints; on an exception (divergence, a second Ctrl-C, a crash) it prints from
``on_exception``, before ``ganrun`` prints the one-line error. A run that stopped
before its evaluation (a signal, an exception) says so, and how to evaluate its
checkpoint::

      cfid         not evaluated: the run was interrupted at G update 147, before its evaluation; evaluate it with: ganrun-eval ckpt=/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

from ganrun.callbacks import Evaluation, LastCheckpoint, SampleGrid
from ganrun.errors import TrainingDiverged
from ganrun.metrics.protocol import shared_measurement, stopped_by_signal


@dataclass
class Outcome:
    """What the summary reports; every path is None when that file was not written."""

    status: str
    g_updates: int
    planned: Optional[int]
    wall_time_s: float
    run_dir: Path
    monitor: Optional[str] = None
    best: Optional[float] = None
    best_step: Optional[int] = None
    higher_is_better: bool = False
    evaluated_from: int = 100  # Evaluation.final_min_steps
    files: dict[str, Optional[Path]] = field(default_factory=dict)
    end_value: Optional[float] = None  # the monitor at the last G update, measured without an evaluation

    @property
    def stopped_early(self) -> Optional[str]:
        """How the run ended before its planned end (``was interrupted``, ``diverged``,
        ``failed``), or None for a completed run."""
        return STOPPED.get(self.status.split(" ", 1)[0])


STOPPED = {"interrupted": "was interrupted", "diverged": "diverged", "failed": "failed"}


def summary_lines(outcome: Outcome) -> list[str]:
    planned = f" of {outcome.planned}" if outcome.planned else ""
    lines = [
        f"ganrun: run {outcome.status}",
        f"  G updates    {outcome.g_updates}{planned}",
        f"  wall time    {format_duration(outcome.wall_time_s)}",
        f"  {metric_line(outcome)}",
    ]
    for name, path in outcome.files.items():
        lines.append(f"  {name:<12} {path if path is not None else 'not written'}")
    lines.append(f"  {'run folder':<12} {outcome.run_dir.resolve()}")
    return lines


def metric_line(outcome: Outcome) -> str:
    if outcome.monitor is None:
        return f"{'metric':<12} none (eval.monitor=null or callbacks.evaluation off)"
    if outcome.best is None and outcome.end_value is not None:  # e.g. a short run's mode count (collapse alarm)
        return (
            f"{outcome.monitor:<12} {outcome.end_value:.4g} at G update {outcome.g_updates} "
            f"(end of run; best.ckpt is kept from {outcome.evaluated_from} G updates on)"
        )
    if outcome.best is None or not math.isfinite(outcome.best):
        return f"{outcome.monitor:<12} {not_evaluated(outcome)}"
    direction = "higher" if outcome.higher_is_better else "lower"
    return f"{outcome.monitor:<12} {outcome.best:.4g} at G update {outcome.best_step} (best; {direction} is better)"


def not_evaluated(outcome: Outcome) -> str:
    """Why the monitored metric has no value: the run stopped before its evaluation (and how
    to evaluate its checkpoint), or it is shorter than the evaluation protocol's minimum."""
    long_enough = outcome.planned is None or outcome.planned >= outcome.evaluated_from
    if outcome.stopped_early is None or not long_enough:
        return f"not evaluated (runs are evaluated from {outcome.evaluated_from} G updates on)"
    stopped = f"not evaluated: the run {outcome.stopped_early} at G update {outcome.g_updates}, before its evaluation"
    checkpoint = outcome.files.get("last.ckpt")
    if checkpoint is None:
        return f"{stopped}; no checkpoint was written to evaluate"
    return f"{stopped}; evaluate it with: ganrun-eval {shlex.quote(f'ckpt={checkpoint}')}"


def parameter_counts(module) -> str:
    """``G (370 K parameters) and D (167 K parameters)``: Lightning's model summary in one line."""

    def count(network) -> str:
        n = sum(p.numel() for p in network.parameters())
        return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K" if n >= 1e3 else str(n)

    return f"G ({count(module.generator)} parameters) and D ({count(module.discriminator)} parameters)"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class RunSummary(pl.Callback):
    """Prints ``summary_lines`` on rank 0 at the end of training or on an exception."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)
        self.started = time.perf_counter()
        self._training = False
        self.printed: Optional[list[str]] = None

    def setup(self, trainer: pl.Trainer, module, stage: str) -> None:
        if trainer.is_global_zero:
            print(f"ganrun: training {parameter_counts(module)}", flush=True)

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        self._training = True

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        signalled = stopped_by_signal(trainer.callbacks)
        self._print(
            trainer, module, "interrupted (resume with the ckpt_path printed above)" if signalled else "completed"
        )

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        if not self._training:
            return  # refused before training started: the one-line error says it all
        if isinstance(exception, TrainingDiverged):
            status = "diverged (stopped by the divergence guard)"
        elif isinstance(exception, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = f"failed ({type(exception).__name__})"
        self._print(trainer, module, status)

    def _print(self, trainer: pl.Trainer, module, status: str) -> None:
        self._training = False
        if not trainer.is_global_zero:
            return
        self.printed = summary_lines(collect(trainer, module, status, self.run_dir, time.perf_counter() - self.started))
        print("\n".join(self.printed), flush=True)


def collect(trainer: pl.Trainer, module, status: str, run_dir: Path, wall_time_s: float) -> Outcome:
    """The outcome as the other callbacks left it: Evaluation's best, LastCheckpoint's and SampleGrid's files."""
    from ganrun.callbacks.progress import planned_g_updates

    outcome = Outcome(status, int(module.g_updates), planned_g_updates(trainer, module), wall_time_s, run_dir)
    outcome.files = {name: None for name in FILES if any(isinstance(cb, FILES[name]) for cb in trainer.callbacks)}
    for callback in trainer.callbacks:
        if isinstance(callback, Evaluation) and callback.every_n_steps:  # every_n_steps=0: evaluation off
            from ganrun.metrics.suite import higher_is_better

            outcome.monitor, outcome.best, outcome.best_step = callback.monitor, callback.best, callback.best_step
            outcome.higher_is_better = callback.monitor is not None and higher_is_better(callback.monitor)
            outcome.evaluated_from = min(callback.every_n_steps, callback.final_min_steps)
            outcome.files["best.ckpt"] = _existing(callback.path)
        elif isinstance(callback, LastCheckpoint):
            outcome.files["last.ckpt"] = _existing(callback.path)
        elif isinstance(callback, SampleGrid):
            grids = sorted(callback.dirpath.glob("step_*.png"))
            outcome.files["samples"] = grids[-1].resolve() if grids else None
    if outcome.monitor is not None and outcome.best is None:
        measured = shared_measurement(trainer.callbacks, outcome.g_updates, outcome.monitor)
        outcome.end_value = None if measured is None else float(measured[outcome.monitor])
    return outcome


FILES = {"best.ckpt": Evaluation, "last.ckpt": LastCheckpoint, "samples": SampleGrid}  # listed in this order


def _existing(path: Path) -> Optional[Path]:
    return path.resolve() if path.is_file() else None
