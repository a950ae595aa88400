"""ganrun-report's order and plot labels, on hand-written job folders (no training)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from ganrun.commands.report import Job, find_jobs, metric_label, natural_key

LEARNING_RATES = ["0.001", "0.0001", "1e-05", "0.01", "0.0002"]


def write_sweep(sweep: Path) -> None:
    for index, lr in enumerate(LEARNING_RATES):
        job = sweep / f"optimizer.lr={lr}"
        job.mkdir(parents=True)
        result = {"status": "completed", "overrides": [f"optimizer.lr={lr}", "steps=200"],
                  "metrics": {"hp/metric": float(index), "best/cfid": float(index), "g_updates": 200.0},
                  "wall_time_s": 1.0, "error": None}
        (job / "result.json").write_text(json.dumps(result))


def test_report_sorts_numbers_as_numbers_and_is_stable(tmp_path):
    write_sweep(tmp_path)
    expected = sorted(LEARNING_RATES, key=float)
    orders = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader((tmp_path / "report.csv").open()))
        orders.append([(row["#"], row["optimizer.lr"]) for row in rows])
    assert orders[0] == orders[1] == [(str(i), lr) for i, lr in enumerate(expected)]
    assert [job.overrides["optimizer.lr"] for job in find_jobs(tmp_path)] == expected


def test_natural_key_reads_decimals_exponents_and_trial_numbers():
    names = ["10_n_critic=2", "2_n_critic=5", "lr=0.001", "lr=0.0001", "lr=2e-4", "x=-1", "x=-0.5"]
    assert sorted(names, key=natural_key) == ["2_n_critic=5", "10_n_critic=2", "lr=0.0001", "lr=2e-4", "lr=0.001", "x=-1", "x=-0.5"]


def test_plot_axis_names_the_metric_behind_hp_metric():
    jobs = [Job("a", "completed", {}, {"hp/metric": 1.0, "best/cfid": 1.0, "best/step": 100.0})]
    assert metric_label(jobs, "hp/metric") == "hp/metric (best cfid, lower is better)"
    ring = [Job("a", "completed", {}, {"hp/metric": 8.0, "hp/modes_covered": 8.0})]
    assert metric_label(ring, "hp/metric") == "hp/metric (best modes_covered, higher is better)"
    assert metric_label(jobs, "hp/loss_g") == "hp/loss_g"
