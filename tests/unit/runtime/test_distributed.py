"""Two CPU processes (accelerator=ddp_cpu, gloo) train one GAN: identical weights on
every rank, a single set of outputs, steps= counting global G updates, sharded data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import TESTS

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
STEPS = 4


def ganrun_ddp(
    run_dir: Path, *overrides: str, check: bool = True, multirun: bool = False
) -> subprocess.CompletedProcess:
    probe = ["+callbacks.rank_probe._target_=rank_probe.RankProbe", f"+callbacks.rank_probe.dirpath={run_dir}_probe"]
    where = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    args = [
        sys.executable,
        "-m",
        "ganrun",
        *(["-m"] if multirun else []),
        "accelerator=ddp_cpu",
        *QUIET,
        *probe,
        *overrides,
        where,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"ganrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def load_ranks(run_dir: Path) -> list[dict]:
    probes = sorted(Path(f"{run_dir}_probe").glob("rank*.pt"))
    assert [p.name for p in probes] == ["rank0.pt", "rank1.pt"], probes
    return [torch.load(p, weights_only=False) for p in probes]


def assert_same_on_every_rank(ranks: list[dict]) -> None:
    first, second = ranks
    assert first["final"].keys() == second["final"].keys()
    for name, value in first["final"].items():
        assert torch.equal(value, second["final"][name]), f"{name} differs between ranks"
    changed = [
        name
        for name, value in first["final"].items()
        if value.is_floating_point() and not torch.equal(value, first["initial"][name])
    ]
    assert any(n.startswith("generator.") for n in changed) and any(n.startswith("discriminator.") for n in changed), (
        changed
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        # BN running statistics in G and D (buffers), n_critic=2, the EMA copy of G.
        [
            "model=dcgan",
            "model.generator.width=8",
            "model.discriminator.width=8",
            "model.z_dim=8",
            "dataset=fake",
            "dataset.size=256",
            "dataset.batch_size=16",
            "n_critic=2",
            "tricks.ema_decay=0.9",
        ],
        # InfoGAN's Q head (trained with G) and its BN, through discriminator.features().
        [
            "model=infogan",
            "model.generator.width=8",
            "model.discriminator.width=8",
            "model.z_dim=8",
            "model.module.q_hidden=8",
            "dataset=fake",
            "dataset.size=256",
            "dataset.batch_size=16",
        ],
    ],
    ids=["dcgan-bn-ema-ncritic2", "infogan-qhead"],
)
def test_ddp_cpu_ranks_hold_identical_weights_and_write_one_set_of_outputs(tmp_path, overrides):
    run_dir = tmp_path / "run"
    result = ganrun_ddp(run_dir, *overrides, f"steps={STEPS}")
    assert result.stdout.count("ganrun: run directory") == 1, result.stdout

    ranks = load_ranks(run_dir)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert_same_on_every_rank(ranks)
    # steps= counts global G updates: each rank made exactly STEPS synchronous G updates.
    assert [r["g_updates"] for r in ranks] == [STEPS, STEPS]
    # Each rank got its own shard of the data and its own noise.
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    assert not torch.equal(ranks[0]["first_noise"], ranks[1]["first_noise"])

    # Outputs written once, by rank 0: one checkpoint, one sample set, event files of one process.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    grids = sorted(p.name for p in (run_dir / "samples").glob("step_*.png"))
    assert grids[-1] == f"step_{STEPS:07d}.png" and len(grids) <= 2, grids  # (+ step 0 when n_critic > 1)
    writers = {p.name.split(".")[-2] for p in run_dir.rglob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # the writing process id is in the event file's name
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == [".hydra"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["ganrun_counters"]["g_updates"] == STEPS
    for name, value in ranks[0]["final"].items():
        assert torch.equal(checkpoint["state_dict"][name], value), name


@pytest.mark.slow
def test_lapgan_levels_stay_identical_across_ranks(tmp_path):
    """LAPGAN steps its levels through generator.level() / discriminator.levels[k]."""
    run_dir = tmp_path / "run"
    ganrun_ddp(
        run_dir,
        "model=lapgan",
        "dataset=fake",
        "dataset.size=256",
        "dataset.batch_size=16",
        "model.image_size=16",
        "model.generator.levels=2",
        "steps=3",
        "callbacks.pyramid.every_n_steps=0",
    )
    assert_same_on_every_rank(load_ranks(run_dir))


@pytest.mark.slow
def test_multirun_with_ddp_is_refused_with_the_alternative(tmp_path):
    result = ganrun_ddp(
        tmp_path / "sweep", "model=gan", "dataset=ring", "steps=2", "optimizer.lr=1e-3,2e-3", check=False, multirun=True
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[0].startswith("ganrun: error: -m sweeps with a multi-process trainer"), (
        result.stderr
    )
    assert "launcher=slurm" in lines[0]
    assert not Path(f"{tmp_path / 'sweep'}_probe").exists()  # no job trained


@pytest.mark.parametrize(
    "launcher,accelerator,refused",
    [
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", "ddp", True),
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "ddp_cpu", True),
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "ddp", True),
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "ddp", False),
        ("hydra_plugins.ganrun_launchers.slurm.GanrunSlurmLauncher", "ddp_cpu", False),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", "cpu", False),
    ],
)
def test_which_sweeps_may_start_ranks(make_config, launcher, accelerator, refused):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ganrun.errors import ConfigError
    from ganrun.runtime.distributed import check_sweep_launch

    cfg = make_config(f"accelerator={accelerator}")
    hydra_cfg = OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"_target_": launcher}})
    if refused:
        with pytest.raises(ConfigError, match="launcher=slurm"):
            check_sweep_launch(cfg, hydra_cfg)
    else:
        check_sweep_launch(cfg, hydra_cfg)
    check_sweep_launch(
        cfg, OmegaConf.create({"mode": RunMode.RUN, "launcher": {"_target_": launcher}})
    )  # single runs start ranks
