"""CPU threads: how many torch uses, and how its OpenMP threads wait.

What was measured on a 2-core CPU (DCGAN step, batch 64; README "Performance"):
torch's OpenMP threads *spin* while they wait for each other (libgomp's default),
so when another process holds one of the cores the spinning thread burns the
time its partner needs: 82 ms per step alone with 2 threads became 834 ms beside
a second process and 2,722 ms beside a busy loop. Two remedies, both here:

* **Short spinning waits.** ``GOMP_SPINCOUNT=100000`` (and ``KMP_BLOCKTIME=1`` for
  Intel's OpenMP; set before torch is imported, unless the user set them or
  ``OMP_WAIT_POLICY``) lets a waiting thread
  spin for about a millisecond, then sleep: alone, threads meet within the spin
  and pay no wake-up (sleeping at once, ``OMP_WAIT_POLICY=PASSIVE``, made a run
  alone 15-25% slower); beside other work a waiting thread gives its core back
  soon instead of burning a whole time slice.
* **One thread per free core** (``threads=auto``). At the start a run takes the
  cores it may use (its CPU affinity, shared with the other processes of a
  multi-process run on this node) less the cores other processes are keeping
  busy, and on CPU it re-checks every couple of seconds (``ThreadBalancer``): a
  second job that starts, or ends, moves the count. Two jobs side by side settle
  on one thread each, which is what running them one after the other would
  have given them, at once.

``threads=N`` fixes the count (the balancer is off). The thread count changes the
order of floating-point sums, so bit-identical repeat runs need the same
``threads=N``; ``auto`` follows the machine's load. ``environment.json`` records the
setting, the starting count and the wait policy; TensorBoard's ``system/threads``
shows the count over the run.

Imports neither torch nor Lightning: ``set_wait_policy`` must run before torch loads.
The balancer is ``ganrun.callbacks.threads.ThreadBalancer``.
"""
from __future__ import annotations

import os
import time
from typing import Optional

# libgomp (torch's pip wheels) spins about 100,000 times per millisecond; its default
# is 300,000, then sleep. Intel's OpenMP (some conda builds) waits KMP_BLOCKTIME ms
# (default 200) before sleeping: the same 1 ms for it.
SPIN_COUNT = "100000"
BLOCK_TIME_MS = "1"
# Seconds between two looks at the machine's load (a look reads two small /proc files).
CHECK_EVERY_S = 2.0


def set_wait_policy() -> None:
    """Short spinning OpenMP waits unless the user chose a policy; call before torch is imported."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
        os.environ.setdefault("KMP_BLOCKTIME", BLOCK_TIME_MS)


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LoadMeter:
    """Cores kept busy by *other* processes since the last reading (Linux /proc; None elsewhere)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> Optional[tuple[float, float, float]]:
        """(busy jiffies of the machine, jiffies of this process, all jiffies per CPU)."""
        try:
            with open("/proc/stat") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
            with open("/proc/self/stat") as own:
                parts = own.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        total = sum(fields[:8])  # guest time is already inside user time
        mine = float(parts[11]) + float(parts[12])  # utime + stime of all our threads
        return total - idle, mine, total / (os.cpu_count() or 1)

    def others_busy(self) -> Optional[float]:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[2] - last[2] <= 0:
            return None
        others = (now[0] - last[0]) - (now[1] - last[1])
        return max(0.0, others / (now[2] - last[2]))


def free_cores(cores: int, others_busy: Optional[float]) -> int:
    """Threads for a process that may use ``cores`` CPUs while others keep ``others_busy`` of them busy."""
    if others_busy is None:
        return cores
    return max(1, min(cores, cores - int(others_busy + 0.5)))


class ThreadPolicy:
    """The run's thread count: fixed (``threads=N``) or following the load (``threads=auto``)."""

    def __init__(self, setting, processes_on_node: int = 1) -> None:
        self.setting = setting
        self.adaptive = setting == "auto"
        env = os.environ.get("OMP_NUM_THREADS", "")
        if self.adaptive and env.isdigit() and int(env) > 0:
            # A launcher (joblib/loky, SLURM scripts) or the user already chose: respect it.
            self.cores, self.adaptive = int(env), False
        elif self.adaptive:
            self.cores = max(1, usable_cores() // max(1, processes_on_node))
        else:
            self.cores = int(setting)
        self.meter = LoadMeter() if self.adaptive else None
        if self.meter is not None:
            time.sleep(0.2)  # a first look at what else runs
        self.start = self.choose()

    def choose(self) -> int:
        if self.meter is None:
            return self.cores
        return free_cores(self.cores, self.meter.others_busy())

    def record(self) -> dict:
        return {
            "setting": self.setting,
            "start": self.start,
            "adaptive": self.adaptive,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }


def use(setting="auto") -> int:
    """Set torch's thread count for a helper command (``ganrun-eval``, ``ganrun-sample``) the
    way a run starts: ``auto`` = one thread per free core (``ganrun-eval`` of the default
    job beside a busy loop, its judge still to train: 63 s with torch's 2 threads, 12 s
    now), ``N`` = N threads. Returns the count."""
    import torch

    count = ThreadPolicy(setting).start
    torch.set_num_threads(count)
    return count
