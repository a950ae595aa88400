"""The console during training: one progress bar counted in generator updates, and no
third-party noise.

``GUpdatesProgressBar`` is Lightning's tqdm bar counting what ``steps=`` counts: G
updates, not D batches (with ``n_critic=5``, ``steps=200`` is ``G 200/200``, not
"Epoch 35"). Its total is ``steps``, or, when ``steps`` is unset, ``trainer.max_epochs``
× batches per epoch / ``n_critic``. It shows the step as an integer and the last
logged losses (``loss_g``, ``loss_d``).

``quiet_third_party()`` silences what every run used to print and a user can do
nothing about: Lightning's INFO lines (GPU/TPU available, the ``litlogger`` advert),
torch's ``LeafSpec`` deprecation warning raised inside Lightning, and Lightning's advice
to "prepend srun" on any machine with Slurm's commands (a run outside a Slurm job
is one process; ``launcher=slurm`` starts multi-node runs under srun), and its warning
that a mid-epoch resume has no resumable dataloader (ganrun's datamodules continue
their batch order from the checkpoint's count). Warnings and errors still get through.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from ganrun.metrics.protocol import stopped_by_signal

# Raised by pytorch_lightning.utilities._pytree under torch >= 2.10; nothing a user can change.
LEAFSPEC_WARNING = r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"
SRUN_HINT = r"The `srun` command is available on your system but is not used.*"
MID_EPOCH_RESUME = r"You're resuming from a checkpoint that ended before the epoch ended.*"
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


def quiet_third_party() -> None:
    """Lightning's loggers to WARNING; torch's LeafSpec FutureWarning, Lightning's srun hint and
    mid-epoch resume warning ignored."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)
    warnings.filterwarnings("ignore", message=SRUN_HINT)
    warnings.filterwarnings("ignore", message=MID_EPOCH_RESUME)


def planned_g_updates(trainer: pl.Trainer, module) -> Optional[int]:
    """G updates this run will make: ``steps``, else max_epochs × batches / n_critic (None: unknown)."""
    if module.max_g_updates is not None:
        return int(module.max_g_updates)
    batches, epochs = trainer.num_training_batches, trainer.max_epochs
    if epochs is None or epochs < 0 or not math.isfinite(batches):
        return None
    return int(epochs * batches) // max(1, module.n_critic)


class GUpdatesProgressBar(TQDMProgressBar):
    """One bar for the whole run, advanced once per G update (``G 250/1000``)."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=False)
        self._shown_step = -1

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        # A resumed run's bar starts where the run stopped.
        self.train_progress_bar = Tqdm(
            desc="G",
            total=planned_g_updates(trainer, module),
            initial=module.g_updates,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )
        self._shown_step = module.g_updates

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the run: epochs are not what steps= counts

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if self._train_progress_bar is None:
            return
        if stopped_by_signal(trainer.callbacks):
            # Listed before LastCheckpoint: end the bar's line before it prints where to resume from.
            self.train_progress_bar.close()
            return
        step = module.g_updates
        if step == self._shown_step:
            return  # a D-only batch (n_critic > 1)
        if step % self.refresh_rate == 0 or step == self.train_progress_bar.total:
            self.train_progress_bar.update(step - self._shown_step)
            self._shown_step = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, module), refresh=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, module) -> None:
        pass

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        if self._train_progress_bar is not None:
            self.train_progress_bar.close()  # so that the error and the summary start on a clean line

    def get_metrics(self, trainer: pl.Trainer, module) -> dict[str, Any]:
        """The last logged losses (no version number, no float step: the bar counts the steps)."""
        metrics = getattr(module, "last_metrics", {}) or {}
        return {name.replace("/", "_"): f"{metrics[name]:.3f}" for name in ("loss/g", "loss/d") if name in metrics}


def progress_callbacks(trainer_cfg) -> list:
    """The G-update bar when the trainer shows a progress bar (Lightning refuses a bar
    callback with ``trainer.enable_progress_bar=false``)."""
    return [GUpdatesProgressBar()] if trainer_cfg.get("enable_progress_bar", True) else []
