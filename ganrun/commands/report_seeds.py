"""Seeds in ``ganrun-report``: jobs that differ only by ``seed`` form one *configuration*,
summarised as ``mean ± std`` of each metric over its completed jobs.

The spread is the sample standard deviation (ddof=1), the usual estimate from a few
seeds; a configuration with one completed job shows that job's value and n=1. Failed,
interrupted and unfinished jobs are listed in the job table but left out of the means,
and the configuration table says how many were left out.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ganrun.commands.report import Job

SEED_KEY = "seed"
AVERAGED_STATUS = "completed"


@dataclass
class Configuration:
    """Jobs whose overrides are the same apart from ``seed``."""

    number: int
    overrides: dict[str, str]  # the jobs' shared overrides (no seed)
    jobs: list[Job] = field(default_factory=list)

    @property
    def averaged(self) -> list[Job]:
        return [job for job in self.jobs if job.status == AVERAGED_STATUS]

    @property
    def left_out(self) -> list[Job]:
        return [job for job in self.jobs if job.status != AVERAGED_STATUS]

    def values(self, metric: str) -> list[float]:
        """``metric`` of each completed job that reported it (NaN included, as it was measured)."""
        return [
            float(job.metrics[metric]) for job in self.averaged if isinstance(job.metrics.get(metric), (int, float))
        ]

    def seeds(self) -> list[str]:
        """The seeds of the completed jobs (those averaged)."""
        return [job.overrides.get(SEED_KEY, "") for job in self.averaged]

    def label(self, keys: list[str], separator: str = ", ") -> str:
        """The configuration's values of ``keys`` (the swept keys other than seed), e.g. ``model=gan, optimizer.lr=0.001``."""
        if len(keys) == 1:
            return self.overrides.get(keys[0], "")
        return separator.join(f"{key}={self.overrides.get(key, '')}" for key in keys) or "all jobs"


def seeds_vary(jobs: list[Job]) -> bool:
    """Whether the sweep ran some configuration with more than one seed value."""
    return len({job.overrides.get(SEED_KEY) for job in jobs}) > 1


def configurations(jobs: list[Job]) -> list[Configuration]:
    """Jobs grouped by their overrides without ``seed``, in the order of their first job."""
    groups: dict[tuple, Configuration] = {}
    for job in jobs:
        shared = {key: value for key, value in job.overrides.items() if key != SEED_KEY}
        identity = tuple(sorted(shared.items()))
        if identity not in groups:
            groups[identity] = Configuration(len(groups), shared)
        groups[identity].jobs.append(job)
    return list(groups.values())


def mean_and_std(values: list[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def mean_std_text(values: list[float], count: int) -> str:
    """``7.333 ± 0.5774``; one value alone as itself; `` (n=k)`` when fewer than the
    configuration's ``count`` completed jobs reported this metric; "" without values."""
    if not values:
        return ""
    mean, std = mean_and_std(values)
    text = _number(mean) if std is None else f"{_number(mean)} ± {_number(std)}"
    return text + (f" (n={len(values)})" if len(values) != count else "")


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def left_out_text(configuration: Configuration) -> str:
    """``1 failed (seed 1)``: the jobs not averaged, by status."""
    by_status: dict[str, list[str]] = {}
    for job in configuration.left_out:
        by_status.setdefault(job.status, []).append(job.overrides.get(SEED_KEY, "?"))
    return "; ".join(f"{len(seeds)} {status} (seed {', '.join(seeds)})" for status, seeds in by_status.items())


def markdown_section(jobs: list[Job], keys: list[str], metrics: list[str]) -> str:
    """The configuration table: one row per configuration, each metric as mean ± std, with n."""
    groups = configurations(jobs)
    left_out = sum(len(group.left_out) for group in groups)
    header = ["config", *keys, "seeds", "n", *metrics, "left out"]
    explanation = (
        f"{len(groups)} configuration(s) of jobs that differ only by seed; each metric is the mean ± sample std "
        f"(ddof=1) over the configuration's n completed jobs (n=1: the value itself). "
        f"{left_out} job(s) left out (failed, interrupted or unfinished; listed in the job table)."
    )
    lines = [
        "## Mean ± std over seeds",
        "",
        explanation,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for group in groups:
        count = len(group.averaged)
        cells = [
            f"c{group.number}",
            *[group.overrides.get(key, "") for key in keys],
            ", ".join(group.seeds()),
            str(count),
            *[mean_std_text(group.values(metric), count) for metric in metrics],
            left_out_text(group),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(jobs: list[Job], swept: list[str], metrics: list[str]) -> list[list]:
    """report.csv's configuration rows, in its job columns, then n, left_out and each metric's std:
    ``#`` is ``c0``, ``c1``, ...; the seed column lists the seeds averaged; a metric column holds the mean."""
    rows = []
    for group in configurations(jobs):
        count = len(group.averaged)
        overrides = " ".join(f"{key}={value}" for key, value in group.overrides.items())
        swept_cells = [" ".join(group.seeds()) if key == SEED_KEY else group.overrides.get(key, "") for key in swept]
        values = [group.values(metric) for metric in metrics]
        stats = [mean_and_std(column) if column else ("", "") for column in values]
        walls = [job.wall_time_s for job in group.averaged if job.wall_time_s is not None]
        rows.append(
            [
                f"c{group.number}",
                "",
                "mean over seeds",
                overrides,
                *swept_cells,
                *[mean for mean, _ in stats],
                statistics.fmean(walls) if walls else "",
                "",
                count,
                len(group.left_out),
                *["" if std is None else std for _, std in stats],
            ]
        )
    return rows
