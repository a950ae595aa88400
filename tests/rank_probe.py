"""Test-only callback for the distributed tests: each rank saves what it holds.

Used as ``+callbacks.rank_probe._target_=rank_probe.RankProbe +callbacks.rank_probe.dirpath=DIR``
with ``tests/`` on PYTHONPATH; DDP child ranks re-run the same command line, so
every rank loads it. Writes ``DIR/rank{R}.pt`` at the end of training.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class RankProbe(pl.Callback):
    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.initial: dict = {}
        self.first_batch = None
        self.first_noise = None

    def on_train_start(self, trainer, module) -> None:
        self.initial = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if self.first_batch is None:
            self.first_batch = batch[0].detach().clone()
            state = torch.get_rng_state()
            self.first_noise = module.sample_noise(4).detach().clone()
            torch.set_rng_state(state)  # leave the run's random stream untouched

    def on_train_end(self, trainer, module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "initial": self.initial,
                "final": {k: v.detach().clone() for k, v in module.state_dict().items()},
                "first_batch": self.first_batch,
                "first_noise": self.first_noise,
                "g_updates": module.g_updates,
                "batches_done": module.batches_done,
            },
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )
