#!/usr/bin/env python
"""Time ganrun jobs that share the machine: two side by side, one beside a busy loop, a sweep's launchers.

    python scripts/bench_contention.py [--case pair|sweep|all] [--steps N] [--sweep-job 'OVERRIDES'] [--json PATH]

Wall clock of whole ``ganrun`` processes, start-up included:

- pair: the default DCGAN job shortened to ``--steps`` G updates, alone (the faster
  of two runs), two started together, and beside a single-threaded busy loop; each
  with ganrun's thread policy (``threads=auto``: the thread balancer, and OpenMP
  waits that spin about 1 ms, then sleep) and with every core and libgomp's default
  waits (``threads=<cores> GOMP_SPINCOUNT=300000``). Two together are compared with
  the two one after the other (twice the alone time).
- sweep: ``ganrun -m seed=0,1`` of the same job (or of ``--sweep-job``'s) with
  Hydra's basic launcher (one after the other) and with ``launcher=joblib`` (side by
  side).

Every job runs with its config's seed (0; the sweep: 0 and 1), ``accelerator=cpu``,
``callbacks=none logger=none``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from benchlib import ganrun_command, machine_line, scratch_folder, write_json

QUIET_JOB = ["callbacks=none", "logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without thread settings (ganrun's policy decides), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}
    return {**env, **extra}


def wall_times(commands: list[list[str]], env: dict, cwd: Path, limit: float) -> list[Optional[float]]:
    """Start the commands together; each one's wall seconds (None: still running after ``limit`` s, killed)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands
    ]
    times: list[Optional[float]] = []
    for process in processes:
        try:
            process.wait(timeout=max(1.0, limit - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            times.append(None)
            continue
        if process.returncode != 0:
            raise RuntimeError(f"{process.args} failed: {process.stderr.read().decode()[-2000:]}")
        times.append(time.perf_counter() - started)
    return times


@contextlib.contextmanager
def busy_loop():
    """A single-threaded busy loop on the machine for the duration of the block."""
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        loop.kill()
        loop.wait()


def _seconds(value: Optional[float], limit: float) -> str:
    return f"{value:.1f}" if value is not None else f"> {limit:.0f} (stopped)"


def pair_case(workdir: Path, steps: int) -> dict[str, dict]:
    """Default DCGAN job, ``steps`` G updates: alone, two together, beside a busy loop; two thread policies."""
    job = [*ganrun_command(), "accelerator=cpu", f"steps={steps}", *QUIET_JOB]
    cores = os.cpu_count() or 1
    policies = {
        "ganrun (threads=auto, spin 1 ms then sleep)": ([], clean_env()),
        # GOMP_SPINCOUNT unset means 300,000 in libgomp
        f"all cores (threads={cores}, libgomp's default waits)": (
            [f"threads={cores}"],
            clean_env(GOMP_SPINCOUNT="300000"),
        ),
    }
    print(
        f"\nJobs side by side: `ganrun accelerator=cpu steps={steps} callbacks=none logger=none` (default DCGAN job), "
        f"whole-process wall seconds on {cores} cores"
    )
    print(
        "| thread policy | alone | two together (each) | together / one after the other | beside a busy loop | busy / alone |"
    )
    print("|---|---|---|---|---|---|")
    report = {}
    for name, (extra, env) in policies.items():
        run = lambda tag: [*job, *extra, f"hydra.run.dir={workdir / 'pair' / tag}"]  # noqa: E731
        alone = min(
            wall_times([run("alone1")], env, workdir, 900)[0], wall_times([run("alone2")], env, workdir, 900)[0]
        )
        limit = 12 * alone
        together = wall_times([run("a"), run("b")], env, workdir, limit)
        with busy_loop():
            beside = wall_times([run("busy")], env, workdir, limit)[0]
        both = None if None in together else max(together)
        ratio = f"{both / (2 * alone):.2f}" if both is not None else f"> {limit / (2 * alone):.1f}"
        busy_ratio = f"{beside / alone:.2f}" if beside is not None else f"> {limit / alone:.1f}"
        print(
            f"| {name} | {alone:.1f} | {' / '.join(_seconds(t, limit) for t in together)} | {ratio} | "
            f"{_seconds(beside, limit)} | {busy_ratio} |",
            flush=True,
        )
        report[name] = {"alone_s": alone, "together_s": together, "beside_busy_loop_s": beside}
    return report


def sweep_case(workdir: Path, steps: int, job_overrides: Sequence[str] = ()) -> dict[str, float]:
    """``ganrun -m seed=0,1`` one after the other (basic launcher) and side by side (joblib)."""
    job = [*ganrun_command(), "-m", "seed=0,1", "accelerator=cpu", f"steps={steps}", *job_overrides, *QUIET_JOB]
    env = clean_env()
    basic = wall_times([[*job, f"hydra.sweep.dir={workdir / 'sweep-basic'}"]], env, workdir, 1800)[0]
    joblib = wall_times([[*job, "launcher=joblib", f"hydra.sweep.dir={workdir / 'sweep-joblib'}"]], env, workdir, 1800)[
        0
    ]
    print(
        f"\nSweep of 2 jobs (`ganrun -m seed=0,1 accelerator=cpu steps={steps} {' '.join(job_overrides)}`), "
        f"whole-command wall seconds: basic launcher {basic:.1f}, launcher=joblib {joblib:.1f}, "
        f"ratio joblib / basic {joblib / basic:.2f}",
        flush=True,
    )
    return {"basic_s": basic, "joblib_s": joblib}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["pair", "sweep", "all"], default="all", help="all: pair, then sweep")
    parser.add_argument("--steps", type=int, default=150, help="G updates of each job")
    parser.add_argument(
        "--sweep-job",
        default="",
        help="overrides of the swept job (default: the default DCGAN job), e.g. 'model=gan dataset=ring'",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    print(machine_line())
    report: dict = {"steps": args.steps}
    with scratch_folder() as workdir:
        if args.case in ("pair", "all"):
            report["pair"] = pair_case(workdir, args.steps)
        if args.case in ("sweep", "all"):
            report["sweep"] = sweep_case(workdir, args.steps, args.sweep_job.split())
    write_json(args.json, report)


if __name__ == "__main__":
    main()
