"""``ThreadBalancer``: torch's CPU thread count follows the free cores during a run (``threads=auto``).

See ``ganrun.runtime.threads`` for why and what was measured.
"""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl
import torch

from ganrun.runtime.threads import CHECK_EVERY_S, ThreadPolicy


class ThreadBalancer(pl.Callback):
    """Sets torch's thread count for the run: the policy's count at the start, then (``threads=auto``)
    re-checks the load every ``CHECK_EVERY_S`` seconds (``ThreadPolicy.check``: at most one thread
    more or less per check) and logs the count as ``system/threads``.
    Restores the process's own count when the run ends (``train(cfg)`` may run inside a bigger program)."""

    def __init__(self, policy: ThreadPolicy) -> None:
        self.policy = policy
        self.next_check = time.monotonic() + CHECK_EVERY_S
        self.current = policy.start
        self.previous: Optional[int] = None

    def on_train_start(self, trainer, module) -> None:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.current)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if not self.policy.adaptive or now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY_S
        chosen = self.policy.check()
        if chosen != self.current:
            torch.set_num_threads(chosen)
            self.current = chosen
        if trainer.logger is not None:
            trainer.logger.log_metrics({"system/threads": float(self.current)}, step=module.g_updates)

    def on_train_end(self, trainer, module) -> None:
        if self.previous is not None:
            torch.set_num_threads(self.previous)
