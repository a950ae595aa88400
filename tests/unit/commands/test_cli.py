"""The installed commands as a user runs them: outputs on disk, one-line errors, sweeps, the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from support import QUIET, REPO, TINY_GAN, assert_one_line_error, ganrun, in_process, run, sample


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = ganrun(*QUIET, *TINY_GAN, "dataset=digits", "steps=3", f"hydra.run.dir={run_dir}")
    assert f"run directory {run_dir}" in result.stdout
    return run_dir


def test_run_directory_holds_the_contract_files(trained_run):
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    result = json.loads((trained_run / "result.json").read_text())
    assert result["status"] == "completed" and result["metrics"]["g_updates"] == 3.0 and result["error"] is None
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "samples").glob("*.png"))
    assert list(trained_run.rglob("events.out.tfevents.*"))


def test_sample_command_writes_images_and_grid(trained_run, tmp_path):
    out, grid = tmp_path / "s.pt", tmp_path / "g.png"
    sample(f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}", "n=12", f"out={out}", f"grid={grid}", "seed=3")
    data = torch.load(out)
    assert data["images"].shape == (12, 1, 28, 28) and data["images"].dtype == torch.float32
    assert data["images"].min() >= -1 and data["images"].max() <= 1
    assert grid.stat().st_size > 0


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["n=5", "out=x.pt"], ["missing ckpt="]),
        (["ckpt=/nonexistent.ckpt", "n=5", "out=x.pt"], ["/nonexistent.ckpt does not exist"]),
        (["ckpt=a", "n=zero", "out=x.pt"], ["n=zero is not valid"]),
        (["ckpt=a", "n=1", "out=x.pt", "colour=red"], ["unknown argument 'colour=red'"]),
    ],
)
def test_sample_command_bad_input(args, fragments, tmp_path):
    assert_one_line_error(in_process("sample_main", *args, cwd=tmp_path), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_sample_command_rejects_truncated_and_foreign_checkpoints(trained_run, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    assert_one_line_error(sample(f"ckpt={truncated}", "n=2", "out=x.pt", cwd=tmp_path, check=False), "truncated")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert_one_line_error(
        sample(f"ckpt={foreign}", "n=2", "out=x.pt", cwd=tmp_path, check=False), "not written by ganrun"
    )


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    result = ganrun(*QUIET, "model=stylegan9", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "stylegan9" in result.stderr and "dcgan" in result.stderr and "lsgan" in result.stderr


@pytest.mark.slow
def test_sweep_places_each_job_in_a_readable_subdirectory(tmp_path):
    ganrun("-m", *QUIET, *TINY_GAN, "dataset=ring", "steps=2", "optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path}")
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all("optimizer.lr=" in job for job in jobs), jobs
    for job in jobs:
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(tmp_path):
    """A non-editable install must carry the YAML configs inside the wheel."""
    source = REPO
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source))
    (wheel,) = wheels.glob("ganrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ganrun/configs/train.yaml" in names and "ganrun/configs/model/dcgan.yaml" in names
    assert (
        "hydra_plugins/ganrun_launchers/slurm.py" in names and "hydra_plugins/__init__.py" not in names
    )  # launcher=slurm
    target = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run(
        sys.executable, "-c", "import ganrun; print(ganrun.__file__, ganrun.config_dir())", cwd=workdir, env=env
    )
    assert str(target) in where.stdout and str(source) not in where.stdout
    result = run(
        sys.executable,
        "-m",
        "ganrun",
        *QUIET,
        *TINY_GAN,
        "dataset=ring",
        "steps=2",
        "hydra.run.dir=out",
        cwd=workdir,
        env=env,
    )
    assert (workdir / "out" / "checkpoints" / "last.ckpt").is_file(), result.stdout
    shutil.rmtree(target)


@pytest.mark.slow
def test_sigterm_saves_a_resumable_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, make_config):
    """SLURM preemption: SIGTERM mid-run -> checkpoint + clean exit; resuming reaches the
    same generator weights as a run that was never interrupted. The reference run is
    short: it stops 10 G updates after the point the signal stopped the first run.
    Marked slow: two command start-ups (the signalled run and the resume)."""
    import signal
    import time

    # scheduler=null: the ring recipe decays the LR over steps=, which differ between the two runs
    common = [
        *QUIET,
        *TINY_GAN,
        "dataset=ring",
        "seed=3",
        "trainer.log_every_n_steps=10",
        "scheduler=null",
        "tricks.mine_weight=0",
        "callbacks.last_checkpoint.every_n_steps=20",
        "callbacks.samples.every_n_steps=0",
    ]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "ganrun", *common, "steps=100000", f"hydra.run.dir={interrupted}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = interrupted / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # mid-run: 20 of 100,000 G updates are done
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "received SIGTERM" in stdout and "Traceback" not in stderr
    stopped_at = torch.load(ckpt, weights_only=False)["ganrun_counters"]["g_updates"]
    assert 20 <= stopped_at < 100000, stopped_at
    result = json.loads((interrupted / "result.json").read_text())
    assert result["status"] == "interrupted" and result["metrics"]["g_updates"] == stopped_at

    end = f"steps={stopped_at + 10}"
    ganrun(*common, end, f"hydra.run.dir={interrupted}", f"ckpt_path={ckpt}")
    assert json.loads((interrupted / "result.json").read_text())["status"] == "completed"
    from ganrun.train import train

    train(make_config(*common, end, run_dir=straight))  # the reference, in-process (no second start-up)
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(ckpt, weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith("generator."):
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
