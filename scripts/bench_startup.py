#!/usr/bin/env python
"""Time ganrun's start-up: launch to the first training step of the default job, and ``ganrun --help``.

    python scripts/bench_startup.py [--threads N] [--repeats R] [--json PATH]

- first training step: ``ganrun steps=1 trainer.log_every_n_steps=1`` (the default
  job, seed 0), from launch to the wall time of its first logged TensorBoard scalar,
  written right after G update 1; also the whole run's wall time.
- ``ganrun --help``: the fastest of 3.

Each is a new process, so imports, config composition, data and network set-up are
included. ``--repeats``: runs of the ``steps=1`` job; the fastest counts (each
measure on its own).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Optional

from benchlib import ganrun_command, machine_line, scratch_folder, write_json


def help_seconds(env: dict) -> float:
    """Wall seconds of ``ganrun --help``, the fastest of 3."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([*ganrun_command(), "--help"], check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - started)
    return min(times)


def first_step_seconds(workdir: Path, run_dir: Path, env: dict) -> tuple[float, float]:
    """Seconds from launching ``ganrun steps=1`` to its first logged scalar, and to its exit."""
    launched_wall, started = time.time(), time.perf_counter()
    subprocess.run(
        [*ganrun_command(), "steps=1", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"],
        check=True,
        capture_output=True,
        cwd=workdir,
        env=env,
    )
    total = time.perf_counter() - started
    return first_scalar_wall_time(run_dir) - launched_wall, total


def first_scalar_wall_time(run_dir: Path) -> float:
    """Wall time (seconds since the epoch) of the earliest ``loss/*`` scalar the run logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = sorted((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    if not event_files:
        raise RuntimeError(f"the steps=1 run wrote no TensorBoard events under {run_dir / 'tensorboard'}")
    events = EventAccumulator(str(event_files[0].parent)).Reload()
    losses = [tag for tag in events.Tags()["scalars"] if tag.startswith("loss/")]
    if not losses:
        raise RuntimeError(f"the steps=1 run logged no loss/* scalar (tags: {events.Tags()['scalars']})")
    return min(events.Scalars(tag)[0].wall_time for tag in losses)


def startup_times(workdir: Path, threads: Optional[int], repeats: int = 1) -> dict[str, float]:
    """Seconds to the first training step of the default job, its whole ``steps=1`` run, and ``ganrun --help``."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    help_s = help_seconds(env)
    runs = [first_step_seconds(workdir, workdir / f"default_job_{repeat}", env) for repeat in range(repeats)]
    return {
        "first_step_s": min(first for first, _ in runs),
        "steps1_total_s": min(total for _, total in runs),
        "help_s": help_s,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: ganrun's choice)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of the steps=1 job; the fastest counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    print(machine_line())
    with scratch_folder() as workdir:
        times = startup_times(workdir, args.threads, args.repeats)
    print(
        f"\ntime to first training step of the default job: {times['first_step_s']:.1f} s "
        f"(whole `ganrun steps=1`: {times['steps1_total_s']:.1f} s)"
    )
    print(f"`ganrun --help`: {times['help_s']:.2f} s")
    write_json(args.json, {"threads": args.threads, "repeats": args.repeats, "startup": times})


if __name__ == "__main__":
    main()
