"""Collapse alarm: a one-line warning when G's samples lose their diversity.

Every ``every_n_steps`` G updates (and at the end) the trained G (not its EMA copy,
which lags behind) draws ``num_samples`` from fixed noise in eval mode, and the
alarm compares their mean pairwise distance with that of as many real examples.
Mode collapse (e.g. 64 identical grey blobs) makes the ratio fall towards 0;
healthy runs stay near 1. On 2-D mixtures (the ring, the grid) the samples are
also placed against the modes: fewer than ``min_near`` of them within half the
smallest distance between two modes of some mode is a failure too (diverse points
away from the data; a loose test, so that a G still learning is not flagged).
When either holds at ``patience`` checks in a row it prints, once per run::

    warning: samples collapsed at G update 300: their diversity is 3% of the data's ...; likely cause: ...

A G still undertrained (``ganrun.callbacks.advice.undertrained``: fewer G updates than
the evaluation protocol's minimum, or D far ahead early) is not flagged while the run goes
on; at the end the warning calls it undertrained and says how much longer to train. The
likely cause names only overrides that apply to this run (``ganrun.callbacks.advice``).

At the end of a run on a 2-D mixture it also counts the modes G covers and warns in one
line when some are dropped (partial collapse keeps the diversity and stays near the
modes, so the checks above miss it)::

    warning: G covers 5 of the data's 8 modes at the end (G update 3000): partial mode collapse; try ...

That count is the run's one end-of-run measurement (``ganrun.metrics.protocol``): the
Evaluation callback's final evaluation where it makes one, else the same protocol
measured here, and shared with ``hp/modes_covered``. A run stopped by a signal is not
judged at its end: it prints no collapse warning then.

It never stops the run (the divergence guard handles NaN and D winning). Cost:
one batch of G and a ``num_samples`` x ``num_samples`` distance matrix per check.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch

from ganrun.callbacks import advice
from ganrun.callbacks.periodic import EveryNSteps
from ganrun.callbacks.samples import fixed_inputs
from ganrun.errors import ConfigError
from ganrun.metrics.protocol import Measures, coverage_at_end, stopped_by_signal


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between the (flattened) samples."""
    flat = samples.flatten(1).float()
    distances = torch.cdist(flat, flat)
    n = len(flat)
    return float(distances.sum() / max(1, n * (n - 1)))


class CollapseAlarm(EveryNSteps, Measures):
    def __init__(
        self,
        every_n_steps: int = 250,
        num_samples: int = 64,
        min_ratio: float = 0.5,
        min_near: float = 0.25,
        patience: int = 2,
        seed: int = 4321,
    ) -> None:
        if not 0.0 < min_ratio < 1.0:
            raise ConfigError(f"callbacks.collapse.min_ratio={min_ratio} is not valid; it must be in (0, 1)")
        if not (isinstance(num_samples, int) and num_samples >= 2):
            raise ConfigError(f"callbacks.collapse.num_samples={num_samples} is not valid; it must be an integer >= 2")
        super().__init__(every_n_steps)
        if not (isinstance(patience, int) and patience >= 1):
            raise ConfigError(f"callbacks.collapse.patience={patience} is not valid; it must be a positive integer")
        self.num_samples, self.min_ratio, self.patience, self.seed = num_samples, min_ratio, patience, seed
        self.min_near = min_near
        self.real_diversity = 0.0
        self.collapsed_checks = 0
        self.warned = False
        self.last_ratio: float | None = None
        self.at_end = False
        self.end_coverage: Optional[tuple[int, dict[str, float]]] = None  # (G update, mode coverage) at the end

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        self.noise, self.labels = fixed_inputs(module, self.num_samples, torch.Generator().manual_seed(self.seed))
        self.real_diversity = diversity(trainer.datamodule.real_examples(len(self.noise)))

    def draw(self, trainer: pl.Trainer, module) -> None:
        if self.real_diversity <= 0.0:
            return
        if advice.undertrained(module) is not None and not self._final_step(trainer, module):
            return  # a G still learning is not judged while the run goes on
        problem = self._problem(trainer.datamodule, self._generate(module))
        self.collapsed_checks = self.collapsed_checks + 1 if problem else 0
        if self.collapsed_checks >= self.patience and not self.warned:
            self.warned = True
            cause = advice.diagnosis(module, trainer.datamodule, "mode collapse", advice.collapse_suggestions(module))
            print(
                f"warning: samples collapsed at G update {module.g_updates}: {problem}; likely cause: {cause}",
                flush=True,
            )

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if stopped_by_signal(trainer.callbacks):
            return  # interrupted before its end: nothing to judge (ganrun-eval evaluates its checkpoint)
        self.at_end = True
        super().on_train_end(trainer, module)
        datamodule = trainer.datamodule
        if datamodule.is_mixture and len(datamodule.modes) > 1 and self.real_diversity > 0.0:
            coverage = coverage_at_end(trainer, module)  # every rank: the final evaluation may be collective
            self.end_coverage = (module.g_updates, coverage)
            if trainer.is_global_zero:
                self._warn_dropped_modes(datamodule, module, coverage)

    def _final_step(self, trainer: pl.Trainer, module) -> bool:
        """The run's last G update: at the end of training, or the planned G updates made."""
        from ganrun.callbacks.progress import planned_g_updates

        planned = planned_g_updates(trainer, module)
        return self.at_end or (planned is not None and module.g_updates >= planned)

    def measured_at(self, g_updates: int) -> Optional[dict[str, float]]:
        """The end-of-run mode coverage, shared with ``hp/modes_covered`` (``ganrun.metrics.protocol``)."""
        if self.end_coverage is not None and self.end_coverage[0] == g_updates:
            return self.end_coverage[1]
        return None

    def _warn_dropped_modes(self, datamodule, module, coverage: dict[str, float]) -> None:
        covered, total = int(coverage["modes_covered"]), len(datamodule.modes)
        if covered < total:
            what = "partial mode collapse" if covered else "no samples on any mode"
            cause = advice.diagnosis(module, datamodule, what, advice.dropped_modes_suggestions(module))
            print(
                f"warning: G covers {covered} of the data's {total} modes at the end (G update {module.g_updates}): {cause}",
                flush=True,
            )

    def _problem(self, datamodule, samples: torch.Tensor):
        """What is wrong with these samples (one phrase), or None."""
        self.last_ratio = diversity(samples) / self.real_diversity
        if self.last_ratio < self.min_ratio:
            return f"their diversity is {self.last_ratio:.0%} of the data's (alarm below {self.min_ratio:.0%})"
        if datamodule.is_mixture and samples.dim() == 2 and len(datamodule.modes) > 1:
            modes = datamodule.modes.float()
            radius = torch.pdist(modes).min() / 2
            near = float((torch.cdist(samples, modes).min(dim=1).values <= radius).float().mean())
            if near < self.min_near:
                return f"only {near:.0%} of them lie near the data's modes (alarm below {self.min_near:.0%})"
        return None

    @torch.no_grad()
    def _generate(self, module) -> torch.Tensor:
        network = module.generator
        was_training = network.training
        network.eval()
        labels = None if self.labels is None else self.labels.to(module.device)
        samples = network(self.noise.to(module.device), labels).float().cpu()
        network.train(was_training)
        return samples
