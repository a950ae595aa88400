"""When things go wrong: bad input, hard kills, resumes, divergence, reproducibility, bad checkpoints.

Each test asserts what the user sees (one line, exit status) and that what was
already on disk is intact afterwards.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from typing import Optional, Sequence

import pytest
import torch
from omegaconf import OmegaConf
from support import FAST, QUIET, TINY_GAN, assert_one_line_error, ganrun, sample, scalars

from ganrun.commands.sample import load_generator
from ganrun.config.checks import check_arguments, check_config
from ganrun.errors import ConfigError, TrainingDiverged
from ganrun.records.checkpoints import load_checkpoint
from ganrun.train import train

SMALL_GAN = ["model=gan", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]", "model.z_dim=4"]


def counters(ckpt) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["ganrun_counters"]


def g_weights(ckpt) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("generator.")}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dataset.image_size=abc"], "dataset.image_size=abc is not valid"),
        (["tricks.label_smoothing=1.0"], r"tricks.label_smoothing=1.0 is not valid; it must be a number in \[0, 1\)"),
        (["optimizer.lr_g=-1"], "optimizer.lr_g=-1 is not valid; it must be null or a positive number"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
        (["model.z_dim=0"], "model.z_dim=0 is not valid"),
    ],
)
def test_schema_names_the_key_the_value_and_what_is_allowed(make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(make_config(*overrides))


class _Target:
    def __init__(
        self,
        *,
        rate: float = 0.1,
        width: int = 8,
        flag: bool = False,
        cap: Optional[float] = None,
        sizes: Sequence[int] = (1,),
        name="x",
    ) -> None:
        pass


@pytest.mark.parametrize(
    "values,message",
    [
        ({"rate": "abc"}, "node.rate=abc is not valid; it must be a number"),
        ({"width": 1.5}, "node.width=1.5 is not valid; it must be an integer"),
        ({"flag": "yes"}, "node.flag=yes is not valid; choose true or false"),
        ({"cap": "big"}, "node.cap=big is not valid; it must be null or a number"),
        ({"rate": "${node.name}", "name": "abc"}, "node.rate=abc is not valid"),
    ],
)
def test_a_targets_own_signature_types_its_keys(values, message):
    node = OmegaConf.create({"node": {"_target_": "x", **values}}).node
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_arguments(node, _Target)


def test_a_targets_signature_admits_what_it_declares():
    node = OmegaConf.create(
        {
            "node": {
                "_target_": "x",
                "rate": 2,
                "width": 3,
                "flag": True,
                "cap": None,
                "sizes": [1, 2],
                "name": 5,
                "other": "abc",
            }
        }
    ).node
    check_arguments(node, _Target)  # an int for a float, any value for an unannotated or unknown key


def test_every_shipped_option_passes_the_schema(make_config):
    from support import group_options

    for group in ("model", "loss", "dataset", "experiment"):
        for option in group_options(group):
            check_config(make_config(f"{group}={option}"))


# ---------------------------------------------------------------------------- loading
def test_load_checkpoint_refuses_what_is_not_a_ganrun_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="is a directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot be read .*0 bytes\): truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "empty.ckpt")
    torch.save({"state_dict": {}, "ganrun": {"config": {}}}, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match="incomplete: missing ganrun.data_shape"):
        load_checkpoint(tmp_path / "old.ckpt")


def test_sample_command_on_an_empty_file_and_a_directory(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert_one_line_error(sample("ckpt=empty.ckpt", "n=2", "out=x.pt", cwd=tmp_path, check=False), "truncated")
    assert_one_line_error(sample(f"ckpt={tmp_path}", "n=2", "out=x.pt", cwd=tmp_path, check=False), "is a directory")
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------- interruption, resume
KILL_DURING_SECOND_SAVE = r"""
import os, sys, time, io, torch
import lightning_fabric.plugins.io.torch_io as torch_io
real_save, calls = torch_io._atomic_save, []
def save_then_hang(checkpoint, path):
    calls.append(path)
    if len(calls) == 2:  # write half of the second checkpoint, then wait for SIGKILL
        buffer = io.BytesIO(); torch.save(checkpoint, buffer); data = buffer.getvalue()
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2]); handle.flush(); os.fsync(handle.fileno())
        open(os.environ["GANRUN_TEST_MARKER"], "w").close()
        time.sleep(600)
    real_save(checkpoint, path)
torch_io._atomic_save = save_then_hang
from ganrun.commands.cli import train_main
train_main()
"""


@pytest.mark.slow
def test_kill_9_during_a_save_keeps_the_previous_checkpoint_and_resume_finishes_the_run(tmp_path):
    common = [
        *QUIET,
        *TINY_GAN,
        "dataset=ring",
        "seed=2",
        "steps=6",
        "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_steps=2",
        "callbacks.samples.every_n_steps=0",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ganrun(*common, f"hydra.run.dir={straight}")

    marker = tmp_path / "saving"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_DURING_SECOND_SAVE, *common, f"hydra.run.dir={killed}"],
        env={**os.environ, "GANRUN_TEST_MARKER": str(marker)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()[1][-2000:]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)

    last, partial = killed / "checkpoints" / "last.ckpt", killed / "checkpoints" / "last.ckpt.partial"
    assert load_checkpoint(last)["ganrun_counters"]["g_updates"] == 2  # the save before the kill
    with pytest.raises(ConfigError, match="truncated"):
        load_checkpoint(partial)  # the half-written one never replaced it

    # An explicit ckpt_path inside a run directory resumes *in* that directory.
    resumed = ganrun(*common, f"ckpt_path={last}", cwd=tmp_path)
    assert f"run directory {killed}" in resumed.stdout
    assert not (tmp_path / "runs").exists() and not partial.exists()
    assert counters(last) == {"g_updates": 6, "batches_done": 6}
    a, b = g_weights(straight / "checkpoints" / "last.ckpt"), g_weights(last)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert [step for step, _ in scalars(killed, "loss/g")] == [1, 2, 3, 4, 5, 6]


def test_ckpt_path_last_starts_a_run_then_continues_it(make_config, tmp_path):
    run = tmp_path / "run"
    common = [*FAST, *SMALL_GAN, "dataset=ring", "ckpt_path=last", "callbacks.samples.every_n_steps=0"]
    assert train(make_config(*common, "steps=3"))["g_updates"] == 3  # nothing to resume: a fresh run
    assert train(make_config(*common, "steps=5"))["g_updates"] == 5  # resumed from RUN/checkpoints/last.ckpt
    assert counters(run / "checkpoints" / "last.ckpt")["g_updates"] == 5
    environment = json.loads((run / "environment.json").read_text())
    assert environment["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert environment["earlier_starts"][0]["resumed_from"] is None


def test_resume_after_a_hard_kill_logs_every_step_once(make_config, tmp_path):
    """A run killed after its checkpoint at step 4 had logged steps 5-6: the resume replays them."""
    import shutil

    run = tmp_path / "run"
    common = [*FAST, *SMALL_GAN, "dataset=ring", "seed=4", "callbacks.samples.every_n_steps=0"]
    train(make_config(*common, "steps=4"))
    shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "step4.ckpt")
    train(make_config(*common, "steps=6", "ckpt_path=last"))  # logged 5, 6, then "killed"
    before_kill = dict(scalars(run, "loss/g"))
    train(make_config(*common, "steps=8", f"ckpt_path={tmp_path / 'step4.ckpt'}"))
    after = scalars(run, "loss/g")
    assert [step for step, _ in after] == list(range(1, 9))
    assert dict(after)[5] == pytest.approx(before_kill[5])  # the replayed step, same value (same seed)


def test_resuming_with_other_networks_names_the_differing_keys(make_config, tmp_path):
    common = [*FAST, "dataset=ring", "model=gan", "model.z_dim=4", "callbacks.samples.every_n_steps=0"]
    train(make_config(*common, "model.generator.hidden=[16]", "model.discriminator.hidden=[16]", "steps=1"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    cfg = make_config(
        *common, "model.generator.hidden=[32]", "model.discriminator.hidden=[16]", "steps=2", f"ckpt_path={ckpt}"
    )
    with pytest.raises(
        ConfigError, match=r"does not fit this run's networks .*shape.*model.generator.hidden=\[16\] \(now \[32\]\)"
    ):
        train(cfg)
    assert ckpt.read_bytes() == before


def test_resuming_from_a_truncated_checkpoint_is_refused(make_config, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x02not really")
    with pytest.raises(ConfigError, match="truncated or not a checkpoint"):
        train(make_config(*FAST, *SMALL_GAN, "dataset=ring", "steps=1", f"ckpt_path={bad}"))


# ------------------------------------------------------------------- divergence guard
def inject_nan_at(monkeypatch, step: int, where: str) -> None:
    """Make G update ``step`` poison G's loss (and so its weights) or one of D's weights."""
    from ganrun.training.module import GANModule

    original = GANModule._g_step

    def g_step(self, n, labels, opt_g, logging):
        if self.g_updates + 1 == step and where == "loss":
            original_loss = self.objective.g_loss
            self.objective.g_loss = lambda *, fake_out: original_loss(fake_out=fake_out) * float("nan")
            try:
                return original(self, n, labels, opt_g, logging)
            finally:
                self.objective.g_loss = original_loss
        stats = original(self, n, labels, opt_g, logging)
        if self.g_updates + 1 == step and where == "weight":
            with torch.no_grad():
                next(self.discriminator.parameters()).view(-1)[0] = float("inf")
        return stats

    monkeypatch.setattr(GANModule, "_g_step", g_step)


@pytest.mark.parametrize("where,fragment", [("loss", "loss/g is nan"), ("weight", "weight discriminator.")])
def test_nan_at_step_k_stops_there_and_keeps_the_last_good_checkpoint(
    make_config, tmp_path, monkeypatch, where, fragment
):
    inject_nan_at(monkeypatch, step=5, where=where)
    cfg = make_config(*FAST, *SMALL_GAN, "dataset=ring", "steps=20", "callbacks.last_checkpoint.every_n_steps=2")
    with pytest.raises(TrainingDiverged) as caught:
        train(cfg)
    message = str(caught.value)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert message.startswith("training diverged at G update 5: ") and fragment in message
    assert "likely cause" in message and f"last good checkpoint: {ckpt} (G update 4)" in message
    assert "\n" not in message
    checkpoint = load_checkpoint(ckpt)
    assert checkpoint["ganrun_counters"]["g_updates"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    generator, _ = load_generator(str(ckpt))
    assert torch.isfinite(generator(torch.randn(3, 4))).all()
    assert [s for s, _ in scalars(tmp_path / "run", "loss/d")][-1] == 5


def test_warn_mode_goes_on_but_never_saves_poisoned_weights(make_config, tmp_path, monkeypatch):
    inject_nan_at(monkeypatch, step=5, where="loss")
    cfg = make_config(
        *FAST,
        *SMALL_GAN,
        "dataset=ring",
        "steps=8",
        "callbacks.last_checkpoint.every_n_steps=2",
        "callbacks.divergence.action=warn",
    )
    with pytest.warns(UserWarning) as caught:
        assert train(cfg)["g_updates"] == 8
    messages = [str(w.message) for w in caught]
    assert sum("training diverged at G update 5" in m for m in messages) == 1  # warned once
    assert any("not saving" in m and "not finite" in m for m in messages)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["ganrun_counters"]["g_updates"] == 4


def test_a_diverged_run_exits_3_with_one_line(tmp_path):
    result = ganrun(
        *QUIET,
        *TINY_GAN,
        "dataset=ring",
        "steps=20",
        "optimizer.lr=1e30",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.startswith("ganrun: error:")]
    assert len(lines) == 1 and "training diverged at G update 1: loss/" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # nothing poisoned was written


D_WINS = [
    *FAST,
    "model=gan",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[32]",
    "model.z_dim=4",
    "dataset=digits",
    "optimizer.lr_g=1e-9",
    "optimizer.lr_d=1e-2",
    "callbacks.samples.every_n_steps=0",
    "callbacks.divergence.patience=10",
]


def test_d_winning_completely_stops_the_run_naming_the_cause(make_config):
    with pytest.raises(
        TrainingDiverged,
        match=r"at G update \d+: D wins completely since G update \d+ .*for 10 G updates.*label_smoothing",
    ):
        train(make_config(*D_WINS, "steps=60"))


def test_d_winning_completely_only_warns_when_asked(make_config):
    with pytest.warns(UserWarning, match="D wins completely"):
        metrics = train(make_config(*D_WINS, "steps=30", "callbacks.divergence.action=warn"))
    assert metrics["g_updates"] == 30


# --------------------------------------------------------------------- reproducibility
def test_same_seed_same_losses_samples_and_weights(make_config, tmp_path):
    common = [
        *FAST,
        "model=dcgan",
        "model.generator.width=8",
        "model.discriminator.width=8",
        "model.z_dim=8",
        "dataset.image_size=8",
        "steps=4",
        "seed=9",
        "callbacks.samples.every_n_steps=2",
    ]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train(make_config(*common, run_dir=run))
    for tag in ("loss/d", "loss/g", "d/real", "d/fake"):
        assert scalars(runs[0], tag) == scalars(runs[1], tag), tag
    for name in ("step_0000002.png", "step_0000004.png"):
        assert (runs[0] / "samples" / name).read_bytes() == (runs[1] / "samples" / name).read_bytes()
    a, b = g_weights(runs[0] / "checkpoints" / "last.ckpt"), g_weights(runs[1] / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train(make_config(*[o for o in common if o != "seed=9"], "seed=10", run_dir=tmp_path / "c"))
    assert scalars(tmp_path / "c", "loss/g") != scalars(runs[0], "loss/g") and math.isfinite(other["loss/g"])


def test_each_run_records_its_environment(make_config, tmp_path):
    train(make_config(*FAST, *SMALL_GAN, "dataset=ring", "steps=1"))
    run = tmp_path / "run"
    environment = json.loads((run / "environment.json").read_text())
    assert environment["packages"]["torch"] == metadata.version("torch")
    assert environment["packages"]["ganrun"] and environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["argv"] == sys.argv
    repo = environment["git"]["ganrun"]
    if repo is not None:  # a source checkout: the commit of the code that ran
        head = subprocess.run(
            ["git", "-C", repo["root"], "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert repo["commit"] == head
    stored = load_checkpoint(run / "checkpoints" / "last.ckpt")["ganrun"]["environment"]
    assert stored["packages"] == environment["packages"]


def test_environment_outside_git_is_recorded_without_failing(tmp_path):
    from ganrun.runtime.environment import git_state

    assert git_state(tmp_path) is None
