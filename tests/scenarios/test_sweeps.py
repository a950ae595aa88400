"""Sweeps: launcher configs, a parallel joblib sweep, an Optuna search, result.json and ganrun-report."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from ganrun import config_dir

QUIET = ["accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY_RING = [
    "model=gan",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "model.z_dim=4",
    "dataset=ring",
    "steps=3",
]


def ganrun_sweep(sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ganrun", "-m", *QUIET, *TINY_RING, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"sweep failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "result.json").read_text()) for p in job_dirs(sweep_dir)}


def compose_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    import ganrun.commands.cli  # noqa: F401  (registers the launcher resolvers, as the command does)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# ----------------------------------------------------------------- configs
def test_slurm_launcher_tasks_and_gpus_follow_the_trainer():
    cfg = compose_with_hydra("launcher=slurm", "accelerator=ddp", "trainer.num_nodes=2", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.ganrun_launchers.slurm.GanrunSlurmLauncher"
    )  # submitit's, with ganrun's waiting
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    assert cfg.trainer.strategy._target_ == "ganrun.runtime.distributed.GANDDPStrategy"
    # Without trainer.devices, accelerator=ddp means all GPUs of a node (-1), which Slurm cannot be
    # asked for: the request carries -1 and is refused at submission, naming trainer.devices.
    cfg = compose_with_hydra("launcher=slurm", "accelerator=ddp")
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node, cfg.trainer.devices) == (-1, None, -1)
    # ddp_cpu keeps its two processes
    cfg = compose_with_hydra("launcher=slurm", "accelerator=ddp_cpu")
    assert (cfg.hydra.launcher.tasks_per_node, cfg.trainer.devices) == (2, 2)
    GlobalHydra.instance().clear()


def test_joblib_launcher_gives_each_cpu_job_one_device():
    cfg = compose_with_hydra("launcher=joblib", "accelerator=cpu")
    cfg.hydra.job.num = 3
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.trainer.devices == 1 and cfg.hydra.launcher.n_jobs >= 1
    GlobalHydra.instance().clear()


def test_job_devices_spread_jobs_over_gpus(monkeypatch):
    import torch

    from ganrun.config.resolvers import job_devices, parallel_jobs

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [job_devices(n, "gpu") for n in range(6)] == [[0], [1], [2], [3], [0], [1]]
    assert job_devices(5, "cpu") == 1
    assert parallel_jobs() == 4


# ----------------------------------------------------------------- sweeps that run
@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    ganrun_sweep(sweep, "launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-3,2e-3")
    done = results(sweep)
    assert len(done) == 2 and all(r["status"] == "completed" for r in done.values()), done
    assert {r["metrics"]["g_updates"] for r in done.values()} == {3.0}
    assert sorted(name.split("optimizer.lr=")[1].split(",")[0] for name in done) == ["0.001", "0.002"]
    for job in job_dirs(sweep):
        assert (job / "checkpoints" / "last.ckpt").is_file() and list(job.rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_optuna_search_runs_trials_and_maximises_the_returned_metric(tmp_path):
    sweep = tmp_path / "optuna"
    ganrun_sweep(sweep, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2")
    done = results(sweep)
    assert len(done) == 2 and all(r["status"] == "completed" for r in done.values()), done
    assert all(name.split("_")[0] in ("0", "1") for name in done)  # trial number first: unique folders
    best = (sweep / "optimization_results.yaml").read_text()
    best_value = max(r["metrics"]["hp/metric"] for r in done.values())
    assert "name: optuna" in best and f"best_value: {best_value}" in best, best


# ----------------------------------------------------------------- report
@pytest.fixture(scope="module")
def sweep_with_a_failure(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    result = ganrun_sweep(sweep, "optimizer.lr=1e-3,2e-3,-1", check=False)
    return sweep, result


@pytest.mark.slow
def test_a_failed_job_writes_its_error_and_the_sweep_goes_on(sweep_with_a_failure):
    sweep, result = sweep_with_a_failure
    assert result.returncode != 0  # the sweep reports the failure at the end ...
    assert "ganrun: error: optimizer.lr=-1 is not valid" in result.stderr
    done = results(sweep)  # ... after running every job
    statuses = {name.split("optimizer.lr=")[1].split(",")[0]: r["status"] for name, r in done.items()}
    assert statuses == {"0.001": "completed", "0.002": "completed", "-1": "failed"}
    failed = next(r for r in done.values() if r["status"] == "failed")
    assert failed["error"] == "optimizer.lr=-1 is not valid; it must be a positive number"
    assert "optimizer.lr=-1" in failed["overrides"]


@pytest.mark.slow
def test_report_lists_every_job_with_overrides_metrics_and_status(sweep_with_a_failure, tmp_path):
    sweep, _ = sweep_with_a_failure
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    # A job still running: its folder has .hydra/ but no result.json yet.
    running = copy / "optimizer.lr=0.005"
    shutil.copytree(job_dirs(copy)[0] / ".hydra", running / ".hydra")
    overrides = (running / ".hydra" / "overrides.yaml").read_text()
    (running / ".hydra" / "overrides.yaml").write_text(re.sub(r"optimizer.lr=\S+", "optimizer.lr=0.005", overrides))

    result = subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "4 jobs (" in result.stdout and "1 failed" in result.stdout and "1 unknown/running" in result.stdout

    rows = list(csv.DictReader((copy / "report.csv").open()))
    assert len(rows) == 4
    by_lr = {row["optimizer.lr"]: row for row in rows}
    assert set(by_lr) == {"0.001", "0.002", "-1", "0.005"}
    assert by_lr["-1"]["status"] == "failed" and "optimizer.lr=-1 is not valid" in by_lr["-1"]["error"]
    assert by_lr["0.005"]["status"] == "unknown/running" and by_lr["0.005"]["hp/metric"] == ""
    for lr in ("0.001", "0.002"):
        row = by_lr[lr]
        job_result = json.loads((copy / row["job"] / "result.json").read_text())
        assert row["status"] == "completed" and float(row["g_updates"]) == 3.0
        assert float(row["hp/metric"]) == job_result["metrics"]["hp/metric"]
        assert f"optimizer.lr={lr}" in row["overrides"] and float(row["job_wall_time_s"]) > 0

    markdown = (copy / "report.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("| #"))
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["#", "status", "optimizer.lr"]
    assert "hp/metric" in header and "wall time (s)" in header
    assert sum(line.startswith("| ") and not line.startswith("| #") for line in markdown) == 4
    assert "dataset=ring" in markdown[0]  # common overrides listed once
    png = copy / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


@pytest.mark.slow
def test_report_without_matplotlib_still_writes_the_tables(sweep_with_a_failure, tmp_path, monkeypatch):
    from ganrun.commands.report import report

    copy = tmp_path / "sweep"
    shutil.copytree(sweep_with_a_failure[0], copy)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    outcome = report(copy)
    assert "matplotlib is not installed" in outcome["note"]
    assert (copy / "report.csv").is_file() and not (copy / "report.png").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        ([], "usage: ganrun-report SWEEP_DIR"),
        (["/nonexistent/sweep"], "/nonexistent/sweep does not exist"),
        (["{tmp}"], "holds no ganrun jobs"),
        (["{tmp}", "colour=red"], "unknown argument 'colour=...'"),
    ],
)
def test_report_bad_input_is_one_line(args, fragment, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganrun-report: error:") and fragment in lines[0], result.stderr
