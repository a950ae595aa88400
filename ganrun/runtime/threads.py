"""CPU threads: how many torch uses, and how its OpenMP threads wait.

What was measured on a 2-core CPU (DCGAN step, batch 64; docs/performance.md):
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
* **A fair share of the free cores** (``threads=auto``, ``ThreadPolicy``). The run's
  cores are its CPU affinity mask, shared by the run's processes on this node (the
  ranks of a multi-process run). ``LoadMeter`` reads how busy *those* CPUs are
  (their ``cpuN`` lines of ``/proc/stat``) and subtracts the time of the run's own
  processes (the run's first process and its descendants: the ranks Lightning
  starts, dataloader workers): the rest is other programs' load. The run takes the
  cores they leave free, but never less than half of its cores
  (``fair_share``): two ``auto`` runs on the same cores end up with half each,
  beside a single-threaded busy loop a run keeps all cores but one. The count is
  set at the start, then re-checked every couple of seconds during training
  (``ThreadBalancer``), each check moving it by at most one thread
  (``next_count``), so that two runs adjusting to each other converge instead of
  swinging between few and all threads.

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
from typing import Iterable, Optional

# libgomp (torch's pip wheels) spins about 100,000 times per millisecond; its default
# is 300,000, then sleep. Intel's OpenMP (some conda builds) waits KMP_BLOCKTIME ms
# (default 200) before sleeping: the same 1 ms for it.
SPIN_COUNT = "100000"
BLOCK_TIME_MS = "1"
# Seconds between two looks at the load (a look reads /proc/stat and the run's /proc/<pid>/stat).
CHECK_EVERY_S = 2.0
# Seconds of the first look, at the start of a run.
FIRST_LOOK_S = 0.2
# The pid of a multi-process run's first process, passed to the ranks it starts (they inherit
# its environment): the run's processes on this node are that process and its descendants.
RUN_PID = "GANRUN_RUN_PID"


def set_wait_policy() -> None:
    """Short spinning OpenMP waits unless the user chose a policy; call before torch is imported."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
        os.environ.setdefault("KMP_BLOCKTIME", BLOCK_TIME_MS)


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask), else all of the machine's."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def fair_share(cores: int, others: Optional[float], processes: int = 1) -> int:
    """Threads for each of a run's ``processes`` processes on ``cores`` CPUs while other programs
    keep ``others`` of them busy (None: unknown, taken as none): the free cores, but never
    less than half of them, so that two runs on the same cores end up with half each."""
    busy = 0 if others is None else int(others + 0.5)
    return max(1, max(cores - busy, cores // 2) // processes)


def next_count(count: int, cores: int, others: float, processes: int = 1) -> int:
    """One re-check: from ``count`` threads per process, one thread toward ``fair_share``.

    Down whenever the share is lower. Up only when nothing else runs, or when a core stays
    free after each of the run's processes took one more: another run may grow at the same
    check, and two runs each growing into the last free core would oversubscribe it, shrink
    and grow again (two runs at 2 threads each on 5 cores stay there rather than swing 2-3-2-3).
    """
    share = fair_share(cores, others, processes)
    if share < count:
        return count - 1
    busy = int(others + 0.5)
    free = cores - busy - count * processes
    if share > count and (busy == 0 or free > processes):
        return count + 1
    return count


def _stat_fields(proc: str, pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    with open(os.path.join(proc, str(pid), "stat")) as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _lineage(pid: int, proc: str) -> list[int]:
    """``pid``, its parent, grandparent, ... up to 1 (just ``pid`` without /proc)."""
    line = []
    while pid > 0 and pid not in line:  # pid 1's parent is 0
        line.append(pid)
        try:
            pid = int(_stat_fields(proc, pid)[1])
        except (OSError, ValueError, IndexError):
            break
    return line


def run_root(processes_on_node: int, proc: str = "/proc") -> int:
    """The first process of this run on this node; the run's processes are it and its descendants.

    A multi-process run's first process records its pid in ``GANRUN_RUN_PID`` before the
    Trainer starts the other ranks; they are its children and inherit the variable. A value
    that is not this process or an ancestor of it (left in the environment by an unrelated
    program) is replaced."""
    me = os.getpid()
    if processes_on_node < 2:
        return me
    inherited = os.environ.get(RUN_PID, "")
    if inherited.isdigit() and int(inherited) in _lineage(me, proc):
        return int(inherited)
    os.environ[RUN_PID] = str(me)
    return me


class LoadMeter:
    """Cores of ``cpus`` kept busy by programs other than this run since the last reading
    (Linux /proc; None elsewhere).

    ``cpus``: default this process's affinity mask; only their ``cpuN`` lines of /proc/stat
    count (a container pinned to a few CPUs of a busy host sees its own CPUs). The run's own
    time, left out: utime + stime of ``root`` (default this process) and its descendants, plus
    their reaped children's (cutime + cstime), so that a worker that exits does not turn its
    past time into someone else's load.
    """

    def __init__(self, root: Optional[int] = None, cpus: Optional[Iterable[int]] = None, proc: str = "/proc") -> None:
        self.proc = proc
        self.root = os.getpid() if root is None else root
        self.cpus = usable_cpus() if cpus is None else set(cpus)
        # Kernels built without CONFIG_PROC_CHILDREN have no .../children files: then scan every process.
        self.listed_children = os.path.exists(os.path.join(proc, str(self.root), "task", str(self.root), "children"))
        self._last = self._read()

    def others_busy(self) -> Optional[float]:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] - last[1] <= 0:
            return None
        others = (now[0] - last[0]) - (now[2] - last[2])
        return max(0.0, others / (now[1] - last[1]))

    def _read(self) -> Optional[tuple[float, float, float]]:
        """(busy jiffies of our CPUs, jiffies per CPU, jiffies of the run's processes)."""
        busy = total = 0.0
        counted = 0
        try:
            with open(os.path.join(self.proc, "stat")) as stat:
                for line in stat:
                    name, *values = line.split()
                    if name[:3] != "cpu" or not name[3:].isdigit() or int(name[3:]) not in self.cpus:
                        continue
                    fields = [float(v) for v in values[:8]]  # guest time is already inside user time
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
                    total += sum(fields)
                    busy += sum(fields) - idle
                    counted += 1
        except (OSError, ValueError, IndexError):
            return None
        if not counted:
            return None
        return busy, total / counted, self._run_time()

    def _run_time(self) -> float:
        spent = 0.0
        for pid in self.run_processes():
            try:
                fields = _stat_fields(self.proc, pid)
                spent += sum(float(v) for v in fields[11:15])  # utime, stime, cutime, cstime
            except (OSError, ValueError, IndexError):
                pass  # it just ended
        return spent

    def run_processes(self) -> set[int]:
        """The root and its descendants."""
        children = self._listed if self.listed_children else self._scanned()
        found, todo = set(), [self.root]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(children(pid))
        return found

    def _listed(self, pid: int) -> list[int]:
        """Children of ``pid`` from /proc/<pid>/task/<tid>/children (a process's children are
        listed under the thread that started them)."""
        kids = []
        try:
            tasks = os.listdir(os.path.join(self.proc, str(pid), "task"))
        except OSError:
            return kids
        for tid in tasks:
            try:
                with open(os.path.join(self.proc, str(pid), "task", tid, "children")) as listed:
                    kids += [int(child) for child in listed.read().split()]
            except (OSError, ValueError):
                pass
        return kids

    def _scanned(self):
        """A children-of function from the parent of every process in /proc."""
        kids: dict[int, list[int]] = {}
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                try:
                    kids.setdefault(int(_stat_fields(self.proc, int(entry))[1]), []).append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return lambda pid: kids.get(pid, [])


class ThreadPolicy:
    """The run's thread count per process: fixed (``threads=N``) or following the load (``threads=auto``).

    ``processes_on_node``: the run's processes on this machine (DDP ranks), which share its
    cores. ``meter``: where the load is read (default: ``LoadMeter`` of this run's processes
    on this process's CPUs).
    """

    def __init__(self, setting, processes_on_node: int = 1, meter: Optional[LoadMeter] = None) -> None:
        self.setting = setting
        self.adaptive = setting == "auto"
        self.processes = max(1, processes_on_node)
        self.meter: Optional[LoadMeter] = None
        env = os.environ.get("OMP_NUM_THREADS", "")
        if self.adaptive and env.isdigit() and int(env) > 0:
            # A launcher (joblib/loky, SLURM scripts) or the user already chose: respect it.
            self.count, self.adaptive = int(env), False
        elif self.adaptive:
            self.meter = meter if meter is not None else LoadMeter(root=run_root(self.processes))
            self.cores = len(self.meter.cpus)  # the run's CPUs, all its processes together
            time.sleep(FIRST_LOOK_S)  # a first look at what else runs
            self.count = fair_share(self.cores, self.meter.others_busy(), self.processes)
        else:
            self.count = int(setting)
        self.start = self.count

    def check(self) -> int:
        """Re-read the load and move the count (at most one thread); returns the count."""
        if self.meter is not None:
            others = self.meter.others_busy()
            if others is not None:
                self.count = next_count(self.count, self.cores, others, self.processes)
        return self.count

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
    way a run starts: ``auto`` = a fair share of the free cores (``ganrun-eval`` of the default
    job beside a busy loop, its judge still to train: 63 s with torch's 2 threads, 12 s
    now), ``N`` = N threads. Returns the count."""
    import torch

    count = ThreadPolicy(setting).start
    torch.set_num_threads(count)
    return count
