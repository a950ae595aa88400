"""ganrun's Python API (ganrun.run, load, evaluate): what the commands do, in this process,
leaving the caller's process as it found it."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import initialize_config_dir
from support import FAST, TINY_GAN, in_process
from support import ganrun as ganrun_command

import ganrun
from ganrun import api, config_dir
from ganrun.errors import ConfigError

TINY_RING = [*TINY_GAN, "dataset=ring", "logger=none"]
# last.ckpt, best.ckpt (the evaluation at the end of a short run) and an EMA of G.
WITH_CHECKPOINTS = [
    *FAST,
    *TINY_RING,
    "steps=20",
    "callbacks.evaluation.final_min_steps=1",
    "callbacks.landscape=null",
    "tricks.ema_decay=0.9",
]


def without_time(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if not key.endswith("time_s")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> api.RunResult:
    return ganrun.run(WITH_CHECKPOINTS, run_dir=tmp_path_factory.mktemp("api") / "run")


@pytest.fixture
def caller_threads():
    """The test process's torch thread count, put back after a test whose commands set it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_import_ganrun_loads_neither_torch_nor_hydra():
    code = "import sys, ganrun; ganrun.ConfigError; print('torch' in sys.modules, 'hydra' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "False"]
    assert {"run", "load", "evaluate", "RunResult", "LoadedGenerator", "ConfigError"} <= set(dir(ganrun))


def test_two_runs_in_one_process_give_identical_metrics(tmp_path):
    overrides = [*FAST, *TINY_RING, "steps=30", "callbacks=none", "seed=3"]
    first = ganrun.run(overrides, run_dir=tmp_path / "first")
    second = ganrun.run(overrides, run_dir=tmp_path / "second")
    assert first.run_dir == tmp_path / "first" and first.status == "completed" and first.metrics["g_updates"] == 30
    assert "loss/g" in first.metrics and without_time(first.metrics) == without_time(second.metrics)
    assert json.loads((first.run_dir / "result.json").read_text())["metrics"] == first.metrics
    assert first.last_checkpoint is None and first.best_checkpoint is None  # callbacks=none writes none


def test_a_run_trains_and_records_what_the_command_does(tmp_path):
    overrides = [*FAST, *TINY_RING, "steps=30", "callbacks=none", "seed=3"]
    result = ganrun.run(overrides, run_dir=tmp_path / "api")
    ganrun_command(*overrides, f"hydra.run.dir={tmp_path / 'command'}")
    record, command = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("api", "command"))
    assert without_time(result.metrics) == without_time(command["metrics"])
    assert record["metrics"] == result.metrics
    for key in ("status", "overrides", "error", "world_size", "num_nodes"):
        assert record[key] == command[key], key
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (tmp_path / "api" / ".hydra" / name).read_text() == (
            tmp_path / "command" / ".hydra" / name
        ).read_text().replace(str(tmp_path / "command"), str(tmp_path / "api"))


def caller_state() -> dict:
    """What a run must leave as it found it, in comparable form."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    numpy_state = np.random.get_state()
    return {
        "cwd": os.getcwd(),
        "environment": dict(os.environ),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "random": random.getstate(),
        "numpy": (numpy_state[1].tolist(), numpy_state[2:]),
        "torch": torch.get_rng_state().tolist(),
        "lightning_level": logging.getLogger("lightning.pytorch").level,
        "root_handlers": list(logging.getLogger().handlers),
        "warning_filters": list(warnings.filters),
        "global_hydra": GlobalHydra.instance().hydra,
        "hydra_config": HydraConfig.instance().cfg,
        "hydra_job_name": JobRuntime.instance().get("name"),
    }


def test_a_run_leaves_the_callers_process_as_it_was(tmp_path, monkeypatch, caller_threads):
    monkeypatch.chdir(tmp_path)
    lightning = logging.getLogger("lightning.pytorch")
    monkeypatch.setattr(lightning, "level", logging.DEBUG)  # ganrun quiets it to WARNING during a run
    torch.set_num_threads(3)  # the run trains with threads=1
    random.seed(11), np.random.seed(11), torch.manual_seed(11)  # the run seeds them all with seed=0
    before = caller_state()
    assert before["global_hydra"] is None and before["hydra_config"] is None

    result = ganrun.run([*FAST, *TINY_RING, "steps=5", "callbacks=none"])

    assert caller_state() == before
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="caller"):  # a caller's own Hydra
        inside = caller_state()
        ganrun.run([*FAST, *TINY_RING, "steps=5", "callbacks=none"])
        assert caller_state() == inside and inside["global_hydra"] is not None
    # The default run folder: runs/DATE/TIME below the working directory, as the command's.
    assert result.run_dir.parent.parent == tmp_path / "runs" and (result.run_dir / "result.json").is_file()


def test_default_run_folders_are_new_even_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = api.fresh_run_dir()
    first.mkdir(parents=True)
    second = api.fresh_run_dir()
    assert second != first and not second.exists() and second.parent.parent == Path("runs")


@pytest.mark.parametrize("overrides", [["model=gann"], ["steps=-5"], ["ckpt_path=/nonexistent/last.ckpt"]])
def test_bad_input_raises_the_commands_one_line_and_writes_nothing(overrides, tmp_path):
    command = in_process("train_main", *FAST, *overrides, f"hydra.run.dir={tmp_path / 'command'}", cwd=tmp_path)
    lines = command.stderr.strip().splitlines()
    assert command.returncode == 2 and len(lines) == 1 and lines[0].startswith("ganrun: error: ")
    with pytest.raises(ConfigError) as raised:
        ganrun.run([*FAST, *overrides], run_dir=tmp_path / "api")
    assert str(raised.value) == lines[0].removeprefix("ganrun: error: ")
    assert not (tmp_path / "api").exists()


@pytest.mark.parametrize(
    "overrides,run_dir,fragment",
    [
        (["-m", "steps=3,4"], None, "-m is a flag of the ganrun command"),
        (["hydra.run.dir=elsewhere"], "here", "run_dir and hydra.run.dir both given"),
        (["accelerator=ddp_cpu"], "here", "accelerator=ddp_cpu with trainer.devices=2 starts several processes"),
    ],
)
def test_what_only_the_command_can_run_is_refused_before_anything_is_written(
    overrides, run_dir, fragment, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=fragment):
        ganrun.run([*FAST, *TINY_RING, "steps=3", *overrides], run_dir=run_dir)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="list of strings"):
        ganrun.run("model=gan steps=3")


def test_resume_through_the_api_continues_in_the_run_folder(tmp_path):
    half = ganrun.run([*FAST, *TINY_RING, "steps=10", "callbacks.landscape=null"], run_dir=tmp_path / "run")
    resumed = ganrun.run([f"ckpt_path={half.last_checkpoint}", "steps=20"])  # the run's overrides, then these
    assert resumed.run_dir == half.run_dir and resumed.last_checkpoint == half.last_checkpoint
    assert resumed.metrics["g_updates"] == 20 and "loss/g" in resumed.metrics  # logged every step: FAST was stored
    assert json.loads((half.run_dir / "result.json").read_text())["metrics"] == resumed.metrics
    assert ganrun.load(resumed.last_checkpoint).g_updates == 20
    assert list((half.run_dir / "samples").glob("step_0000020.png"))


def test_run_result_names_the_checkpoints(trained):
    assert trained.last_checkpoint == trained.run_dir / "checkpoints" / "last.ckpt"
    assert trained.best_checkpoint == trained.run_dir / "checkpoints" / "best.ckpt"
    assert trained.last_checkpoint.is_file() and trained.best_checkpoint.is_file()
    with pytest.raises(AttributeError):
        trained.metrics = {}  # frozen


def test_load_gives_the_generator_ready_to_sample(trained, tmp_path, caller_threads):
    rng = torch.get_rng_state()
    g = ganrun.load(trained.last_checkpoint)
    assert torch.equal(torch.get_rng_state(), rng)  # building G drew none of the caller's numbers
    assert isinstance(g.generator, torch.nn.Module) and not g.generator.training
    assert g.sample(16).shape == (16, 2) and g.g_updates == 20 and g.num_classes is None

    out = tmp_path / "samples.pt"
    in_process(
        "sample_main", f"ckpt={trained.last_checkpoint}", "n=8", f"out={out}", "seed=3", "threads=1", cwd=tmp_path
    )
    assert torch.equal(g.sample(8, seed=3), torch.load(out)["x"])  # seed=: ganrun-sample's samples
    assert not torch.equal(g.sample(8), g.sample(8))  # no seed: a fresh draw each time ...
    torch.manual_seed(1)
    first = g.sample(8)
    torch.manual_seed(1)
    assert torch.equal(g.sample(8), first)  # ... from torch's generator
    assert torch.equal(g(g.noise(4, seed=5)), g.sample(4, seed=5))
    with pytest.raises(ConfigError, match="labels given but this model is not class-conditional"):
        g.sample(4, labels=[0, 1, 2, 3])


def test_load_takes_the_ema_weights_where_the_run_kept_them(trained):
    state = torch.load(trained.last_checkpoint, weights_only=True)["state_dict"]
    averaged, trained_weights = ganrun.load(trained.last_checkpoint), ganrun.load(trained.last_checkpoint, ema=False)
    assert averaged.ema and not trained_weights.ema
    for name, value in averaged.generator.state_dict().items():
        assert torch.equal(value, state[f"generator_ema.module.{name}"])
        assert torch.equal(trained_weights.generator.state_dict()[name], state[f"generator.{name}"])
    assert not torch.equal(averaged.sample(8, seed=0), trained_weights.sample(8, seed=0))


def test_load_of_a_missing_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ganrun.load(tmp_path / "none.ckpt")


def test_evaluate_returns_what_ganrun_eval_prints(trained, tmp_path, caller_threads):
    torch.set_num_threads(3)
    result = ganrun.evaluate(trained.last_checkpoint, metrics=["modes_covered", "precision"], n=400, seed=2, threads=1)
    assert torch.get_num_threads() == 3  # evaluated with 1, the caller's count back after
    printed = in_process(
        "eval_main",
        f"ckpt={trained.last_checkpoint}",
        "metrics=modes_covered,precision",
        "n=400",
        "seed=2",
        "threads=1",
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    command = json.loads(printed.stdout.strip().splitlines()[-1])
    assert {"modes_covered", "precision", "g_updates", "protocol"} <= set(result)
    assert without_time(result) == without_time(command)
    with pytest.raises(ConfigError, match="metric 'cfid' does not apply to this run"):
        ganrun.evaluate(trained.last_checkpoint, metrics=["cfid"], threads=1)
    with pytest.raises(ConfigError, match="n=1 is not valid"):
        ganrun.evaluate(trained.last_checkpoint, n=1)
    with pytest.raises(ConfigError, match="threads=0 is not valid; choose auto or a positive integer"):
        ganrun.evaluate(trained.last_checkpoint, threads=0)
