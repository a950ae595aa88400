"""A fake /proc tree for ``ganrun.runtime.threads.LoadMeter``: the ``cpuN`` lines of /proc/stat and
/proc/<pid>/stat (and the kernel's children lists) of a few processes, advanced a second at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

HZ = 100  # jiffies per second


class FakeProc:
    """``cpus`` CPUs and the processes added with ``process``; ``run`` lets a second pass in which each
    process keeps the CPUs it is given busy. ``children_files=False``: a kernel without
    /proc/<pid>/task/<tid>/children (the meter then reads every process's parent)."""

    def __init__(self, root: Path, cpus: int, children_files: bool = True) -> None:
        self.root = Path(root)
        self.busy = [0] * cpus
        self.idle = [0] * cpus
        self.children_files = children_files
        self.processes: dict[int, dict] = {}  # pid -> ppid, own jiffies, reaped children's jiffies
        self.write()

    def process(self, pid: int, ppid: int = 1) -> "FakeProc":
        self.processes[pid] = {"ppid": ppid, "own": 0, "reaped": 0}
        self.write()
        return self

    def exit(self, pid: int) -> None:
        """``pid`` ends and its parent reaps it: its time moves to the parent's cutime/cstime."""
        gone = self.processes.pop(pid)
        parent = self.processes.get(gone["ppid"])
        if parent is not None:
            parent["reaped"] += gone["own"] + gone["reaped"]
        self.write()

    def run(self, load: dict[int, list[int]]) -> None:
        """One second: process ``pid`` keeps each CPU of ``load[pid]`` busy; the other CPUs idle."""
        used = {cpu for cpus in load.values() for cpu in cpus}
        for cpu in range(len(self.busy)):
            if cpu in used:
                self.busy[cpu] += HZ
            else:
                self.idle[cpu] += HZ
        for pid, cpus in load.items():
            self.processes[pid]["own"] += HZ * len(cpus)
        self.write()

    def write(self) -> None:
        # Every process directory is rewritten: one that ended disappears, as in /proc.
        for entry in self.root.glob("[0-9]*"):
            shutil.rmtree(entry)
        self.root.mkdir(parents=True, exist_ok=True)
        total = [sum(x) for x in zip(self.busy, self.idle)]
        lines = [f"cpu  {sum(self.busy)} 0 0 {sum(self.idle)} 0 0 0 0 0 0"]  # every CPU of the host
        for cpu, (busy, idle) in enumerate(zip(self.busy, self.idle)):
            user, system = busy - busy // 4, busy // 4
            lines.append(f"cpu{cpu} {user} 0 {system} {idle} 0 0 0 0 0 0")
        lines += ["intr 12345 0 0", f"ctxt {sum(total)}", "btime 1700000000", "processes 321"]
        (self.root / "stat").write_text("\n".join(lines) + "\n")
        for pid, info in self.processes.items():
            folder = self.root / str(pid)
            (folder / "task" / str(pid)).mkdir(parents=True)
            own, reaped = info["own"], info["reaped"]
            (folder / "stat").write_text(
                f"{pid} (python -c (x) y) R {info['ppid']} {pid} {pid} 0 -1 4194304 10 0 0 0 "
                f"{own - own // 4} {own // 4} {reaped - reaped // 4} {reaped // 4} 20 0 3 0 100 1000 200\n"
            )
            if self.children_files:
                kids = [str(child) for child, other in self.processes.items() if other["ppid"] == pid]
                (folder / "task" / str(pid) / "children").write_text("".join(kid + " " for kid in kids))
