"""Divergence guard: stop (or warn about) a run that has gone wrong, naming the step.

Two signs, checked after generator updates:

* **NaN / Inf** in D's or G's loss, or in any weight, every ``every_n_steps`` G
  updates (one host sync per check). Once weights are NaN nothing can recover,
  so the run stops at that G update; ``checkpoints/last.ckpt`` keeps the last good
  state (``LastCheckpoint`` never saves non-finite weights).
* **D wins completely** (Goodfellow et al.: G then gets no useful gradient): mean
  D(x) above ``d_real_above`` and mean D(G(z)) below ``d_fake_below`` at every
  logged step for ``patience`` G updates. Read from the logged ``d/real`` and
  ``d/fake``, so only for losses where these are probabilities (minimax, ns).

``action=stop`` raises ``TrainingDiverged`` (``ganrun`` prints one line and exits
with status 3; nothing is saved after the failure); ``action=warn`` warns once per
sign and lets the run go on.
"""

from __future__ import annotations

import warnings
from typing import Optional

import pytorch_lightning as pl
import torch

from ganrun.callbacks.periodic import GUpdateSchedule
from ganrun.errors import ConfigError, TrainingDiverged

ACTIONS = ("stop", "warn")
NON_FINITE_CAUSE = (
    "likely cause: a learning rate too high for this model or an unstable loss; "
    "lower optimizer.lr, set tricks.grad_clip_norm=1.0, or try loss=wgan_gp"
)
D_WINS_CAUSE = (
    "D rejects every fake and G gets no useful gradient (collapse); "
    "lower optimizer.lr_d, try tricks.label_smoothing=0.1 or tricks.instance_noise_std=0.1, "
    "or a loss that does not saturate (loss=ls, loss=wgan_gp)"
)


class DivergenceGuard(pl.Callback):
    def __init__(
        self,
        action: str = "stop",
        every_n_steps: int = 1,
        patience: int = 500,
        d_real_above: float = 0.99,
        d_fake_below: float = 0.01,
    ) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"callbacks.divergence.action={action} is not valid; choose stop or warn")
        if not (isinstance(patience, int) and patience >= 1):
            raise ConfigError(f"callbacks.divergence.patience={patience} is not valid; it must be a positive integer")
        for name, value in (("d_real_above", d_real_above), ("d_fake_below", d_fake_below)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"callbacks.divergence.{name}={value} is not valid; it must be a probability in [0, 1]"
                )
        self.action, self.patience = action, patience
        self.schedule = GUpdateSchedule(every_n_steps, first_step=0)  # the NaN/Inf checks
        self.d_real_above, self.d_fake_below = d_real_above, d_fake_below
        self._seen_metrics: Optional[dict] = None
        self._d_winning_since: Optional[int] = None
        self._warned: set[str] = set()

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = module.g_updates
        if self.schedule.due(step):
            self.schedule.acted(step)
            problem = non_finite(module)
            if trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
                self._act(
                    trainer, "non-finite", f"{problem or 'non-finite values on another rank'}; {NON_FINITE_CAUSE}", step
                )
        self._watch_d_winning(trainer, module, step)

    def _watch_d_winning(self, trainer: pl.Trainer, module, step: int) -> None:
        metrics = module.last_metrics
        if metrics is self._seen_metrics or "d/fake" not in metrics:
            return  # nothing logged at this G update, or a D-only batch after it (n_critic > 1)
        self._seen_metrics = metrics
        if not getattr(module.objective, "d_outputs_are_probabilities", False):
            return
        d_real, d_fake = metrics["d/real"], metrics["d/fake"]
        # Every rank logs at the same G updates: decide together (all ranks winning), so that
        # all of them stop or none does and no rank is left waiting in a collective.
        winning = trainer.strategy.reduce_boolean_decision(
            d_real > self.d_real_above and d_fake < self.d_fake_below, all=True
        )
        if not winning:
            self._d_winning_since = None
            return
        if self._d_winning_since is None:
            self._d_winning_since = step
        if step - self._d_winning_since >= self.patience:
            self._act(
                trainer,
                "d-wins",
                f"D wins completely since G update {self._d_winning_since} (D(x)={d_real:.4f} > {self.d_real_above}, "
                f"D(G(z))={d_fake:.2g} < {self.d_fake_below} for {step - self._d_winning_since} G updates, "
                f"callbacks.divergence.patience={self.patience}): {D_WINS_CAUSE}",
                step,
            )

    def _act(self, trainer: pl.Trainer, kind: str, reason: str, step: int) -> None:
        message = f"training diverged at G update {step}: {reason}; {last_good_checkpoint(trainer)}"
        if self.action == "stop":
            raise TrainingDiverged(message)
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{message} (callbacks.divergence.action=warn: going on)")


def non_finite(module) -> Optional[str]:
    """What is NaN/Inf after the last G update: a loss, else the first bad weight; None if all finite."""
    stats = getattr(module, "step_stats", None) or {}
    losses = {name: value for name, value in stats.items() if name.startswith("loss/") and value is not None}
    named = list(losses.items())
    named += [(f"weight {name}", p) for name, p in module.named_parameters()]
    flags = torch.stack([torch.isfinite(value).all() for _, value in named])
    if bool(flags.all()):
        return None
    name, value = named[int((~flags).nonzero()[0])]
    if name.startswith("loss/"):
        return f"{name} is {float(value)}"
    return f"{name} holds {'NaN' if torch.isnan(value).any() else 'Inf'}"


def last_good_checkpoint(trainer: pl.Trainer) -> str:
    from ganrun.callbacks.checkpoint import LastCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint):
            if not callback.path.is_file():
                return "no checkpoint was written before"
            when = f" (G update {callback.saved_step})" if callback.saved_step >= 0 else ""
            return f"last good checkpoint: {callback.path}{when}"
    return "no checkpoint callback is configured"
