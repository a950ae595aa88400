"""TensorBoard: the names of runs (ganrun.records.hparams.tensorboard_run_name), and what a real
``tensorboard`` server shows of a run and a sweep through its HTTP data API."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write

from ganrun.records.hparams import run_description, tensorboard_run_name

TIME = r"@\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_events(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"events.out.tfevents.{time.time_ns()}").write_bytes(b"")


# ------------------------------------------------------------------ run names
def test_the_description_names_what_is_trained_in_a_fixed_order():
    overrides = [
        "seed=1",
        "model=gan",
        "dataset=ring",
        "steps=200",
        "threads=1",
        "accelerator=cpu",
        "optimizer.lr=1e-4",
        "loss=wgan_gp",
        "hydra.run.dir=/tmp/x",
        "ckpt_path=/tmp/x/checkpoints/last.ckpt",
        "+tricks.ema_decay=0.999",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "dataset.path=/data/faces",
    ]
    choices = {"model": "gan", "dataset": "ring", "loss": "wgan_gp"}
    expected = (
        "model=gan,dataset=ring,seed=1,loss=wgan_gp,dataset.path=_data_faces,optimizer.lr=1e-4,tricks.ema_decay=0.999"
    )
    assert run_description(overrides, choices) == expected
    assert run_description(list(reversed(overrides)), choices) == expected  # typed order does not matter
    assert run_description([], {"model": "dcgan", "dataset": "digits"}, seed=0) == "model=dcgan,dataset=digits,seed=0"


def test_a_single_run_is_named_by_model_dataset_seed_and_start_time(hydra_job, tmp_path):
    cfg = hydra_job("model=gan", "dataset=ring", "steps=200")
    name = tensorboard_run_name(tmp_path / "run", cfg)
    assert re.fullmatch(r"model=gan,dataset=ring,seed=0" + TIME, name), name
    cfg = hydra_job()  # the default run: its default choices and seed still name it
    assert re.fullmatch(r"model=dcgan,dataset=digits,seed=0" + TIME, tensorboard_run_name(tmp_path / "run", cfg))


def test_a_resume_with_more_steps_continues_its_folder_and_a_changed_setting_starts_a_new_run(hydra_job, tmp_path):
    run_dir = tmp_path / "run"
    cfg = hydra_job("model=gan", "dataset=ring", "steps=200")
    first = tensorboard_run_name(run_dir, cfg)
    write_events(run_dir / "tensorboard" / first)
    cfg = hydra_job("model=gan", "dataset=ring", "steps=400", f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    assert tensorboard_run_name(run_dir, cfg) == first  # the same run, trained longer: its curves go on
    cfg = hydra_job("model=gan", "dataset=ring", "steps=400", "optimizer.lr=1e-4")
    changed = tensorboard_run_name(run_dir, cfg)
    assert re.fullmatch(r"model=gan,dataset=ring,seed=0,optimizer.lr=1e-4" + TIME, changed), changed


def test_folders_named_by_overrides_are_continued_only_while_their_steps_hold(hydra_job, tmp_path):
    run_dir = tmp_path / "run"
    write_events(run_dir / "tensorboard" / "dataset=ring,model=gan,steps=200")
    cfg = hydra_job("model=gan", "dataset=ring", "steps=200")
    assert tensorboard_run_name(run_dir, cfg) == "dataset=ring,model=gan,steps=200"
    cfg = hydra_job("model=gan", "dataset=ring", "steps=400")
    assert re.fullmatch(r"model=gan,dataset=ring,seed=0" + TIME, tensorboard_run_name(run_dir, cfg))

    # A sweep job logs into JOB/tensorboard/ itself, named by its job folder.
    job = tmp_path / "sweep" / "dataset=ring,model=gan,seed=0,steps=20"
    write_events(job / "tensorboard")
    assert tensorboard_run_name(job, hydra_job("model=gan", "dataset=ring", "steps=20")) == ""
    resumed = tensorboard_run_name(job, hydra_job("model=gan", "dataset=ring", "steps=40"))
    assert re.fullmatch(r"model=gan,dataset=ring,seed=0" + TIME, resumed), resumed


def test_sweep_jobs_are_named_by_their_job_folders_and_runs_outside_hydra_continue(hydra_job, tmp_path):
    from hydra.types import RunMode

    cfg = hydra_job("model=gan", "dataset=ring")
    with read_write(HydraConfig.instance().cfg.hydra):
        HydraConfig.instance().cfg.hydra.mode = RunMode.MULTIRUN
    assert tensorboard_run_name(tmp_path / "job", cfg) == ""
    HydraConfig.instance().cfg = None
    run_dir = tmp_path / "run"
    assert tensorboard_run_name(run_dir) == ""
    write_events(run_dir / "tensorboard" / "older")
    write_events(run_dir / "tensorboard" / "newer")
    older = next((run_dir / "tensorboard" / "older").glob("events.*"))
    older.touch()  # written last
    assert tensorboard_run_name(run_dir) == "older"


QUIET = [
    "threads=1",
    "accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]
# Sample grids every 5 G updates (images in TensorBoard); no landscape pictures (slower to draw).
TINY = [
    "model=gan",
    "dataset=ring",
    "steps=10",
    "callbacks.samples.every_n_steps=5",
    "callbacks.landscape=null",
    "callbacks.landscape_timelapse=null",
    *QUIET,
]


def ganrun(*overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ganrun", *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def event_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.mark.slow
def test_a_run_resumed_with_more_steps_keeps_one_tensorboard_run(tmp_path):
    run_dir = tmp_path / "run"
    finished(ganrun(*TINY, f"hydra.run.dir={run_dir}"))
    (first,) = [path.name for path in (run_dir / "tensorboard").iterdir()]
    assert re.fullmatch(r"model=gan,dataset=ring,seed=0" + TIME, first), first
    finished(ganrun(f"ckpt_path={run_dir}/checkpoints/last.ckpt", "steps=20", *QUIET))
    assert [path.name for path in (run_dir / "tensorboard").iterdir()] == [first]
    steps = [step for step, _ in event_scalars(run_dir / "tensorboard" / first, "loss/g")]
    assert steps == list(range(1, 21))  # one curve, every G update once
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"]["g_updates"] == 20.0


# ------------------------------------------------------------------ a real TensorBoard server
def tensorboard_executable() -> Optional[str]:
    """The ``tensorboard`` command of this environment (beside its Python), else on PATH."""
    beside = Path(sys.executable).with_name("tensorboard")
    return str(beside) if beside.is_file() else shutil.which("tensorboard")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TensorBoardServer:
    """``tensorboard --logdir DIR`` on a free local port, read through its HTTP data API."""

    def __init__(self, executable: str, logdir: Path, log_file: Path) -> None:
        self.port = free_port()
        self.log_file = log_file
        with log_file.open("w") as log:
            self.process = subprocess.Popen(
                [
                    executable,
                    "--logdir",
                    str(logdir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--load_fast=false",
                    "--reload_interval",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, route: str, **query: str) -> bytes:
        url = f"http://127.0.0.1:{self.port}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get_json(self, route: str, **query: str):
        return json.loads(self.get(route, **query))

    def post_json(self, route: str, body: dict):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_for_runs(self, expected: set[str], timeout_s: float = 90.0) -> None:
        """Until the server answers and has loaded every expected run (it loads in the background)."""
        deadline = time.monotonic() + timeout_s
        runs: set[str] = set()
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"tensorboard exited ({self.process.returncode}): {self.log_file.read_text()[-2000:]}"
            )
            try:
                runs = set(self.get_json("/data/runs"))
                if expected <= runs:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise AssertionError(
            f"tensorboard did not show {sorted(expected - runs)} within {timeout_s} s: {self.log_file.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        """Terminate the server by its PID and check that it is gone and its port closed."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        assert self.process.poll() is not None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", self.port)) != 0


def close(value: float, expected: float) -> bool:
    """TensorBoard keeps scalars as float32; result.json keeps float64."""
    return math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-7)


@pytest.mark.slow
def test_tensorboard_shows_scalars_samples_and_one_hparams_row_per_job(tmp_path):
    executable = tensorboard_executable()
    if executable is None:
        pytest.skip("the tensorboard executable is not installed (pip install tensorboard)")
    logdir = tmp_path / "logs"
    single, sweep = logdir / "single", logdir / "sweep"
    runs = [ganrun(*TINY, f"hydra.run.dir={single}"), ganrun("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")]
    for process in runs:
        finished(process)
    results = {
        f"single/tensorboard/{path.name}": json.loads((single / "result.json").read_text())
        for path in (single / "tensorboard").iterdir()
    }
    results |= {
        f"sweep/{path.parent.name}/tensorboard": json.loads(path.read_text()) for path in sweep.glob("*/result.json")
    }
    assert len(results) == 3 and all(result["status"] == "completed" for result in results.values())
    (single_run,) = [run for run in results if run.startswith("single/")]
    assert re.fullmatch(r"single/tensorboard/model=gan,dataset=ring,seed=0" + TIME, single_run), single_run

    server = TensorBoardServer(executable, logdir, tmp_path / "tensorboard.log")
    try:
        server.wait_for_runs(set(results))
        check_scalars(server, results)
        check_sample_images(server, results)
        check_hparams_rows(server, results)
    finally:
        server.stop()


def check_scalars(server: TensorBoardServer, results: dict[str, dict]) -> None:
    """Each run's training curves, and its hp/* numbers at its last G update, as result.json has them."""
    tags = server.get_json("/data/plugin/scalars/tags")
    for run, result in results.items():
        assert {"loss/d", "loss/g", "hp/metric", "hp/loss_d", "hp/loss_g"} <= set(tags[run]), tags[run]
        g_updates = int(result["metrics"]["g_updates"])
        curve = server.get_json("/data/plugin/scalars/scalars", run=run, tag="loss/g")
        assert [step for _, step, _ in curve] == list(range(1, g_updates + 1))
        assert close(curve[-1][2], result["metrics"]["loss/g"])
        for tag in ("hp/metric", "hp/loss_d", "hp/loss_g", "hp/modes_covered"):
            ((_, step, value),) = server.get_json("/data/plugin/scalars/scalars", run=run, tag=tag)
            assert step == g_updates and close(value, result["metrics"][tag]), (run, tag, value)


def check_sample_images(server: TensorBoardServer, results: dict[str, dict]) -> None:
    """The sample grids: one every 5 G updates and at the end, served as PNG."""
    tags = server.get_json("/data/plugin/images/tags")
    for run, result in results.items():
        assert "samples/generated" in tags[run], tags[run]
        images = server.get_json("/data/plugin/images/images", run=run, tag="samples/generated")
        assert [image["step"] for image in images] == [5, int(result["metrics"]["g_updates"])]
        query = dict(urllib.parse.parse_qsl(images[-1]["query"]))
        assert server.get("/data/plugin/images/individualImage", **query)[:8] == PNG_MAGIC


def check_hparams_rows(server: TensorBoardServer, results: dict[str, dict]) -> None:
    """HPARAMS: one row (session group) per run with its seed, planned steps and hp/* metrics."""
    experiment = server.post_json("/data/plugin/hparams/experiment", {"experimentName": ""})
    metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"hp/metric", "hp/loss_d", "hp/loss_g", "hp/modes_covered"} <= metric_tags
    request = {
        "experimentName": "",
        "startIndex": 0,
        "sliceSize": 100,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [
            {"hparam": "seed"},
            {"hparam": "steps"},
            *[{"metric": {"tag": tag, "group": ""}} for tag in sorted(metric_tags)],
        ],
    }
    groups = {
        group["name"]: group
        for group in server.post_json("/data/plugin/hparams/session_groups", request)["sessionGroups"]
    }
    assert set(groups) == set(results)
    for run, result in results.items():
        group = groups[run]
        seed = next((item.split("=")[1] for item in result["overrides"] if item.startswith("seed=")), "0")
        assert group["hparams"]["seed"] == float(seed) and group["hparams"]["steps"] == 10.0
        assert (group["hparams"]["model"], group["hparams"]["dataset"]) == ("gan", "ring")
        values = {value["name"]["tag"]: value for value in group["metricValues"]}
        for tag in ("hp/metric", "hp/loss_d", "hp/loss_g", "hp/modes_covered"):
            assert close(values[tag]["value"], result["metrics"][tag]), (run, tag)
            assert values[tag]["trainingStep"] == int(result["metrics"]["g_updates"])
    sweep_seeds = sorted(groups[run]["hparams"]["seed"] for run in results if run.startswith("sweep/"))
    assert sweep_seeds == [0.0, 1.0]
