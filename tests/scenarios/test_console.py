"""What a user sees: the G-update progress bar, no third-party noise, the end-of-run summary,
and the helper commands' --help, errors and outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ganrun.callbacks.progress import planned_g_updates
from ganrun.errors import TrainingDiverged
from ganrun.records.summary import Outcome, RunSummary, summary_lines

TINY_RING = [
    "accelerator=cpu",
    "model=gan",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "model.z_dim=4",
    "dataset=ring",
]
NOISE = ("litlogger", "LeafSpec", "Total FLOPs", "GPU available", "TPU available", "Epoch ")
COMMANDS = {"ganrun-sample": "sample_main", "ganrun-eval": "eval_main", "ganrun-report": "report_main"}


def command(name: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    code = f"from ganrun.commands.cli import {COMMANDS[name]}; {COMMANDS[name]}()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def console_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny run with the progress bar on (n_critic=2: the bar must count G updates, not batches)."""
    run_dir = tmp_path_factory.mktemp("console") / "run"
    args = [sys.executable, "-m", "ganrun", *TINY_RING, "steps=6", "n_critic=2", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


# ------------------------------------------------------------------ training console
def test_run_shows_g_updates_and_no_third_party_noise(console_run):
    _, result = console_run
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, (noise, output[-3000:])
    # the bar counts G updates out of steps (6), not D batches (12); (a bare "12/" can be in a tmp path)
    counts = re.findall(r"\b(\d+)/(\d+) \[", result.stdout)
    assert ("6", "6") in counts and {total for _, total in counts} == {"6"}, counts


def test_run_names_its_recipe_extras_once_at_its_start(console_run):
    """Inside the running Hydra job the recipe is composed with and without (recipe=paper):
    gan_ring's extras are listed, the command line's own keys are not."""
    _, result = console_run
    lines = result.stdout.replace("\r", "\n").splitlines()
    recipe = [line for line in lines if line.startswith("ganrun: recipe ")]
    assert len(recipe) == 1 and lines.index(recipe[0]) == 1, lines[:3]
    assert (
        recipe[0].startswith("ganrun: recipe gan_ring adds: ")
        and "terms.mine (weight 1 → 0 over 6 G updates)" in recipe[0]
    )
    assert "optimizer.lr=1e-3" in recipe[0] and "model.generator.batch_norm=false" in recipe[0]
    for given in ("steps=", "model.z_dim=", "model.generator.hidden=", "n_critic="):
        assert given not in recipe[0], recipe[0]
    assert "could not list" not in result.stderr


def test_summary_ends_the_run_and_names_its_files(console_run):
    run_dir, result = console_run
    lines = result.stdout.replace("\r", "\n").strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("ganrun: run "))
    summary = lines[start:]
    assert summary[0] == "ganrun: run completed"
    assert summary[1].split() == ["G", "updates", "6", "of", "6"]
    assert summary[-1].split() == ["run", "folder", str(run_dir.resolve())]  # the run folder is the last line
    files = {line.split()[0]: line.split()[-1] for line in summary}
    assert files["last.ckpt"] == str(run_dir.resolve() / "checkpoints" / "last.ckpt")
    assert Path(files["samples"]).is_file() and Path(files["samples"]).name == "step_0000006.png"
    assert files["best.ckpt"] == "written"  # "not written": a 6-step run is not evaluated


def test_a_diverged_run_ends_with_its_summary_too(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "ganrun",
        *TINY_RING,
        "steps=20",
        "optimizer.lr=1e30",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ganrun: run diverged") for line in lines), result.stdout
    assert "G updates    1 of 20" in result.stdout and "last.ckpt    not written" in result.stdout
    assert lines[-1].split() == ["run", "folder", str(run_dir.resolve())]
    assert result.stderr.strip().splitlines()[-1].startswith("ganrun: error: training diverged at G update 1")


def test_summary_lines_put_the_run_folder_last(tmp_path):
    outcome = Outcome(
        "completed",
        200,
        200,
        75.0,
        tmp_path,
        monitor="cfid",
        best=12.3456,
        best_step=200,
        files={"best.ckpt": tmp_path / "b.ckpt", "last.ckpt": None},
    )
    lines = summary_lines(outcome)
    assert lines[0] == "ganrun: run completed" and lines[-1].endswith(str(tmp_path.resolve()))
    assert "1 min 15 s" in lines[2]
    assert "12.35 at G update 200 (best; lower is better)" in lines[3]
    assert lines[5].split() == ["last.ckpt", "not", "written"]


@pytest.mark.parametrize(
    "exception,status",
    [
        (TrainingDiverged("x"), "diverged"),
        (KeyboardInterrupt(), "interrupted"),
        (RuntimeError("x"), "failed (RuntimeError)"),
    ],
)
def test_summary_on_exceptions_names_the_status(exception, status, tmp_path, capsys):
    module = SimpleNamespace(g_updates=7, max_g_updates=10, n_critic=1)
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[], num_training_batches=5, max_epochs=-1)
    summary = RunSummary(str(tmp_path))
    summary.on_exception(trainer, module, exception)
    assert summary.printed is None  # training had not started: the error line says it all
    summary.on_train_start(trainer, module)
    summary.on_exception(trainer, module, exception)
    assert summary.printed[0].startswith(f"ganrun: run {status}")
    assert summary.printed[1].split() == ["G", "updates", "7", "of", "10"]
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(str(tmp_path.resolve()))


def test_summary_says_interrupted_after_a_signal(tmp_path, capsys):
    module = SimpleNamespace(g_updates=3, max_g_updates=None, n_critic=2)
    signalled = SimpleNamespace(received_signal=15)
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[signalled], num_training_batches=8, max_epochs=3)
    summary = RunSummary(str(tmp_path))
    summary.on_train_start(trainer, module)
    summary.on_train_end(trainer, module)
    assert summary.printed[0].startswith("ganrun: run interrupted")
    assert summary.printed[1].split() == ["G", "updates", "3", "of", "12"]  # 3 epochs x 8 batches / n_critic 2


def test_planned_g_updates_follows_steps_else_epochs():
    trainer = SimpleNamespace(num_training_batches=10, max_epochs=4)
    assert planned_g_updates(trainer, SimpleNamespace(max_g_updates=25, n_critic=5)) == 25
    assert planned_g_updates(trainer, SimpleNamespace(max_g_updates=None, n_critic=5)) == 8
    assert (
        planned_g_updates(
            SimpleNamespace(num_training_batches=10, max_epochs=-1), SimpleNamespace(max_g_updates=None, n_critic=1)
        )
        is None
    )


# ------------------------------------------------------------------ small ones
@pytest.mark.parametrize(
    "override,message",
    [
        ("lr=1e-3", "lr is not a config key; did you mean optimizer.lr?"),  # matched on the last path component
        ("batchsize=8", "did you mean dataset.batch_size?"),
        ("steps=1e3", "steps=1e3 is not valid"),  # as typed, not Hydra's 1000.0
    ],
)
def test_command_line_mistakes_are_explained(override, message):
    from ganrun.config.command_line import prepare_overrides
    from ganrun.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        prepare_overrides([override])
    assert message in str(error.value)


# ------------------------------------------------------------------ helper commands
def test_ganrun_help_mentions_the_helper_commands():
    result = subprocess.run([sys.executable, "-m", "ganrun", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"  {name} ckpt=" in result.stdout or f"  {name} multirun/" in result.stdout, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_helper_help_prints_usage_and_exits_0(name):
    result = command(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}") and "example:" in result.stdout and not result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_helper_errors_name_their_own_command(name, tmp_path):
    folder = [str(tmp_path)] if name == "ganrun-report" else []
    result = command(name, *folder, "colour=red", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{name}: error: ") and "colour=" in lines[0]


@pytest.mark.slow
def test_sample_out_png_writes_a_grid_and_names_every_file(console_run, tmp_path):
    run_dir, _ = console_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    result = command("ganrun-sample", f"ckpt={ckpt}", "n=16", "out=s.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.pt")) and "a grid to s.png" in result.stdout

    result = command("ganrun-sample", f"ckpt={ckpt}", "n=16", "out=s.pt", "grid=g.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the tensors to s.pt" in result.stdout and "a grid to g.png" in result.stdout
    assert torch.load(tmp_path / "s.pt")["x"].shape == (16, 2)

    refused = command("ganrun-sample", f"ckpt={ckpt}", "n=16", "out=s.jpg", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "ganrun-sample: error: out=s.jpg is not valid; use FILE.pt or FILE.pth or FILE.png"
    )
    assert not (tmp_path / "s.jpg").exists()


@pytest.mark.slow
def test_eval_reports_ema_false_for_a_run_without_ema(console_run):
    run_dir, _ = console_run
    result = command("ganrun-eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["protocol"]["ema"] is False
