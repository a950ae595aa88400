"""scripts/gpu_check.sh: on a machine without a GPU it runs its CPU fallback, says so, and writes its summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from support import REPO

ROOT = REPO


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the full GPU check is run by hand on a GPU machine")
def test_gpu_check_runs_its_cpu_fallback_and_writes_one_summary(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No CUDA GPU here: this is the CPU fallback" in result.stdout
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["mode"] == "cpu-fallback"
    assert [s["status"] for s in summary["steps"]] == ["ok"] * 4
    assert summary["bench"]["ring_cpu"]["ganrun"]["images_per_s"] > 0
    assert summary["ddp"]["ddp_cpu_2_processes"]["status"] == "completed"
    assert summary["default_job"]["eval"]["g_updates"] == 20
    assert "CPU fallback" in (tmp_path / "gpu_check.md").read_text()
