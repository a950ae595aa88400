"""Base for callbacks that draw something every N generator updates and at the end."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import save_image


class EveryNSteps(pl.Callback):
    """Calls ``draw(trainer, module)`` on rank 0 every ``every_n_steps`` G updates
    (0: never) and once more at the end of training, never twice for one step."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._drawn_at = -1

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = module.g_updates
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._drawn_at:
            self._draw_once(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if module.g_updates != self._drawn_at:
            self._draw_once(trainer, module)

    def _draw_once(self, trainer: pl.Trainer, module) -> None:
        self._drawn_at = module.g_updates
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
