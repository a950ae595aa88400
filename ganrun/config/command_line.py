"""The ``ganrun`` command line before Hydra sees it.

Four jobs, all done before Hydra creates (or, on a resume, rewrites) a run directory,
so that bad input leaves nothing behind:

* **Launchers.** ``launcher=slurm`` / ``launcher=joblib`` act only under ``-m`` (without
  it Hydra would train here, e.g. on a cluster's login node), and need their plugin.
* **Resume target.** ``ckpt_path=RUN/checkpoints/last.ckpt`` continues *in* ``RUN``
  (``hydra.run.dir=RUN`` is added unless given), so TensorBoard curves, samples and
  checkpoints stay in one folder, with the overrides the run was trained with
  (``ganrun.config.resume``; the command line's apply on top). ``ckpt_path=last`` resumes
  ``hydra.run.dir``'s own ``checkpoints/last.ckpt`` (or, with ``-m``, each job's in
  ``hydra.sweep.dir``), and needs that directory named.
* **One-line errors.** A single run's overrides are composed once
  (``ganrun.config.compose``), Hydra's multi-line errors turned into one line.
* **Preflight.** The composed config goes through ``ganrun.config.preflight``: the schema,
  the accelerator, the data (downloaded if need be) and the networks built once, and
  on a resume whether they fit the checkpoint.

Command lines with other flags (``--help``, ``--cfg job``, ``-c``, ...) go to Hydra untouched.
"""

from __future__ import annotations

import re

from ganrun.config.compose import compose_or_explain
from ganrun.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra hands jobs to a launcher only under -m; each option's plugin comes with an extra.
SWEEP_LAUNCHERS = {"slurm": "hydra_plugins.hydra_submitit_launcher", "joblib": "hydra_plugins.hydra_joblib_launcher"}


def prepare_overrides(argv: list[str]) -> list[str]:
    """``argv`` plus what resuming needs, checked; raises ConfigError for bad input.

    A single run is composed and checked here, before Hydra writes anything
    (``ganrun.config.preflight``); on a resume, the run's stored overrides come first
    (``ganrun.config.resume``). Sweeps are checked per job by ``train()``.
    """
    if any(arg.startswith("-") and arg not in MULTIRUN_FLAGS for arg in argv):
        return argv
    multirun = any(arg in MULTIRUN_FLAGS for arg in argv)
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    values = override_values(overrides)
    launcher = values.get("launcher")
    if launcher in SWEEP_LAUNCHERS and not multirun:
        raise ConfigError(
            f"launcher={launcher} starts sweep jobs, and only with -m: add -m "
            f"(ganrun -m launcher={launcher} ..., one job or many); without it the run would train here"
        )
    if launcher in SWEEP_LAUNCHERS and not _installed(SWEEP_LAUNCHERS[launcher]):
        raise ConfigError(
            f"launcher={launcher} needs Hydra's {launcher} launcher plugin: pip install 'ganrun[{launcher}]'"
        )
    added = resume_overrides(values, multirun)
    if multirun:
        return argv + added
    from ganrun.config.preflight import preflight
    from ganrun.config.resume import find_resume

    resume = find_resume(overrides, values)
    if resume is not None:
        overrides = resume.overrides()
    cfg, choices = compose_or_explain(overrides + added, resume)
    preflight(cfg, choices, resume, typed=values)
    return overrides + added


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def override_values(overrides: list[str]) -> dict[str, str]:
    """``{"key": "value"}`` for ``key=value`` / ``+key=value`` / ``++key=value`` (last one wins), unquoted."""
    values = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            values[key.lstrip("+")] = _unquote(value)
    return values


def resume_overrides(values: dict[str, str], multirun: bool) -> list[str]:
    from ganrun.records.checkpoints import run_dir_of

    ckpt_path = values.get("ckpt_path")
    if ckpt_path in (None, "", "null"):
        return []
    if ckpt_path == "last":
        needed = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if needed not in values:
            raise ConfigError(
                f"ckpt_path=last needs {needed}=DIR, the run to continue "
                f"(it resumes DIR/{'JOB/' if multirun else ''}checkpoints/last.ckpt, or starts the run if there is none)"
            )
        return []
    if multirun or "hydra.run.dir" in values:
        return []
    run_dir = run_dir_of(ckpt_path)
    return [f"hydra.run.dir={quote_value(str(run_dir))}"] if run_dir is not None else []


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def quote_value(value: str) -> str:
    """A Hydra override value: bare when safe, else single-quoted with escapes."""
    if re.fullmatch(r"[\w./~@:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
