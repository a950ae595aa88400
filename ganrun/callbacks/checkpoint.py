"""``checkpoints/last.ckpt``: written every N generator updates, at the end, and on
SIGTERM / SIGINT.

Writes go to a temporary file that is renamed over ``last.ckpt`` (``os.replace``
is atomic on POSIX), so an interrupted save never leaves a corrupt checkpoint.

A SIGTERM (e.g. SLURM preemption) or a first Ctrl-C does not kill the run
mid-update: the current batch finishes, the checkpoint is written, and training
stops; ``ganrun`` then exits with status 128 + signal number. A second Ctrl-C
interrupts at once.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Under DDP, asking every rank whether one got a signal is a collective and a host sync:
# done every this many batches (the same batches on every rank), not after each one.
SIGNAL_POLL_EVERY = 10


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 500, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.filename = filename
        self._saved_at = -1  # batches_done at the last save
        self._saved_step = -1  # g_updates at the last save
        self.received_signal: Optional[int] = None
        self._previous_handlers: dict = {}

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    # ------------------------------------------------------------ signals
    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received_signal is not None:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.received_signal = signum

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # -------------------------------------------------------------- saves
    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = module.g_updates
        # All ranks stop together when any of them got a signal (one collective every
        # SIGNAL_POLL_EVERY batches under DDP, nothing on one device), so none is left
        # waiting in an all-reduce.
        stopping = self.received_signal is not None
        if trainer.world_size > 1:
            poll = module.batches_done % SIGNAL_POLL_EVERY == 0
            stopping = poll and trainer.strategy.reduce_boolean_decision(stopping, all=False)
        # g_updates stays at a multiple of every_n_steps for n_critic batches: save once.
        due = self.every_n_steps and step and step % self.every_n_steps == 0 and step != self._saved_step
        if module.batches_done != self._saved_at and (stopping or due):
            self.save(trainer, module)
        if stopping:
            self.received_signal = self.received_signal or signal.SIGTERM  # signalled on another rank
            name = signal.Signals(self.received_signal).name
            print(f"ganrun: received {name} at G update {step}: saved {self.path}; resume with ckpt_path={self.path}", flush=True)
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if module.batches_done != self._saved_at:
            self.save(trainer, module)
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        self._restore_handlers()

    def save(self, trainer: pl.Trainer, module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.filename + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("ganrun_checkpoint")
        self._saved_at = module.batches_done
        self._saved_step = module.g_updates
