"""ganrun-report: job order, plot labels, seeds summarised as mean ± std and their plot, on hand-written
job folders; one real seed sweep through the commands (slow)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ganrun.commands.report import Job, find_jobs, metric_label, natural_key

LEARNING_RATES = ["0.001", "0.0001", "1e-05", "0.01", "0.0002"]


def write_sweep(sweep: Path) -> None:
    for index, lr in enumerate(LEARNING_RATES):
        job = sweep / f"optimizer.lr={lr}"
        job.mkdir(parents=True)
        result = {
            "status": "completed",
            "overrides": [f"optimizer.lr={lr}", "steps=200"],
            "metrics": {"hp/metric": float(index), "best/cfid": float(index), "g_updates": 200.0},
            "wall_time_s": 1.0,
            "error": None,
        }
        (job / "result.json").write_text(json.dumps(result))


def test_report_sorts_numbers_as_numbers_and_is_stable(tmp_path):
    write_sweep(tmp_path)
    expected = sorted(LEARNING_RATES, key=float)
    orders = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader((tmp_path / "report.csv").open()))
        orders.append([(row["#"], row["optimizer.lr"]) for row in rows])
    assert orders[0] == orders[1] == [(str(i), lr) for i, lr in enumerate(expected)]
    assert [job.overrides["optimizer.lr"] for job in find_jobs(tmp_path)] == expected


def test_natural_key_reads_decimals_exponents_and_trial_numbers():
    names = ["10_n_critic=2", "2_n_critic=5", "lr=0.001", "lr=0.0001", "lr=2e-4", "x=-1", "x=-0.5"]
    assert sorted(names, key=natural_key) == [
        "2_n_critic=5",
        "10_n_critic=2",
        "lr=0.0001",
        "lr=2e-4",
        "lr=0.001",
        "x=-1",
        "x=-0.5",
    ]


def test_plot_axis_names_the_metric_behind_hp_metric():
    jobs = [Job("a", "completed", {}, {"hp/metric": 1.0, "best/cfid": 1.0, "best/step": 100.0})]
    assert metric_label(jobs, "hp/metric") == "hp/metric (best cfid, lower is better)"
    ring = [Job("a", "completed", {}, {"hp/metric": 8.0, "hp/modes_covered": 8.0})]
    assert metric_label(ring, "hp/metric") == "hp/metric (best modes_covered, higher is better)"
    assert metric_label(jobs, "hp/loss_g") == "hp/loss_g"


# ------------------------------------------------------------------ seeds
# Three configurations x seeds 0-2: gan (three completed), lsgan (seed 1 failed), wgan (seed 0 only completed).
SEED_SWEEP = {
    ("gan", 0): ("completed", 6.0),
    ("gan", 1): ("completed", 7.0),
    ("gan", 2): ("completed", 8.0),
    ("lsgan", 0): ("completed", 5.0),
    ("lsgan", 1): ("failed", None),
    ("lsgan", 2): ("completed", 9.0),
    ("wgan", 0): ("completed", 4.0),
    ("wgan", 1): ("interrupted", None),
    ("wgan", 2): ("unknown/running", None),
}


def write_seed_sweep(sweep: Path) -> None:
    """Job folders as ``ganrun -m seed=0,1,2 model=gan,lsgan,wgan dataset=ring steps=200`` leaves them."""
    for (model, seed), (status, value) in SEED_SWEEP.items():
        job = sweep / f"dataset=ring,model={model},seed={seed},steps=200"
        overrides = [f"seed={seed}", f"model={model}", "dataset=ring", "steps=200"]
        if status == "unknown/running":
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
            continue
        job.mkdir(parents=True)
        metrics = {} if value is None else {"hp/metric": value, "g_updates": 200.0 + 10 * seed}
        error = "RuntimeError: boom" if status == "failed" else None
        result = {
            "status": status,
            "overrides": overrides,
            "metrics": metrics,
            "wall_time_s": 2.0 + seed,
            "error": error,
        }
        (job / "result.json").write_text(json.dumps(result))


def sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5


def test_seeds_are_summarised_per_configuration_as_mean_and_sample_std(tmp_path):
    from ganrun.commands.report import report

    write_seed_sweep(tmp_path)
    outcome = report(tmp_path)
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    jobs = [row for row in rows if not row["#"].startswith("c")]
    assert len(jobs) == 9  # every job is listed, failed and unfinished ones too
    assert sorted(row["status"] for row in jobs).count("completed") == 6
    summary = {row["model"]: row for row in rows if row["#"].startswith("c")}
    assert set(summary) == {"gan", "lsgan", "wgan"}

    gan, lsgan, wgan = summary["gan"], summary["lsgan"], summary["wgan"]
    assert (gan["n"], gan["left_out"], gan["seed"]) == ("3", "0", "0 1 2")
    assert float(gan["hp/metric"]) == 7.0 and abs(float(gan["hp/metric_std"]) - 1.0) < 1e-12
    assert abs(float(gan["g_updates_std"]) - sample_std([200.0, 210.0, 220.0])) < 1e-12
    assert (lsgan["n"], lsgan["left_out"], lsgan["seed"]) == ("2", "1", "0 2")  # the failed seed 1 is not averaged
    assert float(lsgan["hp/metric"]) == 7.0 and abs(float(lsgan["hp/metric_std"]) - 8**0.5) < 1e-12
    assert (wgan["n"], wgan["left_out"], wgan["hp/metric"], wgan["hp/metric_std"]) == ("1", "2", "4.0", "")

    markdown = outcome["markdown"]
    assert "## Mean ± std over seeds" in markdown and "3 job(s) left out" in markdown
    table = [line for line in markdown.split("## Mean ± std over seeds")[1].splitlines() if line.startswith("| c")]
    cells = {line.split("|")[2].strip(): [cell.strip() for cell in line.strip("|").split("|")] for line in table}
    header = [
        cell.strip()
        for cell in next(line for line in markdown.splitlines() if line.startswith("| config")).strip("|").split("|")
    ]
    assert header == ["config", "model", "seeds", "n", "hp/metric", "g_updates", "left out"]
    assert cells["gan"][2:6] == ["0, 1, 2", "3", "7 ± 1", "210 ± 10"]
    assert cells["lsgan"][2:5] == ["0, 2", "2", "7 ± 2.828"] and cells["lsgan"][6] == "1 failed (seed 1)"
    assert cells["wgan"][2:5] == ["0", "1", "4"]  # n=1: the value alone
    assert cells["wgan"][6] == "1 interrupted (seed 1); 1 unknown/running (seed 2)"


def test_a_sweep_without_seeds_has_no_configuration_rows(tmp_path):
    from ganrun.commands.report import report

    write_sweep(tmp_path)
    outcome = report(tmp_path)
    assert "Mean ± std" not in outcome["markdown"]
    with (tmp_path / "report.csv").open() as handle:
        header = next(csv.reader(handle))
    assert "n" not in header and not any(name.endswith("_std") for name in header)


def texts_outside_figure(figure) -> list[str]:
    """What sticks out of the figure as drawn: its title, each panel's y label (by itself), and
    each panel with everything drawn around it (tick labels, axis labels, legend)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = figure.bbox.padded(0.5)
    boxes = {"title": figure._suptitle.get_window_extent(renderer)} if figure._suptitle is not None else {}
    for number, axis in enumerate(figure.axes):
        boxes[f"y label {axis.yaxis.label.get_text()!r}"] = axis.yaxis.label.get_window_extent(renderer)
        boxes[f"panel {number}"] = axis.get_tightbbox(renderer)
    return [
        name
        for name, box in boxes.items()
        if box.x0 < inside.x0 or box.y0 < inside.y0 or box.x1 > inside.x1 or box.y1 > inside.y1
    ]


def test_seed_plot_shows_each_seed_the_mean_and_an_error_bar_with_labels_inside(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection
    from matplotlib.container import ErrorbarContainer

    from ganrun.commands.report import draw_metric, find_jobs

    write_seed_sweep(tmp_path)
    (tmp_path / "dataset=ring,model=gan,seed=0,steps=200" / "result.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "overrides": ["seed=0", "model=gan", "dataset=ring", "steps=200"],
                "metrics": {"hp/metric": 6.0, "hp/modes_covered": 6.0},
                "wall_time_s": 1.0,
                "error": None,
            }
        )
    )
    figure = draw_metric(find_jobs(tmp_path), "hp/metric")
    try:
        axis = figure.axes[0]
        assert axis.yaxis.label.get_text() == "hp/metric\n(best modes_covered, higher is better)"
        assert texts_outside_figure(figure) == []
        seeds = sorted(
            float(y)
            for collection in axis.collections
            if isinstance(collection, PathCollection)
            for _, y in collection.get_offsets()
        )
        assert seeds == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]  # every completed seed, none of the others
        bars = [container for container in axis.containers if isinstance(container, ErrorbarContainer)]
        means = [float(container.lines[0].get_ydata()[0]) for container in bars]
        assert means == [7.0, 7.0, 4.0]  # gan, lsgan, wgan
        spans = [bar.lines[2][0].get_segments()[0][:, 1].tolist() if bar.has_yerr else None for bar in bars]
        assert spans[0] == [6.0, 8.0] and abs(spans[1][1] - 7.0 - 8**0.5) < 1e-9 and spans[2] is None  # n=1: no bar
        assert [label.get_text() for label in axis.get_xticklabels()] == ["gan\nn=3", "lsgan\nn=2", "wgan\nn=1"]
    finally:
        plt.close(figure)


def test_per_key_plot_keeps_its_labels_inside(tmp_path):
    import matplotlib.pyplot as plt

    from ganrun.commands.report import draw_metric, find_jobs

    write_sweep(tmp_path)
    figure = draw_metric(find_jobs(tmp_path), "hp/metric")
    try:
        assert figure.axes[0].yaxis.label.get_text() == "hp/metric\n(best cfid, lower is better)"
        assert texts_outside_figure(figure) == []
    finally:
        plt.close(figure)


@pytest.mark.slow  # two training jobs in a subprocess: 11 s on an idle 2-core Xeon, over 20 s when it is busy
def test_a_real_seed_sweep_is_summarised_through_the_commands(tmp_path):
    """``ganrun -m seed=0,1 ...`` then ``ganrun-report``: the configuration row is the mean and
    sample std of the two jobs' result.json values."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "ganrun",
        "-m",
        "seed=0,1",
        "model=gan",
        "dataset=ring",
        "steps=20",
        "callbacks=none",
        "threads=1",
        "accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    ]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    reported = subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import report_main; report_main()", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reported.returncode == 0, reported.stderr
    assert "## Mean ± std over seeds" in reported.stdout

    results = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/result.json"))]
    assert [result["status"] for result in results] == ["completed", "completed"]
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    (summary,) = [row for row in rows if row["#"] == "c0"]
    assert (summary["n"], summary["seed"], summary["left_out"]) == ("2", "0 1", "0")
    for metric in ("hp/loss_d", "hp/loss_g", "g_updates"):
        values = [result["metrics"][metric] for result in results]
        assert abs(float(summary[metric]) - sum(values) / 2) < 1e-12
        assert abs(float(summary[f"{metric}_std"]) - sample_std(values)) < 1e-12
    assert float(summary["g_updates"]) == 20.0
    png = sweep / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
