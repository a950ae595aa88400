"""Metrics during training, and ``checkpoints/best.ckpt`` kept by the chosen one.

Every ``every_n_steps`` G updates, and at the end of every run of at least
``final_min_steps`` G updates (100: so that short sweeps still compare a quality
number; shorter runs are not evaluated), the sampling generator (the EMA copy when
enabled) is evaluated with ``ganrun.metrics.suite.evaluate`` on ``num_samples``
samples. Values go to every logger as ``eval/<metric>``. When the ``monitor``
metric improves (for ``modes_covered``, a count that ties often, an equal count with a
higher ``high_quality_fraction`` counts too: ``suite.TIE_BREAKS``), the full training
state is written to ``best.ckpt`` (atomically,
beside ``last.ckpt``); its value becomes ``hp/metric`` for the HPARAMS tab and for
sweepers. The best value and step survive a resume (callback state in checkpoints).
When the final evaluation's judge finds classes G dropped (``classes_covered``
below the dataset's classes), the run prints one ``warning:`` line saying so, with a
diagnosis and advice that apply to the run (``ganrun.callbacks.advice``). The final
evaluation is the run's one end-of-run measurement (``ganrun.metrics.protocol``): the
collapse alarm's mode count and ``hp/modes_covered`` read it (``measure_at_end`` makes it
once, whichever asks first).

Under DDP every rank evaluates the same weights with the same seed; rank 0's
verdict on "improved" is broadcast so all ranks save together; only rank 0 logs.
Evaluation uses its own random streams: training's noise sequence is untouched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import pytorch_lightning as pl

from ganrun.callbacks import advice
from ganrun.callbacks.checkpoint import save_atomically, weights_are_finite
from ganrun.callbacks.periodic import GUpdateSchedule
from ganrun.errors import ConfigError
from ganrun.metrics.protocol import Measures, stopped_by_signal


class Evaluation(pl.Callback, Measures):
    def __init__(
        self,
        dirpath: str,
        every_n_steps: Optional[int] = 500,
        num_samples: int = 2000,
        metrics: Union[str, Sequence[str], None] = "auto",
        monitor: Optional[str] = "auto",
        seed: int = 0,
        judge_size: int = 32,
        filename: str = "best.ckpt",
        final_min_steps: int = 100,
    ) -> None:
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 0):
            raise ConfigError(
                f"callbacks.evaluation.every_n_steps={every_n_steps} is not valid; use a positive integer, or 0/null for off"
            )
        if not isinstance(num_samples, int) or num_samples < 2:
            raise ConfigError(f"callbacks.evaluation.num_samples={num_samples} is not valid; use an integer >= 2")
        if not isinstance(final_min_steps, int) or final_min_steps < 1:
            raise ConfigError(
                f"callbacks.evaluation.final_min_steps={final_min_steps} is not valid; use a positive integer"
            )
        self.path = Path(dirpath) / filename
        self.schedule = GUpdateSchedule(every_n_steps)  # records the G update of the last evaluation
        self.final_min_steps = final_min_steps
        self.num_samples, self.seed, self.judge_size = num_samples, seed, judge_size
        self.metrics_spec, self.monitor_spec = metrics, monitor
        self.metrics: list[str] = []
        self.monitor: Optional[str] = None
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self.best_tie: Optional[float] = None  # the tie-break metric's value at best (suite.TIE_BREAKS)
        self.last: dict[str, float] = {}

    @property
    def every_n_steps(self) -> int:
        """G updates between evaluations (0: off, also at the end)."""
        return self.schedule.every_n_steps

    @property
    def _evaluated_at(self) -> int:
        """G update of the last evaluation (-1: none yet); setting it records one there."""
        return self.schedule.last_step

    @_evaluated_at.setter
    def _evaluated_at(self, step: int) -> None:
        self.schedule.acted(step)

    # -------------------------------------------------------------- set-up
    def setup(self, trainer: pl.Trainer, module, stage: str) -> None:
        """Resolve ``auto`` and check the names before training starts (one-line errors)."""
        from ganrun.metrics import suite

        datamodule = trainer.datamodule
        self.metrics = suite.resolve(self.metrics_spec, datamodule, module.num_classes, module.latent)
        monitor = suite.default_monitor(datamodule) if self.monitor_spec == "auto" else self.monitor_spec
        if monitor is not None and monitor not in self.metrics:
            if monitor == suite.default_monitor(datamodule):
                self.metrics.append(monitor)
            else:
                raise ConfigError(
                    f"eval.monitor={monitor} is not among the evaluated metrics ({', '.join(self.metrics) or 'none'}); "
                    "add it to eval.metrics or choose one of them"
                )
        self.monitor = monitor

    # ---------------------------------------------------------------- hooks
    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.schedule.due(module.g_updates):
            self.evaluate(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if stopped_by_signal(trainer.callbacks):
            return  # stopped by SIGTERM/Ctrl-C: exit quickly (SLURM's grace period is short)
        if self.measure_at_end(trainer, module) is not None and trainer.is_global_zero:
            self._warn_dropped_classes(trainer.datamodule, module)

    # ------------------------------------- the end-of-run measurement (ganrun.metrics.protocol)
    def evaluates_at_end(self, step: int) -> bool:
        """Whether a run ending at G update ``step`` gets a final evaluation (at least
        ``final_min_steps`` G updates, or one period, and evaluation on)."""
        from ganrun.metrics.protocol import evaluates_at_end

        return evaluates_at_end({"every_n_steps": self.every_n_steps, "final_min_steps": self.final_min_steps}, step)

    def measured_at(self, g_updates: int) -> Optional[dict[str, float]]:
        """The metrics of the evaluation at G update ``g_updates``; None when there was none."""
        return None if self.schedule.pending(g_updates) else self.last

    def measure_at_end(self, trainer: pl.Trainer, module) -> Optional[dict[str, float]]:
        """The final evaluation, made once (the collapse alarm asks for it first); None when this
        run is not evaluated at its end or was stopped by a signal."""
        step = module.g_updates
        if self.schedule.pending(step) and self.evaluates_at_end(step) and not stopped_by_signal(trainer.callbacks):
            self.evaluate(trainer, module)
        return self.measured_at(step)

    def _warn_dropped_classes(self, datamodule, module) -> None:
        """One line when the final evaluation's judge finds classes G dropped (``classes_covered``)."""
        covered, total = self.last.get("classes_covered"), datamodule.num_classes
        if covered is not None and total and covered < total:
            cause = advice.diagnosis(
                module, datamodule, "mode collapse", advice.collapse_suggestions(module), self.final_min_steps
            )
            print(
                f"warning: G's samples cover {int(covered)} of the data's {total} classes at the end "
                f"(G update {module.g_updates}, read by the judge): {cause}",
                flush=True,
            )

    # ----------------------------------------------------------- evaluation
    def evaluate(self, trainer: pl.Trainer, module) -> dict[str, float]:
        from ganrun.metrics import suite

        self.schedule.acted(module.g_updates)
        if not self.metrics:
            return {}
        result = suite.evaluate(  # samples drawn in eval mode (ganrun.training.sampling)
            module.sampling_generator,
            module.latent,
            trainer.datamodule,
            self.metrics,
            self.num_samples,
            module.num_classes,
            seed=self.seed,
            device=module.device,
            judge_size=self.judge_size,
        )
        self.last = {k: float(v) for k, v in result.items() if k != "protocol"}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({f"eval/{k}": v for k, v in self.last.items()}, step=module.g_updates)
        if self.monitor is not None:
            # Rank 0 decides, so that every rank (or none) enters the collective save.
            tie = self.last.get(self.tie_break) if self.tie_break else None
            improved = self.improved(self.last.get(self.monitor, math.nan), tie) and weights_are_finite(module)
            improved, value, tie = trainer.strategy.broadcast((improved, self.last.get(self.monitor), tie), src=0)
            if improved:
                self.best, self.best_step, self.best_tie = value, module.g_updates, tie
                save_atomically(trainer, self.path)
        return self.last

    @property
    def tie_break(self) -> Optional[str]:
        """The metric that decides between equal monitored values (e.g. high_quality_fraction for modes_covered)."""
        from ganrun.metrics.suite import TIE_BREAKS

        name = TIE_BREAKS.get(self.monitor)
        return name if name in self.metrics else None

    def improved(self, value: float, tie: Optional[float] = None) -> bool:
        """Better than the best so far; an equal value counts when its ``tie`` (the tie-break metric) is better."""
        from ganrun.metrics.suite import higher_is_better

        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if value == self.best and tie is not None and self.best_tie is not None:
            return tie > self.best_tie if higher_is_better(self.tie_break) else tie < self.best_tie
        return value > self.best if higher_is_better(self.monitor) else value < self.best

    def summary(self) -> dict[str, float]:
        """What train() reports: hp/metric (the best monitored value), best/<monitor>, best/step, eval/* last values."""
        out = {f"eval/{k}": v for k, v in self.last.items()}
        if self.best is not None:
            out.update({"hp/metric": self.best, f"best/{self.monitor}": self.best, "best/step": float(self.best_step)})
        return out

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "best_tie": self.best_tie, "monitor": self.monitor}

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") == self.monitor:  # setup() has resolved it by now
            self.best, self.best_step, self.best_tie = state.get("best"), state.get("best_step"), state.get("best_tie")
