"""What the benchmark scripts share (``bench_steps.py``, ``bench_startup.py``,
``bench_contention.py``): the ``ganrun`` command, the machine line each prints first,
a scratch folder, and the JSON report."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional


def ganrun_command() -> list[str]:
    """``python -m ganrun`` with this interpreter: the ``ganrun`` command of this checkout, not
    whichever one comes first on PATH (another environment's, or a stale entry point)."""
    return [sys.executable, "-m", "ganrun"]


def machine_line(device: str = "cpu") -> str:
    """Versions, device, cores, torch threads and the load average: the first line of every benchmark's output."""
    import pytorch_lightning as pl
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    return (
        f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, device {device} ({name}), "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
    )


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for the runs' outputs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ganrun-bench-") as folder:
        yield Path(folder)


def write_json(path: Optional[Path], report: dict) -> None:
    """The results to ``path`` as JSON (nothing when no path was given)."""
    if path is not None:
        path.write_text(json.dumps(report, indent=2))
