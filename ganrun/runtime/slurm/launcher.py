"""The sweep's side of ``launcher=slurm``: submit the jobs, wait, say how each one ended.

``launch`` does what hydra-submitit-launcher's ``launch`` does (one submitit job, or one
job array, for the sweep's jobs), with what a sweep on a university cluster needs:

- a request sbatch cannot express, or one Slurm refuses, is one line
  (``ganrun: error: slurm refused the job: <sbatch's own message>``, exit status 2);
- job states come from ``squeue`` (``ganrun.runtime.slurm.queue``): no accounting database needed,
  no warning at every poll;
- one console line per job as it ends (completed, or its one-line error), one per requeue;
- a failed job fails the sweep at the end with one line, not a traceback; its error
  is in its ``result.json`` too, where ``ganrun-report`` reads it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException

from ganrun.errors import EXIT_BAD_INPUT, ConfigError
from ganrun.runtime.slurm.queue import QueueWatcher, restarts, sbatch_refusal
from ganrun.runtime.slurm.request import check_request, sbatch_parameters

UNREACHABLE_NOTICE_S = 120  # a controller restart takes less; past this the sweep says why it waits


class SweepJobsFailed(CompactHydraException):
    """Raised by the sweeper for a failed job: Hydra prints its message alone, no traceback."""


class JobEnded(RuntimeError):
    """A job that ended without a result (cancelled, killed, out of memory, node failure)."""


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit one Slurm job per sweep job, wait for all, return Hydra's job returns."""
    from hydra.core.singleton import Singleton

    params = launcher.params
    try:
        check_request(params)
        check_slurm_commands()
    except ConfigError as error:
        fail(str(error))
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    indices = [initial_job_idx + k for k in range(len(job_overrides))]
    arguments = [
        (list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}", Singleton.get_state())
        for overrides, index in zip(job_overrides, indices)
    ]
    jobs = submit(launcher, params, arguments)
    labels = [f"#{index} (slurm {job.job_id})" for index, job in zip(indices, jobs)]
    print(
        f"ganrun: submitted {len(jobs)} job(s) to slurm ({describe_request(params)}); "
        f"submitit logs in {Path(str(params['submitit_folder'])).parent}",
        flush=True,
    )
    for label, overrides in zip(labels, job_overrides):
        print(f"ganrun:   {label}  {' '.join(filter_overrides(overrides))}", flush=True)
    returns = collect(jobs, labels, job_overrides)
    fail_sweep_if_jobs_failed(returns, launcher, sweep_dir)
    return returns


def collect(jobs: list, labels: list[str], job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
    """Every job's return, printing one line per job as it ends. Ctrl-C stops waiting (the jobs run on)."""
    returns: list[Optional[JobReturn]] = [None] * len(jobs)
    try:
        for k in wait_for(jobs, labels):
            returns[k] = job_return(jobs[k], job_overrides[k])
            report_end(returns[k], labels[k])
    except KeyboardInterrupt:
        pending = " ".join(job.job_id for job, ret in zip(jobs, returns) if ret is None)
        print(
            f"\nganrun: stopped waiting; the jobs still run on slurm (scancel {pending} ends them)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130) from None
    return returns


def fail_sweep_if_jobs_failed(returns: list[JobReturn], launcher, sweep_dir: Path) -> None:
    """With Hydra's basic sweeper, which stops at a failed batch anyway: one line and exit 1.
    Other sweepers (Optuna) decide themselves; if they stop, Hydra prints the same line alone."""
    failed = [ret for ret in returns if ret.status == JobStatus.FAILED]
    if not failed:
        return
    message = (
        f"ganrun: {len(failed)} of {len(returns)} slurm job(s) failed; each one's error is above and in its "
        f"result.json (ganrun-report {sweep_dir} lists every job)"
    )
    if str(launcher.config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(1)
    for ret in failed:
        ret.return_value = SweepJobsFailed(message)


def fail(message: str) -> None:
    print(f"ganrun: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def check_slurm_commands() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "srun") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"launcher=slurm needs Slurm's commands, but {', '.join(missing)} is not on PATH; run on the "
            "cluster's login node (or try it here: scripts/slurm_cluster.sh start)"
        )


def describe_request(params: dict) -> str:
    """``partition debug, 2 nodes x 1 task, 4 CPUs/task, 8 GB/node, no GPU, 720 min``."""
    gpus = params.get("gpus_per_node")
    memory = params.get("mem_gb")
    return ", ".join(
        [
            f"partition {params.get('partition') or '(default)'}",
            f"{params['nodes']} node(s) x {params['tasks_per_node']} task(s)",
            f"{params['cpus_per_task']} CPU(s)/task",
            f"{memory} GB/node" if memory else "memory: partition default",
            f"{gpus} GPU(s)/node" if gpus else "no GPU",
            f"{params['timeout_min']} min",
        ]
    )


def submit(launcher, params: dict, arguments: list[tuple]) -> list:
    """The submitit jobs (one array for several), or one line and exit 2 if Slurm refuses."""
    import submitit

    executor_args, sbatch = sbatch_parameters(params)
    executor = submitit.AutoExecutor(cluster="slurm", **executor_args)
    try:
        executor.update_parameters(**sbatch)
    except ValueError as error:  # a parameter submitit does not know (its message lists them all)
        fail(str(error).splitlines()[0])
    # submitit prints a failed sbatch's stderr before raising it: keep it for the one-line error.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            return executor.map_array(launcher, *zip(*arguments))
    except submitit.core.utils.FailedJobError as error:
        refusal = sbatch_refusal(error)
        if refusal is None:
            raise
        fail(f"slurm refused the job: {refusal} (asked for: {describe_request(params)})")
    return []


def wait_for(jobs: list, labels: list[str], poll_s: float = 1.0):
    """Yield each job's index as it ends, printing a line when Slurm requeues one."""
    watcher = QueueWatcher()
    for job in jobs:
        # submitit keeps one watcher per job class (sacct); these jobs and their per-task
        # sub-jobs ask squeue through this one instead.
        for member in [job, *getattr(job, "_sub_jobs", [])]:
            member.watcher = watcher
    remaining = set(range(len(jobs)))
    seen_restarts = [0] * len(jobs)
    told_unreachable = False
    while remaining:
        if watcher.failing_for() > UNREACHABLE_NOTICE_S and not told_unreachable:
            told_unreachable = True
            print(
                f"ganrun: squeue has failed for {watcher.failing_for():.0f} s ({watcher.last_error}); still waiting "
                "(Ctrl-C stops waiting, the jobs keep their course)",
                file=sys.stderr,
                flush=True,
            )
        for k in sorted(remaining):
            if jobs[k].done():
                remaining.discard(k)
                yield k
                continue
            count = restarts(watcher.get_info(jobs[k].job_id, mode="cache"))
            if count > seen_restarts[k]:
                seen_restarts[k] = count
                print(
                    f"ganrun: job {labels[k]} was requeued (restart {count}); it resumes from its last.ckpt", flush=True
                )
        if remaining:
            time.sleep(poll_s)


def job_return(job, overrides: Sequence[str]) -> JobReturn:
    """Hydra's return of rank 0's task (a failed rank's if any failed), or a failed return
    for a job that ended without one."""
    try:
        returns = job.results()
    except Exception as error:  # submitit: no result file (cancelled, killed) or an error outside the task
        return JobReturn(
            overrides=list(overrides), status=JobStatus.FAILED, _return_value=JobEnded(ended_without_result(job, error))
        )
    failed = [ret for ret in returns if ret.status == JobStatus.FAILED]
    return failed[0] if failed else returns[0]


def ended_without_result(job, error: BaseException) -> str:
    state = job.watcher.get_state(job.job_id, mode="cache")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[0] if lines else "")
    return f"slurm job {job.job_id} ended without a result (state {state}): {reason[:300]}; log: {job.paths.stderr}"


def report_end(ret: JobReturn, label: str) -> None:
    if ret.status == JobStatus.COMPLETED:
        where = _run_dir(ret)
        print(f"ganrun: job {label} completed{': ' + where if where else ''}", flush=True)
        return
    from ganrun.commands.report import one_line

    error = ret._return_value  # the job's own exception (pickled back), or JobEnded
    message = str(error) if isinstance(error, JobEnded) else one_line(error)
    print(f"ganrun: error: {message} (job {label})", file=sys.stderr, flush=True)


def _run_dir(ret: JobReturn) -> Optional[str]:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None
