"""CPU threads: threads= is applied, auto follows other processes' load, jobs side by side do not collapse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST
from ganrun import threads
from ganrun.callbacks.threads import ThreadBalancer
from ganrun.train import processes_on_node, train
from test_cli import QUIET, ganrun

TINY_RING = ["model=gan", "dataset=ring", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]"]


@pytest.mark.parametrize(
    "cores, others, expected", [(2, None, 2), (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.5, 1), (8, 2.4, 6)]
)
def test_free_cores_leaves_the_busy_cores_to_their_owners(cores, others, expected):
    assert threads.free_cores(cores, others) == expected


def test_load_meter_sees_a_busy_process_beside_it():
    meter = threads.LoadMeter()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    time.sleep(0.3)
    meter.others_busy()  # start the window once the loop runs
    time.sleep(1.0)
    others = meter.others_busy()
    busy.wait()
    assert others is not None and others >= 0.6, others


def test_an_explicit_omp_num_threads_wins_over_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    policy = threads.ThreadPolicy("auto")
    assert policy.start == 3 and not policy.adaptive


def test_auto_shares_the_cores_between_the_processes_of_a_run(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads.LoadMeter, "others_busy", lambda self: 0.0)
    assert threads.ThreadPolicy("auto", processes_on_node=2).start == 2
    assert processes_on_node(OmegaConf.create({"accelerator": "cpu", "devices": 2})) == 2
    assert processes_on_node(OmegaConf.create({"accelerator": "cpu", "devices": 1})) == 1


class ThreadProbe(ThreadBalancer.__mro__[1]):  # a plain Lightning callback
    seen: list = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        ThreadProbe.seen.append(torch.get_num_threads())


@pytest.mark.parametrize("setting", [1, 2])
def test_threads_key_is_applied_during_training_and_recorded(make_config, setting):
    before = torch.get_num_threads()
    ThreadProbe.seen = []
    cfg = make_config(*FAST, *TINY_RING, "steps=3", f"threads={setting}",
                      f"+callbacks.probe={{_target_:{__name__}.ThreadProbe}}")
    train(cfg)
    assert set(ThreadProbe.seen) == {setting}
    assert torch.get_num_threads() == before  # the caller's count is restored
    with open(os.path.join(cfg.run_dir, "environment.json")) as file:
        record = json.load(file)
    assert record["threads"]["setting"] == setting and record["threads"]["start"] == setting


def test_auto_drops_to_the_free_cores_when_load_appears(make_config, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr("ganrun.callbacks.threads.CHECK_EVERY_S", 0.0)
    loads = iter([0.0] + [1.0] * 1000)  # idle at the start, then another process takes a core
    monkeypatch.setattr(threads.LoadMeter, "others_busy", lambda self: next(loads))
    ThreadProbe.seen = []
    cfg = make_config(*FAST, *TINY_RING, "steps=4", "threads=auto", f"+callbacks.probe={{_target_:{__name__}.ThreadProbe}}")
    train(cfg)
    assert ThreadProbe.seen[-1] == 1


def test_wait_policy_is_set_before_torch_loads_unless_the_user_chose():
    code = ("import os, ganrun.cli, sys; e = os.environ.get; "
            "print(e('GOMP_SPINCOUNT', '-'), e('KMP_BLOCKTIME', '-'), e('OMP_WAIT_POLICY', '-'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}

    def seen(**extra):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, check=True).stdout.split()

    assert seen() == ["100000", "1", "-", "False"]
    assert seen(OMP_WAIT_POLICY="ACTIVE") == ["-", "-", "ACTIVE", "False"]  # the user's policy is left alone
    assert seen(GOMP_SPINCOUNT="7", KMP_BLOCKTIME="50") == ["7", "50", "-", "False"]


@pytest.mark.slow
def test_two_runs_at_once_are_not_pathologically_slow(tmp_path):
    """Loose, CI-safe bound: side by side each run's training takes < 4x its time alone
    (before the thread policy: 10-30x). The tight targets are benchmarks (scripts/bench.py --case pair)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    args = [*(arg for arg in QUIET if not arg.startswith("threads=")), "model=dcgan", "steps=40", "callbacks=none",
            "logger=none"]

    def training_seconds(run_dir) -> float:
        return json.loads((run_dir / "result.json").read_text())["metrics"]["wall_time_s"]

    ganrun(*args, f"hydra.run.dir={tmp_path / 'alone'}", env=env)
    alone = training_seconds(tmp_path / "alone")
    command = [sys.executable, "-m", "ganrun", *args]
    pair = [subprocess.Popen([*command, f"hydra.run.dir={tmp_path / name}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name in ("a", "b")]
    for process in pair:
        assert process.wait(timeout=600) == 0, process.stderr.read()
    for name in ("a", "b"):
        assert training_seconds(tmp_path / name) < 4 * alone, (name, training_seconds(tmp_path / name), alone)
