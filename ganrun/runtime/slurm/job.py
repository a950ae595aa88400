"""Inside a Slurm job: where this process runs, and requeueing after a preemption.

Preemption, and the warning Slurm sends before the time limit
(``--signal=TERM@120`` in ``configs/launcher/slurm.yaml``), arrive as SIGTERM. ganrun's
``LastCheckpoint`` lets every rank finish its batch, saves ``checkpoints/last.ckpt``
and stops; ``ganrun`` then exits with status 128 + SIGTERM. In a job started by
submitit, ``after_signalled_stop`` then hands the job to submitit's own
checkpoint-and-requeue: it raises submitit's preemption signal in rank 0, whose handler
asks the launcher for the resubmission (the same job), runs ``scontrol requeue`` and
exits. Slurm starts the job again with ``SLURM_RESTART_COUNT`` set, and ``train()``
resumes from the run folder's ``last.ckpt`` (``resume_after_restart``).

A job that is no longer RUNNING when the checkpoint is saved (``scancel`` cancels it,
or Slurm preempts it and requeues it itself) is not requeued by ganrun.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from typing import Any, Callable, Optional

SIGNALLED_STOP = 128 + signal.SIGTERM  # ganrun's exit status after saving on SIGTERM


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ


def job_id() -> Optional[str]:
    """This job's id as Slurm names it (``12_3`` for task 3 of array job 12)."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times Slurm restarted this job (0 outside Slurm, or on its first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def resume_after_restart(ckpt_path: Optional[str], run_dir) -> Optional[str]:
    """``ckpt_path`` as the run should use it: in a Slurm job that Slurm restarted (requeued
    after a preemption, a time limit or a node failure), ``last`` (the job's own
    ``last.ckpt``) when none was given or when the job already wrote one, so that a job
    started from another run's checkpoint does not go back to it after a requeue."""
    from pathlib import Path

    if restart_count() > 0 and (ckpt_path is None or (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()):
        return "last"
    return ckpt_path


def placement() -> dict:
    """Where this process runs: host, Slurm node and job, ranks as Slurm gave them."""
    record: dict[str, Any] = {"hostname": platform.node(), "pid": os.getpid()}
    if in_slurm_job():
        record.update(
            {
                "slurm_node": os.environ.get("SLURMD_NODENAME"),
                "slurm_job_id": job_id(),
                "slurm_procid": _int(os.environ.get("SLURM_PROCID")),
                "slurm_restart_count": restart_count(),
            }
        )
    return record


def job_record() -> Optional[dict]:
    """The Slurm job this run belongs to (None outside Slurm), for environment.json."""
    if not in_slurm_job():
        return None
    return {
        "job_id": job_id(),
        "job_name": os.environ.get("SLURM_JOB_NAME"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "nodelist": os.environ.get("SLURM_JOB_NODELIST"),
        "num_nodes": _int(os.environ.get("SLURM_JOB_NUM_NODES")),
        "ntasks": _int(os.environ.get("SLURM_NTASKS")),
        "restart_count": restart_count(),
        "cluster": os.environ.get("SLURM_CLUSTER_NAME"),
    }


def check_main_address() -> None:
    """In a job over several nodes Lightning's main address is the first node's name (unless
    MASTER_ADDR is set): refuse in one line when it does not resolve, where every rank would
    otherwise wait for the others without end."""
    if not in_slurm_job() or (_int(os.environ.get("SLURM_JOB_NUM_NODES")) or 1) < 2 or "MASTER_ADDR" in os.environ:
        return
    import socket

    from lightning_fabric.plugins.environments import SLURMEnvironment

    name = SLURMEnvironment.resolve_root_node_address(
        os.environ.get("SLURM_JOB_NODELIST", os.environ.get("SLURM_NODELIST", ""))
    )
    try:
        socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError):
        from ganrun.errors import ConfigError

        raise ConfigError(
            f"slurm node name {name} (the job's first node: the processes meet there) does not resolve "
            f"on {platform.node()}; list the nodes in DNS or /etc/hosts, or set MASTER_ADDR"
        ) from None


def job_state() -> Optional[str]:
    """This job's state as the controller sees it now (RUNNING, CANCELLED, ...); None if unknown."""
    try:
        output = subprocess.run(
            ["squeue", "--noheader", f"--jobs={job_id()}", "--Format=State"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return output.strip() or None


def run_task(call: Callable[..., Any], *args: Any) -> Any:
    """Run a sweep job's task in a submitit job; after a stop on SIGTERM, requeue."""
    try:
        return call(*args)
    except SystemExit as stop:
        if stop.code == SIGNALLED_STOP and in_slurm_job():
            after_signalled_stop()
        raise


def after_signalled_stop() -> None:
    """The run stopped on SIGTERM with its checkpoint saved. Rank 0 hands the job to
    submitit's checkpoint-and-requeue while the job still runs; other ranks exit 0 (rank 0
    decides, and a zero status keeps a site's KillOnBadExit from ending the job first)."""
    import submitit

    environment = submitit.JobEnvironment()
    if environment.global_rank != 0:
        raise SystemExit(0)
    state = job_state()
    if state != "RUNNING":
        print(f"ganrun: slurm job {job_id()} is {state or 'in an unknown state'}: not requeued", flush=True)
        return
    print(
        f"ganrun: requeueing slurm job {job_id()}; it resumes from the run's last.ckpt when it starts again", flush=True
    )
    # submitit's own preemption path: its handler calls the launcher's checkpoint(), dumps the
    # resubmission, runs `scontrol requeue` and exits (or raises why it cannot requeue).
    preemption = getattr(signal, f"SIG{environment.USR_SIG}")
    if not callable(signal.getsignal(preemption)):
        print(
            f"ganrun: submitit's {preemption.name} handler is not installed: slurm job {job_id()} not requeued",
            flush=True,
        )
        return
    try:
        signal.raise_signal(preemption)
    except subprocess.CalledProcessError as error:  # e.g. Slurm is requeueing a preempted job itself
        detail = (
            (error.stderr or b"").decode(errors="replace").strip() if isinstance(error.stderr, bytes) else error.stderr
        )
        print(f"ganrun: scontrol requeue {job_id()} failed ({detail or error}); the job ends here", flush=True)


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
