"""What produced a run: package versions, git commit, command line, the Slurm job.

Written to ``RUN_DIR/environment.json`` at every start of a run (a resume keeps the
earlier starts under ``earlier_starts``) and stored in every checkpoint under
``checkpoint["ganrun"]["environment"]``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

from ganrun.runtime.slurm import job as slurm_job

PACKAGES = ("ganrun", "torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "tensorboard")


def collect(resumed_from: Optional[str] = None) -> dict:
    import torch

    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(shlex.quote(arg) for arg in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "resumed_from": resumed_from,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git": {"cwd": git_state(Path.cwd()), "ganrun": git_state(Path(__file__).resolve().parent)},
        "slurm": slurm_job.job_record(),
    }


def write(run_dir, environment: dict) -> Path:
    """``RUN_DIR/environment.json``; a previous file's starts move to ``earlier_starts``."""
    path = Path(run_dir) / "environment.json"
    earlier: list = []
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
            earlier = previous.pop("earlier_starts", []) + [previous]
        except (OSError, ValueError, AttributeError):
            earlier = []  # unreadable: replaced, the run's checkpoints keep their own copy
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**environment, "earlier_starts": earlier}, indent=2, default=str))
    os.replace(partial, path)
    return path


def update(run_dir, **fields) -> Path:
    """Add or replace top-level ``fields`` of this start's ``RUN_DIR/environment.json``."""
    path = Path(run_dir) / "environment.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record.update(fields)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, default=str))
    os.replace(partial, path)
    return path


def git_state(folder: Path) -> Optional[dict]:
    """{"commit", "dirty"} of the git work tree holding ``folder``; None outside one
    (or without git). An installed package (site-packages) is never reported."""
    if "site-packages" in folder.parts or "dist-packages" in folder.parts:
        return None
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit is None:
            return None
        status = _git(folder, "status", "--porcelain", "--untracked-files=no")
        return {"commit": commit, "dirty": bool(status), "root": _git(folder, "rev-parse", "--show-toplevel")}
    except OSError:
        return None


def _git(folder: Path, *args: str) -> Optional[str]:
    try:
        result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
