"""CPU threads: threads= is applied, auto follows other processes' load, jobs side by side do not collapse."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
import torch
from fake_proc import FakeProc
from omegaconf import OmegaConf
from support import FAST, QUIET, ganrun

from ganrun.callbacks.threads import ThreadBalancer
from ganrun.runtime import threads
from ganrun.train import processes_on_node, train

TINY_RING = ["model=gan", "dataset=ring", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]"]


ME = os.getpid()
# Fake pids in the fake /proc trees below.
PARENT, SIBLING, WORKER, STRANGER = 3_900_001, 3_900_002, 3_900_003, 3_900_004


@pytest.fixture(autouse=True)
def auto_setting(monkeypatch):
    """No launcher's OMP_NUM_THREADS, no first-look pause, and GANRUN_RUN_PID restored afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "FIRST_LOOK_S", 0.0)
    monkeypatch.setenv(threads.RUN_PID, "")  # "" counts as unset; monkeypatch removes what a policy writes


class Load:
    """A meter for ``ThreadPolicy``: ``cores`` CPUs, of which ``others()`` are kept busy by other programs."""

    def __init__(self, cores: int, others) -> None:
        self.cpus = set(range(cores))
        self.others = others

    def others_busy(self) -> float:
        return self.others()


@pytest.mark.parametrize(
    "cores, others, processes, expected",
    [
        (2, None, 1, 2),
        (2, 0.4, 1, 2),
        (2, 1.0, 1, 1),
        (2, 3.5, 1, 1),  # 2 cores: beside a busy loop, 1
        (8, 1.0, 1, 7),  # a single-threaded busy loop leaves 7 of 8
        (8, 2.4, 1, 6),
        (8, 8.0, 1, 4),
        (8, 6.0, 1, 4),
        (4, 4.0, 1, 2),  # another run on all cores: half, not 1
        (4, 0.0, 2, 2),
        (8, 0.0, 2, 4),
        (8, 8.0, 2, 2),
        (3, 0.0, 4, 1),  # per process of a 2- or 4-process run
    ],
)
def test_fair_share_takes_the_free_cores_but_at_least_half(cores, others, processes, expected):
    assert threads.fair_share(cores, others, processes) == expected


def test_each_check_moves_the_count_by_one_thread():
    load = [0.0]
    policy = threads.ThreadPolicy("auto", meter=Load(8, lambda: load[0]))
    assert policy.start == 8
    load[0] = 8.0  # another run takes every core
    assert [policy.check() for _ in range(6)] == [7, 6, 5, 4, 4, 4]
    load[0] = 0.0  # and ends
    assert [policy.check() for _ in range(6)] == [5, 6, 7, 8, 8, 8]


@pytest.mark.parametrize(
    "cores, together, expected",
    [
        (4, True, (2, 2)),
        (4, False, (2, 2)),
        (8, True, (4, 4)),
        (8, False, (4, 4)),
        (5, True, (2, 2)),
        (5, False, (3, 2)),  # 5 cores: no swing into the last core from both sides
    ],
)
def test_two_auto_runs_converge_to_a_fair_split_without_swinging(cores, together, expected):
    """Each run's load as the other sees it is its thread count; both check at the same moments
    (the harder case: neither sees the other's move of this round)."""
    busy = {"a": 0, "b": 0}
    a = threads.ThreadPolicy("auto", meter=Load(cores, lambda: busy["b"]))
    if not together:
        busy["a"] = a.start  # b starts once a runs
    b = threads.ThreadPolicy("auto", meter=Load(cores, lambda: busy["a"]))
    busy.update(a=a.start, b=b.start)
    history = [(a.start, b.start)]
    for _ in range(3 * cores):
        moved = a.check(), b.check()
        busy.update(a=moved[0], b=moved[1])
        history.append(moved)
    assert history[-1] == expected, history
    assert history[-cores:] == [expected] * cores, history  # settled
    for run in (0, 1):  # each run only ever moves one way: no swing
        steps = [later[run] - earlier[run] for earlier, later in zip(history, history[1:])]
        assert all(step <= 0 for step in steps) or all(step >= 0 for step in steps), history
        assert all(abs(step) <= 1 for step in steps), history


def fake_host(tmp_path, cores: int, children_files: bool = True) -> tuple[FakeProc, set[int]]:
    """A 16-CPU host whose CPUs 0-7 another container keeps busy; this run may use ``cores`` of CPUs 8-15."""
    host = FakeProc(tmp_path / "proc", cpus=16, children_files=children_files).process(STRANGER)
    return host, set(range(8, 8 + cores))


@pytest.mark.parametrize("cores", [4, 8])
def test_load_meter_counts_only_the_cpus_of_its_affinity_mask(tmp_path, cores):
    host, mine = fake_host(tmp_path, cores)
    host.process(ME)
    meter = threads.LoadMeter(root=ME, cpus=mine, proc=str(host.root))
    host.run({STRANGER: list(range(8)), ME: sorted(mine)})  # the host's other CPUs are busy, ours are ours
    assert meter.others_busy() == 0.0
    host.run({STRANGER: list(range(8)) + [8], ME: sorted(mine - {8})})  # the stranger takes one of ours too
    assert meter.others_busy() == 1.0
    host.run({STRANGER: list(range(8))})
    policy = threads.ThreadPolicy("auto", meter=meter)
    assert policy.cores == cores and policy.start == cores


@pytest.mark.parametrize("children_files", [True, False])
def test_load_meter_leaves_out_the_runs_own_processes(tmp_path, children_files):
    host = FakeProc(tmp_path / "proc", cpus=4, children_files=children_files)
    host.process(STRANGER).process(ME).process(SIBLING, ppid=ME).process(WORKER, ppid=SIBLING)
    meter = threads.LoadMeter(root=ME, cpus=range(4), proc=str(host.root))
    assert meter.run_processes() == {ME, SIBLING, WORKER}
    host.run({ME: [0], SIBLING: [1], WORKER: [2]})  # a sibling rank and its dataloader worker are ours
    assert meter.others_busy() == 0.0
    host.exit(WORKER)  # its time moves to its parent's reaped-children time: still ours, not new load
    host.run({ME: [0], SIBLING: [1]})
    assert meter.others_busy() == 0.0
    host.run({ME: [0], SIBLING: [1], STRANGER: [2, 3]})
    assert meter.others_busy() == 2.0


@pytest.mark.parametrize("cores", [4, 8])
@pytest.mark.parametrize("rank", [None, 0, 1])  # None: a single-process run; 0, 1: the ranks of a 2-process run
def test_auto_on_a_pinned_host_keeps_the_runs_cores(tmp_path, monkeypatch, cores, rank):
    """Beside a busy host, a run whose own CPUs are idle but for itself keeps all of them, split among its ranks."""
    host, mine = fake_host(tmp_path, cores)
    processes = 1 if rank is None else 2
    if rank == 1:  # started by rank 0 (PARENT), which passed on its pid
        host.process(PARENT).process(ME, ppid=PARENT)
        monkeypatch.setenv(threads.RUN_PID, str(PARENT))
        sibling = PARENT
    elif rank == 0:  # it starts rank 1 (SIBLING)
        host.process(ME).process(SIBLING, ppid=ME)
        sibling = SIBLING
    else:
        host.process(ME)
    cpus = sorted(mine)
    load = {STRANGER: list(range(8)), ME: cpus[: cores // processes]}
    if rank is not None:
        load[sibling] = cpus[cores // processes :]
    meter = threads.LoadMeter(root=threads.run_root(processes, proc=str(host.root)), cpus=mine, proc=str(host.root))
    host.run(load)
    policy = threads.ThreadPolicy("auto", processes_on_node=processes, meter=meter)
    checks = []
    for _ in range(5):
        host.run(load)
        checks.append(policy.check())
    assert (policy.start, checks) == (cores // processes, [cores // processes] * 5)


def test_the_runs_first_process_is_found_by_its_ranks(tmp_path, monkeypatch):
    host = FakeProc(tmp_path / "proc", cpus=2).process(PARENT).process(ME, ppid=PARENT).process(STRANGER)
    proc = str(host.root)
    assert threads.run_root(1, proc=proc) == ME and os.environ[threads.RUN_PID] == ""  # alone: itself
    assert threads.run_root(2, proc=proc) == ME and os.environ[threads.RUN_PID] == str(ME)  # rank 0 passes it on
    monkeypatch.setenv(threads.RUN_PID, str(PARENT))
    assert threads.run_root(2, proc=proc) == PARENT  # a rank started by PARENT
    monkeypatch.setenv(threads.RUN_PID, str(STRANGER))  # left over from an unrelated program: not ours
    assert threads.run_root(2, proc=proc) == ME and os.environ[threads.RUN_PID] == str(ME)
    container = FakeProc(tmp_path / "container", cpus=2).process(1, ppid=0).process(ME, ppid=1)
    monkeypatch.setenv(threads.RUN_PID, "1")  # rank 0 is a container's first process
    assert threads.run_root(2, proc=str(container.root)) == 1


def test_a_rank_it_starts_finds_the_run_on_the_real_proc():
    """Real /proc: a rank started the way Lightning starts one (a child with the first process's
    environment) takes that process as the run's root, and its meter counts both as the run's."""
    assert threads.run_root(2) == ME  # the first process of a 2-process run
    code = (
        "import json, os; from ganrun.runtime import threads; root = threads.run_root(2); "
        "print(json.dumps([root, os.getpid(), sorted(threads.LoadMeter(root=root).run_processes())]))"
    )
    root, rank, run = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert root == ME and {ME, rank} <= set(run), (root, rank, run)


def test_load_meter_sees_a_busy_process_beside_it():
    """On the real /proc: a busy loop that is not this process's descendant counts as other load."""
    meter = threads.LoadMeter()
    loop = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    subprocess.run(["sh", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(loop)} &"], check=True)  # orphaned
    time.sleep(0.3)
    meter.others_busy()  # start the window once the loop runs
    time.sleep(1.0)
    others = meter.others_busy()
    assert others is not None and others >= 0.6, others


def test_an_explicit_omp_num_threads_wins_over_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    policy = threads.ThreadPolicy("auto")
    assert policy.start == 3 and not policy.adaptive


def test_processes_on_node_counts_the_ranks_of_a_cpu_run():
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
    cfg = make_config(
        *FAST, *TINY_RING, "steps=3", f"threads={setting}", f"+callbacks.probe={{_target_:{__name__}.ThreadProbe}}"
    )
    train(cfg)
    assert set(ThreadProbe.seen) == {setting}
    assert torch.get_num_threads() == before  # the caller's count is restored
    with open(os.path.join(cfg.run_dir, "environment.json")) as file:
        record = json.load(file)
    assert record["threads"]["setting"] == setting and record["threads"]["start"] == setting


def test_auto_drops_to_the_free_cores_when_load_appears(make_config, monkeypatch):
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr("ganrun.callbacks.threads.CHECK_EVERY_S", 0.0)
    loads = iter([0.0] + [1.0] * 1000)  # idle at the start, then another process takes a core
    monkeypatch.setattr(threads, "LoadMeter", lambda **_: Load(2, lambda: next(loads)))
    ThreadProbe.seen = []
    cfg = make_config(
        *FAST, *TINY_RING, "steps=4", "threads=auto", f"+callbacks.probe={{_target_:{__name__}.ThreadProbe}}"
    )
    train(cfg)
    assert ThreadProbe.seen[-1] == 1


def test_wait_policy_is_set_before_torch_loads_unless_the_user_chose():
    code = (
        "import os, ganrun.commands.cli, sys; e = os.environ.get; "
        "print(e('GOMP_SPINCOUNT', '-'), e('KMP_BLOCKTIME', '-'), e('OMP_WAIT_POLICY', '-'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}

    def seen(**extra):
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**env, **extra}, check=True
        ).stdout.split()

    assert seen() == ["100000", "1", "-", "False"]
    assert seen(OMP_WAIT_POLICY="ACTIVE") == ["-", "-", "ACTIVE", "False"]  # the user's policy is left alone
    assert seen(GOMP_SPINCOUNT="7", KMP_BLOCKTIME="50") == ["7", "50", "-", "False"]


@pytest.mark.slow
def test_two_runs_at_once_are_not_pathologically_slow(tmp_path):
    """Loose, CI-safe bound: side by side each run's training takes < 4x its time alone
    (before the thread policy: 10-30x). The tight targets are benchmarks (scripts/bench_contention.py --case pair)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    args = [
        *(arg for arg in QUIET if not arg.startswith("threads=")),
        "model=dcgan",
        "steps=40",
        "callbacks=none",
        "logger=none",
    ]

    def training_seconds(run_dir) -> float:
        return json.loads((run_dir / "result.json").read_text())["metrics"]["wall_time_s"]

    ganrun(*args, f"hydra.run.dir={tmp_path / 'alone'}", env=env)
    alone = training_seconds(tmp_path / "alone")
    command = [sys.executable, "-m", "ganrun", *args]
    pair = [
        subprocess.Popen(
            [*command, f"hydra.run.dir={tmp_path / name}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    for process in pair:
        assert process.wait(timeout=600) == 0, process.stderr.read()
    for name in ("a", "b"):
        assert training_seconds(tmp_path / name) < 4 * alone, (name, training_seconds(tmp_path / name), alone)
