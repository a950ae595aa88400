"""Sweep results: each job's ``result.json``, and ``ganrun-report SWEEP_DIR``.

Every ``ganrun`` job writes ``<run_dir>/result.json`` when it ends, however it ends:

    {"status": "completed" | "failed" | "interrupted",
     "overrides": ["model=gan", "optimizer.lr=0.0001", ...],   # the job's command-line overrides
     "metrics": {"hp/metric": 8.0, "g_updates": 2000.0, ...},   # what train() returned
     "wall_time_s": 31.2, "error": null | "one line",
     "world_size": 2, "num_nodes": 2}                             # processes that trained it, and their nodes

``ganrun-report SWEEP_DIR`` finds every job below SWEEP_DIR (a ``.hydra/`` folder or a
``result.json``) and writes ``report.md``, ``report.csv`` and ``report.png`` there:
one row per job, failed and unfinished ones included (a job without ``result.json``
is "unknown/running"), and the metric against each hyperparameter the sweep varied.
When the sweep varies ``seed``, jobs that differ only by seed also get one row per
configuration with each metric as ``mean ± std`` (``ganrun.commands.report_seeds``), and
the plot shows each configuration's seeds, mean and error bar.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ganrun.commands import report_seeds
from ganrun.errors import ConfigError

RESULT_FILE = "result.json"
# What train() reports about the processes that trained the run; result.json keeps them
# beside the metrics, not among them.
PROCESS_KEYS = ("world_size", "num_nodes")
UNKNOWN = "unknown/running"
USAGE = "usage: ganrun-report SWEEP_DIR [metric=NAME]"
HELP = f"""
{USAGE}

Summarise a sweep: every job below SWEEP_DIR (its result.json, or .hydra/ for a job
still running) becomes a row of report.md and report.csv in SWEEP_DIR, and report.png
plots the metric against each hyperparameter the sweep varied. When the sweep varies
seed, jobs that differ only by seed also make one row per configuration with each
metric as mean ± std (sample std) and n, and the plot shows every seed, the mean and
the error bar of each configuration; failed and unfinished jobs are left out of them.

  SWEEP_DIR    a sweep folder, e.g. multirun/2026-11-23/10-45-57
  metric=NAME  the metric to plot (default hp/metric), e.g. hp/modes_covered or best/cfid

example: ganrun-report multirun/2026-11-23/10-45-57
"""


# ------------------------------------------------------------------ writing
def write_result(
    run_dir, status: str, metrics: dict, hydra_cfg, wall_time_s: float, error: Optional[BaseException] = None
) -> None:
    """``run_dir/result.json`` for this job (rank 0 only; written atomically)."""
    from pytorch_lightning.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    result = {
        "status": status,
        "overrides": overrides,
        "metrics": {key: _number(value) for key, value in metrics.items() if key not in PROCESS_KEYS},
        "wall_time_s": round(wall_time_s, 3),
        "error": one_line(error) if error is not None else None,
    }
    result.update({key: int(metrics[key]) for key in PROCESS_KEYS if key in metrics})
    path = Path(run_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(RESULT_FILE + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, path)


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def one_line(error: BaseException) -> str:
    """An error as one line: a user error's message, else its type and first line."""
    lines = str(error).strip().splitlines() or [""]
    text = lines[0] if isinstance(error, (ConfigError, FileNotFoundError)) else f"{type(error).__name__}: {lines[0]}"
    return text.strip()


# ------------------------------------------------------------------ reading
@dataclass
class Job:
    name: str  # path relative to the sweep folder
    status: str
    overrides: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: Optional[float] = None
    error: Optional[str] = None


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder below ``sweep_dir``, in name order with numbers read as numbers
    (optuna's 0, 1, ..., 10; ``optimizer.lr=0.0001`` before ``optimizer.lr=0.001``)."""
    folders = {p.parent for p in sweep_dir.rglob(RESULT_FILE)}
    folders |= {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    return [
        read_job(folder, sweep_dir)
        for folder in sorted(folders, key=lambda f: natural_key(str(f.relative_to(sweep_dir))))
    ]


NUMBER = re.compile(r"(?:(?<==)-)?(?<![0-9.])(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![0-9.])")


def natural_key(text: str) -> tuple:
    """Sort key: text parts as text, numbers (``0.0001``, ``1e-4``, ``10``) as numbers; the text
    itself breaks ties (``1e-4`` and ``0.0001``), so the order never depends on the file system."""
    parts: list = []
    position = 0
    for match in NUMBER.finditer(text):
        parts += [(0, text[position : match.start()], 0.0), (1, "", float(match.group()))]
        position = match.end()
    parts.append((0, text[position:], 0.0))
    return (parts, text)


def read_job(folder: Path, sweep_dir: Path) -> Job:
    name = str(folder.relative_to(sweep_dir)) if folder != sweep_dir else folder.name
    result_path = folder / RESULT_FILE
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        return Job(
            name,
            result["status"],
            _parse_overrides(result.get("overrides", [])),
            result.get("metrics", {}),
            result.get("wall_time_s"),
            result.get("error"),
        )
    from omegaconf import OmegaConf

    overrides_path = folder / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
    return Job(name, UNKNOWN, _parse_overrides(overrides))


def _parse_overrides(overrides: list[str]) -> dict[str, str]:
    parsed = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        if not key.startswith("hydra."):
            parsed[key] = value
    return parsed


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (in first-seen order)."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def metric_keys(jobs: list[Job]) -> list[str]:
    keys = sorted({key for job in jobs for key, value in job.metrics.items() if isinstance(value, (int, float))})
    return keys


def summary_metric_keys(jobs: list[Job]) -> list[str]:
    """What the Markdown table shows: the sweepers' and HPARAMS tab's numbers (hp/*, best/*) and G updates."""
    keys = [key for key in metric_keys(jobs) if key.split("/")[0] in ("hp", "best")]
    return keys + (["g_updates"] if "g_updates" in metric_keys(jobs) else [])


def choose_metric(jobs: list[Job], requested: Optional[str]) -> Optional[str]:
    available = metric_keys(jobs)
    if requested is not None:
        if requested not in available:
            raise ConfigError(
                f"metric={requested} is not in any job's result; available: {', '.join(available) or 'none'}"
            )
        return requested
    for key in ("hp/metric", *[k for k in available if k.startswith("hp/")]):
        if key in available:
            return key
    return None


# ------------------------------------------------------------------ tables
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def common_overrides(jobs: list[Job]) -> list[str]:
    """Overrides every job shares (shown once above the table)."""
    swept = set(swept_keys(jobs))
    first = jobs[0].overrides
    return [f"{k}={v}" for k, v in first.items() if k not in swept and all(k in job.overrides for job in jobs)]


def markdown_table(jobs: list[Job]) -> str:
    """Jobs numbered as in report.csv (which also has each job's folder); one column per swept key."""
    swept, metrics = swept_keys(jobs), summary_metric_keys(jobs)
    header = ["#", "status", *swept, *metrics, "wall time (s)", "error"]
    rows = [
        [
            str(number),
            job.status,
            *[job.overrides.get(k, "") for k in swept],
            *[_cell(job.metrics.get(k)) for k in metrics],
            _cell(job.wall_time_s),
            (job.error or "").replace("|", "\\|"),
        ]
        for number, job in enumerate(jobs)
    ]
    common = " ".join(common_overrides(jobs)) or "none"
    lines = [f"{len(jobs)} jobs; overrides common to all: {common}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    if report_seeds.seeds_vary(jobs):
        keys = [key for key in swept if key != report_seeds.SEED_KEY]
        table += "\n" + report_seeds.markdown_section(jobs, keys, metrics)
    return table


def write_csv(jobs: list[Job], path: Path) -> None:
    """One row per job; with seeds swept, then one row per configuration (``report_seeds.csv_rows``)
    and the columns n, left_out and ``<metric>_std`` (empty in job rows)."""
    swept, metrics = swept_keys(jobs), metric_keys(jobs)
    seeds = report_seeds.seeds_vary(jobs)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        extra = ["n", "left_out", *[f"{metric}_std" for metric in metrics]] if seeds else []
        writer.writerow(["#", "job", "status", "overrides", *swept, *metrics, "job_wall_time_s", "error", *extra])
        for number, job in enumerate(jobs):
            overrides = " ".join(f"{k}={v}" for k, v in job.overrides.items())
            writer.writerow(
                [
                    number,
                    job.name,
                    job.status,
                    overrides,
                    *[job.overrides.get(k, "") for k in swept],
                    *[job.metrics.get(k, "") for k in metrics],
                    job.wall_time_s if job.wall_time_s is not None else "",
                    job.error or "",
                    *[""] * len(extra),
                ]
            )
        if seeds:
            writer.writerows(report_seeds.csv_rows(jobs, swept, metrics))


# ------------------------------------------------------------------ plot
def plot_metric(jobs: list[Job], metric: str, path: Path) -> Optional[str]:
    """report.png (``draw_metric``), cropped to what was drawn. Returns a note if not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was written: pip install 'ganrun[report]'"
    figure = draw_metric(jobs, metric)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return None


def draw_metric(jobs: list[Job], metric: str):
    """The figure of report.png: with seeds swept, one panel of configurations (each seed,
    mean and error bar); else one panel per swept hyperparameter. Laid out so that every
    label lies inside the figure."""
    import matplotlib.pyplot as plt

    if report_seeds.seeds_vary(jobs):
        figure = _draw_configurations(plt, jobs, metric)
    else:
        figure = _draw_per_key(plt, jobs, metric)
    figure.tight_layout()
    return figure


def _draw_per_key(plt, jobs: list[Job], metric: str):
    """One panel per swept hyperparameter: the metric of each job that reported it."""
    swept = swept_keys(jobs) or ["job"]
    done = [job for job in jobs if isinstance(job.metrics.get(metric), (int, float))]
    figure, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 4), squeeze=False)
    for axis, key in zip(axes[0], swept):
        values = [job.name if key == "job" else job.overrides.get(key, "") for job in done]
        ys = [job.metrics[metric] for job in done]
        numeric = all(_is_float(v) for v in values) and values
        if numeric:
            xs = [float(v) for v in values]
            axis.scatter(xs, ys)
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                axis.set_xscale("log")
        else:
            categories = list(dict.fromkeys(values))
            axis.scatter([categories.index(v) for v in values], ys)
            axis.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        axis.set_xlabel(key)
        axis.set_ylabel(axis_label(jobs, metric))
        axis.grid(alpha=0.3)
    missing = len(jobs) - len(done)
    title = f"{metric} over {len(done)} job(s)" + (f"\n{missing} without it (failed or unfinished)" if missing else "")
    figure.suptitle(title, fontsize=10)
    return figure


def _draw_configurations(plt, jobs: list[Job], metric: str):
    """One column per configuration (jobs that differ only by seed): each completed seed's
    value (left, spread a little so equal values stay visible), then the mean with an error
    bar of one sample std (right; none for n=1)."""
    keys = [key for key in swept_keys(jobs) if key != report_seeds.SEED_KEY]
    groups = report_seeds.configurations(jobs)
    figure, axis = plt.subplots(figsize=(max(4.5, 1.2 * len(groups) + 2), 4))
    drawn = False
    for index, group in enumerate(groups):
        values = group.values(metric)
        if not values:
            continue
        offsets = [-0.12] if len(values) == 1 else [-0.2 + 0.16 * i / (len(values) - 1) for i in range(len(values))]
        axis.scatter(
            [index + offset for offset in offsets],
            values,
            s=18,
            color="tab:blue",
            alpha=0.7,
            label=None if drawn else "one seed",
        )
        mean, std = report_seeds.mean_and_std(values)
        axis.errorbar(
            [index + 0.12],
            [mean],
            yerr=None if std is None else [std],
            fmt="o",
            color="black",
            capsize=5,
            label=None if drawn else "mean ± std",
        )
        drawn = True
    labels = ["\n".join([group.label(keys, "\n"), f"n={len(group.values(metric))}"]) for group in groups]
    axis.set_xticks(range(len(groups)), labels, rotation=30 if len(groups) > 6 else 0)
    axis.set_xlim(-0.6, len(groups) - 0.4)
    axis.set_xlabel(keys[0] if len(keys) == 1 else "configuration")
    axis.set_ylabel(axis_label(jobs, metric))
    axis.grid(alpha=0.3)
    if drawn:
        axis.legend(fontsize=8)
    left_out = sum(len(group.left_out) for group in groups)
    title = f"{metric}: mean ± std over seeds of {len(groups)} configuration(s)"
    figure.suptitle(title + (f"\n{left_out} job(s) left out (failed or unfinished)" if left_out else ""), fontsize=10)
    return figure


def axis_label(jobs: list[Job], metric: str) -> str:
    """``metric_label`` on two lines when it explains the metric (short enough for a 4-inch axis)."""
    return metric_label(jobs, metric).replace(" (", "\n(", 1)


def metric_label(jobs: list[Job], metric: str) -> str:
    """The y-axis: the metric's name, and for hp/metric which metric it is and which way is better
    (read from the jobs' ``best/<name>`` keys, else modes covered on 2-D data)."""
    if metric != "hp/metric":
        return metric
    names = sorted(
        {key.split("/", 1)[1] for job in jobs for key in job.metrics if key.startswith("best/") and key != "best/step"}
    )
    if not names and any("hp/modes_covered" in job.metrics for job in jobs):
        names = ["modes_covered"]
    if len(names) != 1:
        return metric
    from ganrun.metrics.suite import METRICS

    direction = ""
    if names[0] in METRICS:
        direction = ", higher is better" if METRICS[names[0]][1] else ", lower is better"
    return f"hp/metric (best {names[0]}{direction})"


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------ command
def report(sweep_dir: Path, metric: Optional[str] = None) -> dict[str, Any]:
    """Writes report.md, report.csv and (with matplotlib) report.png in ``sweep_dir``."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"{sweep_dir} does not exist or is not a folder; give a sweep folder such as multirun/DATE/TIME"
        )
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(f"{sweep_dir} holds no ganrun jobs (no */.hydra/overrides.yaml or */result.json below it)")
    chosen = choose_metric(jobs, metric)
    markdown = markdown_table(jobs)
    (sweep_dir / "report.md").write_text(markdown)
    write_csv(jobs, sweep_dir / "report.csv")
    note = (
        "no metric in any job's result, so no plot was written"
        if chosen is None
        else plot_metric(jobs, chosen, sweep_dir / "report.png")
    )
    return {"jobs": jobs, "metric": chosen, "markdown": markdown, "note": note}


def main(argv: list[str]) -> None:
    positional = [a for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(options) - {"metric"}
    if len(positional) != 1 or unknown:
        bad = f"unknown argument '{sorted(unknown)[0]}=...'; " if unknown else ""
        raise ConfigError(f"{bad}{USAGE}")
    sweep_dir = Path(positional[0])
    outcome = report(sweep_dir, options.get("metric"))
    print(outcome["markdown"], end="")
    counts = {}
    for job in outcome["jobs"]:
        counts[job.status] = counts.get(job.status, 0) + 1
    print(
        f"ganrun-report: {len(outcome['jobs'])} jobs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"wrote {sweep_dir / 'report.md'}, {sweep_dir / 'report.csv'}",
        end="",
    )
    if outcome["note"]:
        print(f"\nganrun-report: {outcome['note']}")
    else:
        drawn = (
            ": each configuration's seeds, mean and std"
            if report_seeds.seeds_vary(outcome["jobs"])
            else " against each swept key"
        )
        print(f", {sweep_dir / 'report.png'} ({outcome['metric']}{drawn})")
