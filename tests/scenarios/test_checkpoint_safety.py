"""A checkpoint someone shares must not run code: every loader reads tensors and plain data only.

The payload is a real attack: its pickle calls ``os.system`` to create a marker file. The
first test proves the payload works when loaded the unsafe way, so the others can fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from support import FAST, QUIET, TINY_GAN, assert_one_line_error, ganrun, run, sample

from ganrun.errors import ConfigError
from ganrun.records.checkpoints import load_checkpoint


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    """(a .ckpt shaped like a ganrun checkpoint whose unpickling runs a command, the marker it would create)."""
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "shared.ckpt"
    torch.save(
        {
            "state_dict": {"generator.w": torch.zeros(1)},
            "ganrun": {"config": {}, "data_shape": [2], "num_classes": 0, "is_image": False, "x": RunsCode(marker)},
        },
        ckpt,
    )
    return ckpt, marker


def test_the_payload_runs_code_when_loaded_unsafely(planted):
    ckpt, marker = planted
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_it_without_running_it(planted):
    ckpt, marker = planted
    with pytest.raises(ConfigError, match="holds objects other than tensors and plain data.*system"):
        load_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        lambda ckpt, cwd: sample(f"ckpt={ckpt}", "n=4", f"out={cwd / 'x.pt'}", cwd=cwd, check=False),
        lambda ckpt, cwd: run(
            sys.executable,
            "-c",
            "from ganrun.commands.cli import eval_main; eval_main()",
            f"ckpt={ckpt}",
            cwd=cwd,
            check=False,
        ),
        lambda ckpt, cwd: ganrun(
            *QUIET,
            *TINY_GAN,
            "dataset=ring",
            "steps=2",
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={cwd / 'run'}",
            cwd=cwd,
            check=False,
        ),
    ],
    ids=["ganrun-sample", "ganrun-eval", "ganrun-resume"],
)
def test_commands_refuse_it_in_one_line_without_running_it(planted, tmp_path, command):
    ckpt, marker = planted
    result = command(ckpt, tmp_path)
    assert_one_line_error(result, "holds objects other than tensors and plain data")
    assert not marker.exists()


def test_metric_cache_ignores_a_planted_entry(planted, tmp_path):
    from ganrun.metrics import cache

    ckpt, marker = planted
    assert cache.load(ckpt) is None  # rebuilt instead
    assert not marker.exists()


def test_checkpoints_ganrun_writes_load_safely(make_config, tmp_path):
    """EMA, a scheduler, the evaluation callback's state, RNG states: all tensors and plain data."""
    from ganrun.train import train

    cfg = make_config(
        *FAST,
        *TINY_GAN,
        "dataset=ring",
        "steps=4",
        "tricks.ema_decay=0.9",
        "scheduler={_target_:torch.optim.lr_scheduler.LinearLR,_partial_:true,total_iters:10}",
        "callbacks.evaluation.every_n_steps=2",
    )
    train(cfg)
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / name)
        assert checkpoint["ganrun_counters"]["g_updates"] in (2, 4)
