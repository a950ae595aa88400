"""``checkpoints/last.ckpt``: written every N generator updates, at the end, and on
SIGTERM / SIGINT.

Writes go to a temporary file (``last.ckpt.partial``), flushed to disk, that is
renamed over ``last.ckpt`` (``os.replace`` is atomic on POSIX): a save killed at
any point (even ``kill -9``) leaves the previous ``last.ckpt`` intact, and a stale
``.partial`` is simply overwritten by the next save. A state whose weights are not
finite (a diverged run) is never saved over the last good checkpoint.

A SIGTERM (e.g. SLURM preemption) or a first Ctrl-C does not kill the run
mid-update: the current batch finishes, the checkpoint is written, and training
stops; ``ganrun`` then exits with status 128 + signal number. A second Ctrl-C
interrupts at once.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

from ganrun.callbacks.periodic import GUpdateSchedule

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Under DDP, asking every rank whether one got a signal is a collective and a host sync:
# done every this many batches (the same batches on every rank), not after each one.
SIGNAL_POLL_EVERY = 10


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 500, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.schedule = GUpdateSchedule(every_n_steps)  # records the G update and batch of the last save
        self.filename = filename
        self.received_signal: Optional[int] = None
        self._previous_handlers: dict = {}

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    @property
    def saved_step(self) -> int:
        """G update of the last checkpoint this run wrote (-1: none yet)."""
        return self.schedule.last_step

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
        if (stopping or self.schedule.due(step)) and self.schedule.pending(step, module.batches_done):
            self.save(trainer, module)
        if stopping:
            self.received_signal = self.received_signal or signal.SIGTERM  # signalled on another rank
            name = signal.Signals(self.received_signal).name
            print(
                f"ganrun: received {name} at G update {step}: saved {self.path}; resume with: {resume_command(self.path)}",
                flush=True,
            )
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if self.schedule.pending(module.g_updates, module.batches_done):  # D-only batches since a save count
            self.save(trainer, module)
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        self._restore_handlers()

    def save(self, trainer: pl.Trainer, module) -> None:
        if not weights_are_finite(module):
            warnings.warn(
                f"not saving {self.path} at G update {module.g_updates}: the weights are not finite (NaN/Inf); "
                f"the previous checkpoint is kept"
            )
            return
        save_atomically(trainer, self.path)
        self.schedule.acted(module.g_updates, module.batches_done)


def resume_command(path: Path) -> str:
    """The shell command that continues this run (its config travels in the checkpoint)."""
    import shlex

    from ganrun.config.command_line import quote_value

    return f"ganrun {shlex.quote('ckpt_path=' + quote_value(str(Path(path).resolve())))}"


def save_atomically(trainer: pl.Trainer, path: Path) -> None:
    """The trainer's checkpoint to ``path`` via a temporary file renamed over it (all ranks call this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    trainer.save_checkpoint(partial, weights_only=False)
    if trainer.is_global_zero:
        _flush_to_disk(partial)
        os.replace(partial, path)
        _flush_to_disk(path.parent)  # the rename itself survives a power cut
    trainer.strategy.barrier("ganrun_checkpoint")


def weights_are_finite(module) -> bool:
    """All parameters and buffers finite (one host sync)."""
    import torch

    tensors = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point() and t.numel()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _flush_to_disk(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # e.g. directories on some file systems
    finally:
        os.close(descriptor)
