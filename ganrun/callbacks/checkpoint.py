"""``checkpoints/last.ckpt``: written every N generator updates and at the end.

Writes go to a temporary file that is renamed over ``last.ckpt`` (``os.replace``
is atomic on POSIX), so an interrupted save never leaves a corrupt checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 500, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.filename = filename
        self._saved_at = -1

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = module.g_updates
        if self.every_n_steps and step and step % self.every_n_steps == 0 and step != self._saved_at:
            self.save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if module.g_updates != self._saved_at:
            self.save(trainer, module)

    def save(self, trainer: pl.Trainer, module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.filename + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("ganrun_checkpoint")
        self._saved_at = module.g_updates
