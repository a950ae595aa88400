"""``environment.json``'s record of the processes that trained a run.

At setup, once Lightning has formed the process group, every rank reports where it
runs (host, Slurm node and job, ranks); rank 0 gathers the reports through that group
and adds them to ``environment.json``:

    "process_group": {"world_size": 2, "num_nodes": 2, "backend": "gloo",
                      "main_address": "node1", "main_port": 15123},
    "processes": [{"global_rank": 0, "node_rank": 0, "local_rank": 0, "hostname": ...,
                   "slurm_node": "node1", "slurm_job_id": "12", ...}, {"global_rank": 1, ...}]

The gather itself is the proof that the ranks formed one group: a rank outside it
would leave the collective waiting. A single process records itself alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

from ganrun.runtime import environment
from ganrun.runtime.slurm.job import placement


class ProcessRecord(pl.Callback):
    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)
        self.processes: list[dict] = []

    def setup(self, trainer: pl.Trainer, module, stage: str) -> None:
        mine = {
            "global_rank": trainer.global_rank,
            "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank,
            "device": str(trainer.strategy.root_device),
            **placement(),
        }
        self.processes = gather(mine, trainer.world_size)
        if trainer.is_global_zero:
            environment.update(
                self.run_dir, process_group=group_record(trainer, self.processes), processes=self.processes
            )


def gather(record: dict, world_size: int) -> list[dict]:
    """Every rank's ``record``, in rank order (all ranks call this)."""
    import torch.distributed as dist

    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return [record]
    records: list = [None] * world_size
    dist.all_gather_object(records, record)
    return sorted(records, key=lambda r: r["global_rank"])


def group_record(trainer: pl.Trainer, processes: list[dict]) -> dict:
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    nodes = {p.get("slurm_node") or p["hostname"] for p in processes}
    return {
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "distinct_nodes": len(nodes),
        "backend": dist.get_backend() if initialized else None,
        "main_address": os.environ.get("MASTER_ADDR") if initialized else None,
        "main_port": int(os.environ["MASTER_PORT"]) if initialized and "MASTER_PORT" in os.environ else None,
    }
