"""When periodic callbacks act (every N generator updates, and at the end), and a base
for callbacks that draw something then."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import save_image


class GUpdateSchedule:
    """Which G updates a periodic callback acts at: every ``every_n_steps``-th (0 or None:
    never) from ``first_step`` on, and at most once each, although ``g_updates`` keeps its
    value through the n_critic batches of one G update.

    The callback reports each time it acts (``acted``), whether on schedule or not (at the
    end of training, on a signal, when called directly); ``pending`` says whether it has yet
    to act at the current G update, which is what the end of training asks. The record is not
    kept in checkpoints: a resumed run starts with none.
    """

    def __init__(self, every_n_steps: Optional[int], first_step: int = 1) -> None:
        self.every_n_steps = every_n_steps or 0
        self.first_step = first_step
        self.last_step = -1  # g_updates when the callback last acted (-1: not yet)
        self.last_batch = -1  # batches_done then (-1: not given)

    def due(self, step: int) -> bool:
        """G update ``step`` is on the schedule and the callback has not acted at it yet."""
        on_schedule = bool(self.every_n_steps) and step >= self.first_step and step % self.every_n_steps == 0
        return on_schedule and step != self.last_step

    def pending(self, step: int, batch: Optional[int] = None) -> bool:
        """The callback has not acted at G update ``step``; given ``batch`` (batches_done), not at
        that batch: for work that the D-only batches after a G update change too (a checkpoint)."""
        if batch is not None:
            return batch != self.last_batch
        return step != self.last_step

    def acted(self, step: int, batch: int = -1) -> None:
        """Record that the callback acted at G update ``step`` (and batch ``batch``)."""
        self.last_step, self.last_batch = step, batch


class EveryNSteps(pl.Callback):
    """Calls ``draw(trainer, module)`` on rank 0 every ``every_n_steps`` G updates
    (0: never; G update 0 counts) and once more at the end of training, never twice for one step."""

    def __init__(self, every_n_steps: int) -> None:
        self.schedule = GUpdateSchedule(every_n_steps, first_step=0)

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.schedule.due(module.g_updates):
            self._draw_once(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if self.schedule.pending(module.g_updates):
            self._draw_once(trainer, module)

    def _draw_once(self, trainer: pl.Trainer, module) -> None:
        self.schedule.acted(module.g_updates)
        if trainer.is_global_zero:
            self.draw(trainer, module)

    def draw(self, trainer: pl.Trainer, module) -> None:
        raise NotImplementedError


def publish_image(trainer: pl.Trainer, tag: str, image: torch.Tensor, path: Path) -> None:
    """An image (C, H, W) in [0, 1] to every TensorBoard logger at the current G update, and to ``path`` as PNG."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=trainer.lightning_module.g_updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, path)
