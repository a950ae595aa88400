"""What a new user meets first: refused input writes nothing, and a run resumes from its
checkpoint alone, with a refused resume leaving the run's records untouched."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import QUIET, assert_one_line_error, ganrun, in_process

from ganrun.config.resume import find_resume, merge


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_accelerator_gpu_without_one_is_refused_in_one_line(tmp_path):
    result = ganrun("accelerator=gpu", cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": ""}, check=False)
    assert result.returncode == 2
    assert_one_line_error(result, "ganrun: error: accelerator=gpu needs a GPU", "accelerator=cpu")
    assert list(tmp_path.iterdir()) == []


def records(run_dir: Path) -> dict[str, bytes]:
    """What a refused command must not touch: the run's .hydra/*.yaml and result.json, byte for byte."""
    paths = sorted((run_dir / ".hydra").glob("*.yaml")) + [run_dir / "result.json"]
    return {str(path): path.read_bytes() for path in paths}


@pytest.mark.slow
def test_an_interrupted_run_resumes_with_the_printed_command_and_refusals_change_nothing(tmp_path):
    """SIGTERM prints `resume with: ganrun ckpt_path=...`; refused resumes leave the records as they
    were; the printed command, run as printed, finishes the run with the config it was trained with."""
    run = tmp_path / "run"
    trained = [
        *QUIET,
        "model=gan",
        "model.z_dim=4",
        "model.generator.hidden=[16]",
        "model.discriminator.hidden=[16]",
        "dataset=ring",
        "seed=5",
        "steps=600",
        "tricks.mine_weight=0",
        "callbacks.last_checkpoint.every_n_steps=50",
        "callbacks.samples.every_n_steps=0",
        "trainer.log_every_n_steps=50",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "ganrun", *trained, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    stopped_at = json.loads((run / "result.json").read_text())["metrics"]["g_updates"]
    assert json.loads((run / "result.json").read_text())["status"] == "interrupted" and stopped_at < 600
    printed = stdout.split("resume with: ", 1)[1].splitlines()[0]
    assert shlex.split(printed) == ["ganrun", f"ckpt_path={ckpt}"]

    before = records(run)
    refusals = [
        ([f"ckpt_path={ckpt}", "model=dcgan"], ["was trained with model=gan", "model=dcgan does not fit it"]),
        (
            [f"ckpt_path={ckpt}", "model.generator.hidden=[32]"],
            [
                f"ckpt_path={ckpt} was trained with model=gan",
                "dataset=ring",
                "model.generator.hidden=[32] does not fit",
            ],
        ),
        (["ckpt_path=last", f"hydra.run.dir={run}", "model.z_dim=8"], ["model=gan", "model.z_dim=8 does not fit"]),
        ([f"ckpt_path={ckpt}", "optimizer.lr=-1"], ["optimizer.lr=-1 is not valid"]),
    ]
    for index, (args, fragments) in enumerate(refusals):
        if index == 0:  # end to end in a new process; the others in this one (same entry point, same output)
            result = ganrun(*args, cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": ""}, check=False)
        else:
            result = in_process("train_main", *args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": ""})
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert_one_line_error(result, "ganrun: error:", *fragments)
        assert "_target_" not in result.stderr and "Generator" not in result.stderr
        assert records(run) == before, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else created

    # Backstop: a refusal that only train() sees (preflight switched off here) keeps result.json as it was.
    without_preflight = (
        "import ganrun.config.preflight as p; p.preflight = lambda *a, **k: None; "
        "from ganrun.commands.cli import train_main; train_main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_preflight, f"ckpt_path={ckpt}", "model.z_dim=8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2 and "does not fit" in result.stderr, result.stderr[-2000:]
    assert (run / "result.json").read_bytes() == before[str(run / "result.json")]

    resumed = subprocess.run(
        [sys.executable, "-m", *shlex.split(printed)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"run directory {run}" in resumed.stdout
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["metrics"]["g_updates"] == 600  # the stored steps=600
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = checkpoint["ganrun"]["config"]
    assert config["model"]["z_dim"] == 4 and config["seed"] == 5 and config["model"]["generator"]["hidden"] == [16]
    assert config["dataset"]["_target_"].endswith("RingDataModule")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def fake_checkpoint(path: Path, overrides=None) -> None:
    """The smallest file ``load_checkpoint`` accepts, with or without stored overrides."""
    info = {"config": {}, "data_shape": [2], "num_classes": 0, "is_image": False}
    if overrides is not None:
        info["overrides"] = overrides
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "ganrun": info}, path)


def test_resume_reads_the_stored_overrides_then_the_hydra_record_of_older_checkpoints(tmp_path):
    new = tmp_path / "new" / "checkpoints" / "last.ckpt"
    fake_checkpoint(new, ["model=gan", "dataset=ring", "steps=10", "ckpt_path=old.ckpt"])
    resume = find_resume([f"ckpt_path={new}", "steps=20"], {"ckpt_path": str(new)})
    assert resume.overrides() == ["model=gan", "dataset=ring", f"ckpt_path={new}", "steps=20"]

    old = tmp_path / "old" / "checkpoints" / "last.ckpt"
    fake_checkpoint(old)
    (tmp_path / "old" / ".hydra").mkdir()
    (tmp_path / "old" / ".hydra" / "overrides.yaml").write_text("- model=lsgan\n- dataset=grid\n")
    resume = find_resume([f"ckpt_path={old}"], {"ckpt_path": str(old)})
    assert resume.overrides() == ["model=lsgan", "dataset=grid", f"ckpt_path={old}"]

    assert find_resume(["ckpt_path=last"], {"ckpt_path": "last", "hydra.run.dir": str(tmp_path / "none")}) is None


def test_merge_lets_the_command_line_replace_a_stored_key_and_keeps_added_keys_added():
    assert merge(["model=gan", "+extra=1", "steps=5"], ["steps=9", "extra=2", "model=lsgan"]) == [
        "steps=9",
        "+extra=2",
        "model=lsgan",
    ]
    assert merge(["model=gan", "seed=1"], ["seed=2"]) == ["model=gan", "seed=2"]
