"""launcher=slurm: what a job asks Slurm for, its refusals and job states (no cluster needed),
then sweeps, a run over two nodes and a preemption on a real two-node Slurm cluster on
this host (``slurm``-marked; scripts/slurm_cluster.sh, started by the ``slurm_cluster`` fixture)."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ganrun import config_dir
from ganrun.errors import ConfigError

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "threads=1"]
TINY_RING = [
    "model=gan",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "model.z_dim=4",
    "dataset=ring",
]
# Small requests: the test cluster's two nodes share this host's cores.
REQUEST = [
    "launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
PROBE = ["+callbacks.rank_probe._target_=rank_probe.RankProbe"]  # tests/rank_probe.py: each rank's weights


def compose_launcher(*overrides: str):
    GlobalHydra.instance().clear()
    import ganrun.commands.cli  # noqa: F401  (registers the resolvers, as the command does)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["launcher=slurm", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def launcher_request(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_launcher(*overrides).hydra.launcher, resolve=True)


# ----------------------------------------------------------------- the request
@pytest.mark.parametrize(
    "overrides,gpus,tasks",
    [
        ([], None, 1),  # accelerator=auto: a CPU job (a GPU run asks for one)
        (["accelerator=cpu"], None, 1),
        (["accelerator=ddp_cpu", "trainer.num_nodes=2", "trainer.devices=1"], None, 1),
        (["accelerator=gpu"], 1, 1),
        (["accelerator=ddp", "trainer.num_nodes=2", "trainer.devices=4"], 4, 4),
        (["accelerator=ddp_cpu"], None, 2),  # the accelerator's own two processes
    ],
    ids=["auto", "cpu", "ddp_cpu-2-nodes", "gpu", "ddp-2x4", "ddp_cpu-default"],
)
def test_gpus_are_requested_only_for_gpu_runs(overrides, gpus, tasks):
    request = launcher_request(*overrides)
    assert request["_target_"] == "hydra_plugins.ganrun_launchers.slurm.GanrunSlurmLauncher"
    assert request["gpus_per_node"] == gpus and request["tasks_per_node"] == tasks
    assert request["mem_gb"] == 8 * tasks and request["cpus_per_task"] == 4
    assert request["additional_parameters"] == {"signal": "TERM@120", "requeue": True}


def test_all_gpus_of_a_node_is_refused_in_one_line_naming_trainer_devices():
    """accelerator=ddp alone means every GPU of the node (trainer.devices=-1), which Slurm
    cannot be asked for: the request is refused, naming the key to set."""
    from ganrun.errors import ConfigError
    from ganrun.runtime.slurm.request import check_request

    request = launcher_request("accelerator=ddp")
    with pytest.raises(ConfigError, match=r"hydra.launcher.tasks_per_node=-1 \(it follows trainer.devices\)"):
        check_request(request)


def test_every_request_key_is_the_users_to_override():
    request = launcher_request(
        "accelerator=ddp",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.mem_gb=64",
        "hydra.launcher.cpus_per_task=16",
        "hydra.launcher.partition=a100",
        "hydra.launcher.account=lab",
        "hydra.launcher.timeout_min=60",
    )
    assert (request["gpus_per_node"], request["mem_gb"], request["cpus_per_task"]) == (None, 64, 16)
    assert (request["partition"], request["account"], request["timeout_min"]) == ("a100", "lab", 60)


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"tasks_per_node": -1}, "hydra.launcher.tasks_per_node=-1 (it follows trainer.devices) is not valid"),
        (
            {"nodes": 0},
            "hydra.launcher.nodes=0 (it follows trainer.num_nodes) is not valid; it must be a whole number >= 1",
        ),
        ({"cpus_per_task": 1.5}, "hydra.launcher.cpus_per_task=1.5 is not valid"),
        ({"mem_gb": -2}, "hydra.launcher.mem_gb=-2 is not valid"),
        ({"gpus_per_node": "all"}, "hydra.launcher.gpus_per_node=all is not valid"),
    ],
)
def test_a_request_sbatch_cannot_express_is_refused_in_one_line(change, fragment):
    from ganrun.runtime.slurm.request import check_request

    request = {**launcher_request(), **change}
    with pytest.raises(ConfigError) as refused:
        check_request(request)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    check_request(launcher_request("accelerator=ddp", "trainer.devices=2"))  # the defaults pass


def test_launcher_slurm_without_m_is_refused_before_anything_trains():
    from ganrun.config.command_line import prepare_overrides

    with pytest.raises(ConfigError, match=r"launcher=slurm starts sweep jobs, and only with -m: add -m"):
        prepare_overrides(["launcher=slurm", "model=gan", "dataset=ring"])


def test_launcher_slurm_without_its_plugin_names_the_extra(monkeypatch):
    from ganrun.config import command_line as overrides

    monkeypatch.setitem(overrides.SWEEP_LAUNCHERS, "slurm", "hydra_plugins.not_installed_here")
    with pytest.raises(ConfigError, match=r"needs Hydra's slurm launcher plugin: pip install 'ganrun\[slurm\]'"):
        overrides.prepare_overrides(["-m", "launcher=slurm", "model=gan"])
    monkeypatch.undo()
    assert overrides.prepare_overrides(["-m", "launcher=slurm", "model=gan"]) == ["-m", "launcher=slurm", "model=gan"]


def test_sbatch_parameters_map_launcher_keys_to_submitit():
    from ganrun.runtime.slurm.request import sbatch_parameters

    executor, sbatch = sbatch_parameters(
        {**launcher_request("accelerator=gpu"), "submitit_folder": "/s/%j", "partition": "gpu"}
    )
    assert executor == {"folder": "/s/%j", "slurm_max_num_timeout": 20}
    assert sbatch["gpus_per_node"] == 1 and sbatch["slurm_partition"] == "gpu" and sbatch["tasks_per_node"] == 1
    assert sbatch["slurm_additional_parameters"] == {"signal": "TERM@120", "requeue": True}
    _, cpu = sbatch_parameters({**launcher_request("hydra.launcher.gpus_per_node=0"), "submitit_folder": "/s"})
    assert cpu["gpus_per_node"] is None  # no --gpus-per-node line at all


def test_sbatch_refusal_is_sbatchs_own_message_in_one_line():
    from submitit.core.utils import FailedJobError

    from ganrun.runtime.slurm.queue import sbatch_refusal

    stderr = (
        "sbatch: error: invalid partition specified: nosuch\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    )
    error = FailedJobError(stderr)
    error.__cause__ = subprocess.CalledProcessError(1, ["sbatch", "/x.sh"], output="", stderr=stderr)
    assert (
        sbatch_refusal(error)
        == "invalid partition specified: nosuch; Batch job submission failed: Invalid partition name specified"
    )
    other = FailedJobError("x")
    other.__cause__ = subprocess.CalledProcessError(1, ["scontrol", "requeue", "3"], stderr="boom")
    assert sbatch_refusal(other) is None and sbatch_refusal(ValueError("no cause")) is None


# ----------------------------------------------------------------- job states without accounting
def test_queue_watcher_reads_squeue_and_never_calls_a_missing_accounting_twice(monkeypatch):
    from ganrun.runtime.slurm import queue

    calls = []
    squeue_output = "14_[1-2]|PENDING|||\n14_0|RUNNING|ganrun-node1|1|\n"

    def check_output(command, **kwargs):
        calls.append(command[0])
        if command[0] == "sacct":
            raise subprocess.CalledProcessError(1, command, stderr=b"Slurm accounting storage is disabled")
        return squeue_output.encode()

    monkeypatch.setattr(queue.subprocess, "check_output", check_output)
    watcher = queue.QueueWatcher()
    for job_id in ("14_0", "14_1", "14_2"):
        watcher.register_job(job_id)
    watcher.update()
    assert [watcher.get_state(j, mode="cache") for j in ("14_0", "14_1", "14_2")] == ["RUNNING", "PENDING", "PENDING"]
    assert queue.restarts(watcher.get_info("14_0", mode="cache")) == 1 and calls == ["squeue"]
    assert not watcher.is_done("14_0", mode="cache")

    squeue_output = "14_0|RUNNING|ganrun-node1|1|\n"  # 14_1 and 14_2 have left the controller's memory
    watcher.update()
    assert calls == ["squeue", "squeue", "sacct"]
    assert watcher.get_state("14_1", mode="cache") == queue.LEFT_QUEUE and watcher.is_done("14_1", mode="cache")
    squeue_output = ""  # and now 14_0
    watcher.update()
    assert calls == ["squeue", "squeue", "sacct", "squeue"]  # sacct asked once: no accounting here
    assert watcher.get_state("14_0", mode="cache") == queue.LEFT_QUEUE
    watcher.update()
    assert len(calls) == 4  # every job ended: nothing left to ask


def test_a_failed_squeue_keeps_the_known_states(monkeypatch):
    from ganrun.runtime.slurm import queue

    monkeypatch.setattr(queue.subprocess, "check_output", lambda *a, **k: b"7|RUNNING|n1|0|\n")
    watcher = queue.QueueWatcher()
    watcher.register_job("7")
    watcher.update()

    def unreachable(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], stderr=b"Unable to contact slurm controller")

    monkeypatch.setattr(queue.subprocess, "check_output", unreachable)
    watcher.update()
    assert watcher.get_state("7", mode="cache") == "RUNNING"


# ----------------------------------------------------------------- inside a job
def test_a_restarted_slurm_job_resumes_from_last(monkeypatch, tmp_path):
    from ganrun.runtime.slurm.job import resume_after_restart

    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert resume_after_restart(None, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resume_after_restart(None, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert resume_after_restart(None, tmp_path) == "last"
    # started from another run's checkpoint: before the job saved its own, that one ...
    assert resume_after_restart("/a/given.ckpt", tmp_path) == "/a/given.ckpt"
    # ... after, the job's own last.ckpt (going back would throw away its progress)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_after_restart("/a/given.ckpt", tmp_path) == "last"


def test_a_first_node_name_that_does_not_resolve_is_one_line_not_a_hang(monkeypatch):
    from ganrun.runtime.slurm.job import check_main_address

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "nosuchnode-ganrun[3-4]")
    with pytest.raises(
        ConfigError, match=r"slurm node name nosuchnode-ganrun3 \(the job's first node.*does not resolve"
    ):
        check_main_address()
    monkeypatch.setenv("SLURM_JOB_NODELIST", "localhost,nosuchnode-ganrun4")
    check_main_address()
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "nosuchnode-ganrun3")
    check_main_address()  # one node: nothing to meet


@pytest.mark.parametrize("state,requeued", [("RUNNING", True), ("CANCELLED", False), (None, False)])
def test_only_a_running_job_is_handed_to_submitits_requeue(monkeypatch, state, requeued):
    """After scancel the job is CANCELLED before its processes see SIGTERM: requeueing it
    would undo the cancel."""
    import submitit

    from ganrun.runtime.slurm import job

    class Environment:
        global_rank = 0
        USR_SIG = "USR2"

    raised = []
    monkeypatch.setattr(submitit, "JobEnvironment", Environment)
    monkeypatch.setattr(job, "job_state", lambda: state)
    monkeypatch.setattr(job.signal, "getsignal", lambda signum: lambda *a: None)
    monkeypatch.setattr(job.signal, "raise_signal", raised.append)
    monkeypatch.setenv("SLURM_JOB_ID", "5")

    def stopped_by_sigterm():
        raise SystemExit(128 + signal.SIGTERM)

    with pytest.raises(SystemExit) as stop:
        job.run_task(stopped_by_sigterm)
    assert stop.value.code == 128 + signal.SIGTERM
    assert raised == ([signal.SIGUSR2] if requeued else [])
    Environment.global_rank = 1  # other ranks leave the requeue to rank 0 and exit cleanly
    with pytest.raises(SystemExit) as stop:
        job.run_task(stopped_by_sigterm)
    assert stop.value.code == 0
    assert job.run_task(lambda: "done") == "done"


# ----------------------------------------------------------------- the cluster fixture
def test_without_root_a_stopped_cluster_is_a_reason_to_skip(monkeypatch, tmp_path):
    import conftest

    calls = []
    monkeypatch.setattr(conftest, "SLURM_DIR", tmp_path / "slurm")
    monkeypatch.setattr(
        conftest,
        "_slurm_script",
        lambda command, timeout=60: calls.append(command) or subprocess.CompletedProcess([command], 3, "", ""),
    )
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 1000)
    assert "needs root" in conftest.start_slurm_cluster() and calls == ["status"]


def test_a_cluster_that_fails_to_start_says_why(monkeypatch, tmp_path):
    import conftest

    failures = {
        "status": subprocess.CompletedProcess([], 3, "", ""),
        "start": subprocess.CompletedProcess(
            [], 2, "", "slurm_cluster: installing\nslurm_cluster: error: apt-get install munge failed\n"
        ),
    }
    monkeypatch.setattr(conftest, "SLURM_DIR", tmp_path / "slurm")
    monkeypatch.setattr(conftest, "_slurm_script", lambda command, timeout=60: failures[command])
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 0)
    assert conftest.start_slurm_cluster() == "slurm_cluster: error: apt-get install munge failed"


# ----------------------------------------------------------------- on a real cluster
def ganrun_on_slurm(env: dict, sweep_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "ganrun",
        "-m",
        *REQUEST,
        *QUIET,
        *TINY_RING,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def job_dirs(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(sweep_dir.iterdir()) if (p / ".hydra").is_dir()}


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def assert_quiet(console: str) -> None:
    """No accounting noise, no traceback."""
    assert "sacct" not in console and "Traceback" not in console, console[-3000:]


def weights_digest(probe: dict) -> str:
    final = probe["final"]
    return hashlib.sha256(b"".join(final[name].numpy().tobytes() for name in sorted(final))).hexdigest()[:16]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_runs_each_job_as_a_slurm_job_and_the_report_lists_them(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    console = succeeded(ganrun_on_slurm(slurm_cluster, sweep, "steps=20", "optimizer.lr=1e-3,2e-3"))
    assert_quiet(console)
    assert (
        "ganrun: submitted 2 job(s) to slurm (partition debug, 1 node(s) x 1 task(s), 1 CPU(s)/task, 1 GB/node, no GPU"
        in console
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and console.count(" completed: ") == 2, console
    slurm_ids = set()
    for job in jobs.values():
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "completed" and result["metrics"]["g_updates"] == 20.0
        assert (result["world_size"], result["num_nodes"]) == (1, 1)
        slurm = json.loads((job / "environment.json").read_text())["slurm"]
        assert slurm["partition"] == "debug" and slurm["job_name"] == "ganrun"
        slurm_ids.add(slurm["job_id"])
    assert len(slurm_ids) == 2  # two Slurm jobs (tasks of one array)

    report = subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(sweep)],
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0 and "2 jobs (2 completed)" in report.stdout, report.stdout + report.stderr
    rows = {row["optimizer.lr"]: row for row in csv.DictReader((sweep / "report.csv").open())}
    assert set(rows) == {"0.001", "0.002"} and {row["status"] for row in rows.values()} == {"completed"}


@pytest.mark.slurm
@pytest.mark.slow
def test_a_job_failing_on_a_bad_value_shows_its_error_and_the_others_complete(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = ganrun_on_slurm(slurm_cluster, sweep, "steps=10", "optimizer.lr=1e-3,-1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert_quiet(result.stdout + result.stderr)
    error = "optimizer.lr=-1 is not valid; it must be a positive number"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(line.startswith(f"ganrun: error: {error} (job #1 (slurm ") for line in lines), result.stderr
    # The sweep ends with one line naming the count, not a traceback.
    assert lines[-1].startswith("ganrun: 1 of 2 slurm job(s) failed; each one's error is above"), lines[-3:]
    assert "HYDRA_FULL_ERROR" not in result.stderr and "Error executing job" not in result.stderr
    statuses = {
        name.split("optimizer.lr=")[1].split(",")[0]: json.loads((job / "result.json").read_text())
        for name, job in job_dirs(sweep).items()
    }
    assert statuses["0.001"]["status"] == "completed" and statuses["0.001"]["metrics"]["g_updates"] == 10.0
    assert statuses["-1"]["status"] == "failed" and statuses["-1"]["error"] == error

    report = subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(sweep)],
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0 and "1 failed" in report.stdout and error in report.stdout, report.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_refuses_a_gpu_job_on_a_cpu_cluster_in_one_line(slurm_cluster, tmp_path):
    result = ganrun_on_slurm(slurm_cluster, tmp_path / "sweep", "accelerator=gpu", "steps=5", timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("ganrun: error: slurm refused the job: ") and "generic resource (gres)" in lines[0], (
        lines
    )
    assert "1 GPU(s)/node" in lines[0]  # what was asked for


@pytest.mark.slurm
@pytest.mark.slow
def test_two_nodes_train_one_run_and_match_two_processes_on_one_node(slurm_cluster, tmp_path):
    """One job over both nodes (one process each) forms one process group: both ranks make the
    same G updates and end bit-identical; with the same seed, two processes on one node
    (Lightning's own launch, no Slurm) end with the same weights: the data shards, noise
    streams and gradient averages depend on the ranks only, not on where they run."""
    import torch

    steps, seed = 20, 11
    common = [
        *QUIET,
        *TINY_RING,
        f"steps={steps}",
        f"seed={seed}",
        "accelerator=ddp_cpu",
        "trainer.log_every_n_steps=5",
    ]
    local_run, local_probe = tmp_path / "one_node", tmp_path / "one_node_probe"
    local = subprocess.Popen(  # meanwhile, on this machine: two processes, one node
        [
            sys.executable,
            "-m",
            "ganrun",
            *common,
            "trainer.devices=2",
            *PROBE,
            f"+callbacks.rank_probe.dirpath={local_probe}",
            f"hydra.run.dir={local_run}",
        ],
        env=slurm_cluster,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    sweep, probe = tmp_path / "sweep", tmp_path / "two_nodes_probe"
    console = succeeded(
        ganrun_on_slurm(
            slurm_cluster,
            sweep,
            f"steps={steps}",
            f"seed={seed}",
            "accelerator=ddp_cpu",
            "trainer.num_nodes=2",
            "trainer.devices=1",
            "trainer.log_every_n_steps=5",
            *PROBE,
            f"+callbacks.rank_probe.dirpath={probe}",
            "hydra.sweep.subdir=run",
        )
    )
    assert_quiet(console)
    assert "2 node(s) x 1 task(s)" in console
    run = sweep / "run"
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and (result["world_size"], result["num_nodes"]) == (2, 2)
    assert result["metrics"]["g_updates"] == steps
    environment = json.loads((run / "environment.json").read_text())
    group, processes = environment["process_group"], environment["processes"]
    assert group["world_size"] == 2 and group["num_nodes"] == 2 and group["backend"] == "gloo"
    assert group["distinct_nodes"] == 2 and group["main_address"] == "ganrun-node1"
    assert [(p["global_rank"], p["node_rank"], p["slurm_node"]) for p in processes] == [
        (0, 0, "ganrun-node1"),
        (1, 1, "ganrun-node2"),
    ]
    assert len({p["slurm_job_id"] for p in processes}) == 1 and all(p["hostname"] for p in processes)

    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["g_updates"] for r in ranks] == [steps, steps]
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), f"{name} differs between the two nodes' ranks"
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # each rank its own shard
    assert any(
        n.startswith("generator.") and not torch.equal(v, ranks[0]["initial"][n]) for n, v in ranks[0]["final"].items()
    )

    stdout, stderr = local.communicate(timeout=300)
    assert local.returncode == 0, stderr[-3000:]
    one_node = [torch.load(local_probe / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    digests = {"two nodes": [weights_digest(r) for r in ranks], "one node": [weights_digest(r) for r in one_node]}
    assert len({d for pair in digests.values() for d in pair}) == 1, digests
    assert torch.equal(ranks[0]["first_batch"], one_node[0]["first_batch"])


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_job_saves_is_requeued_and_resumes_by_itself(slurm_cluster, tmp_path):
    """``scancel --signal=TERM`` (what ``signal=TERM@120`` sends before the time limit, and
    Slurm's preemption): the job saves last.ckpt, submitit requeues it, and the restarted job
    continues from the checkpoint to the full number of G updates, on one TensorBoard curve."""
    from support import scalars

    steps = 400  # the signal lands within the first tens: a wide margin on a fast machine
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "ganrun",
        "-m",
        *REQUEST,
        *QUIET,
        *TINY_RING,
        f"steps={steps}",
        "seed=3",
        "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_steps=10",
        "callbacks.samples.every_n_steps=0",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=run",
    ]
    sweep_process = subprocess.Popen(args, env=slurm_cluster, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = sweep / "run"
    deadline = time.time() + 240
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and sweep_process.poll() is None:
        time.sleep(0.05)
    job_id = json.loads((run / "environment.json").read_text())["slurm"]["job_id"]
    subprocess.run(["scancel", "--signal=TERM", job_id], env=slurm_cluster, check=True, timeout=60)
    stdout, stderr = sweep_process.communicate(timeout=300)
    assert sweep_process.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    assert_quiet(stdout + stderr)
    assert (
        f"job #0 (slurm {job_id}) was requeued (restart 1)" in stdout and f"job #0 (slurm {job_id}) completed" in stdout
    )

    job_log = "".join(p.read_text() for p in sorted((sweep / ".submitit").rglob("*_log.out")))
    stopped_at = int(job_log.split("ganrun: received SIGTERM at G update ")[1].split(":")[0])
    assert 10 <= stopped_at < steps, stopped_at  # stopped mid-run ...
    assert f"requeueing slurm job {job_id}" in job_log and f"slurm restarted job {job_id} (restart 1)" in job_log

    import torch

    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["metrics"]["g_updates"] == steps  # ... and finished the run
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["ganrun_counters"]["g_updates"] == steps
    environment = json.loads((run / "environment.json").read_text())
    (first,) = environment["earlier_starts"]
    assert first["slurm"]["restart_count"] == 0 and first["resumed_from"] is None
    assert environment["slurm"]["restart_count"] == 1 and environment["resumed_from"] == str(
        run / "checkpoints" / "last.ckpt"
    )
    # One continuous curve: every G update once, written by the two starts' processes.
    assert [step for step, _ in scalars(run, "loss/g")] == list(range(1, steps + 1))
    writers = {p.name.split(".")[-2] for p in run.rglob("events.out.tfevents.*")}
    assert len(writers) == 2, writers
