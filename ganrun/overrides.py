"""The ``ganrun`` command line before Hydra sees it.

Four jobs, all done before Hydra creates (or, on a resume, rewrites) a run directory,
so that bad input leaves nothing behind:

* **Launchers.** ``launcher=slurm`` / ``launcher=joblib`` act only under ``-m`` (without
  it Hydra would train here, e.g. on a cluster's login node), and need their plugin.
* **Resume target.** ``ckpt_path=RUN/checkpoints/last.ckpt`` continues *in* ``RUN``
  (``hydra.run.dir=RUN`` is added unless given), so TensorBoard curves, samples and
  checkpoints stay in one folder, with the overrides the run was trained with
  (``ganrun.resume``; the command line's apply on top). ``ckpt_path=last`` resumes
  ``hydra.run.dir``'s own ``checkpoints/last.ckpt`` (or, with ``-m``, each job's in
  ``hydra.sweep.dir``), and needs that directory named.
* **One-line errors.** A single run's overrides are composed once here; Hydra's
  multi-line composition errors (unknown option, unknown key, bad syntax) become one
  line.
* **Preflight.** The composed config goes through ``ganrun.preflight``: the schema,
  the accelerator, the data (downloaded if need be) and the networks built once, and
  on a resume whether they fit the checkpoint.

Command lines with other flags (``--help``, ``--cfg job``, ``-c``, ...) go to Hydra untouched.
"""
from __future__ import annotations

import difflib
import re
from typing import Optional

from ganrun import config_dir
from ganrun.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra hands jobs to a launcher only under -m; each option's plugin comes with an extra.
SWEEP_LAUNCHERS = {"slurm": "hydra_plugins.hydra_submitit_launcher", "joblib": "hydra_plugins.hydra_joblib_launcher"}


def prepare_overrides(argv: list[str]) -> list[str]:
    """``argv`` plus what resuming needs, checked; raises ConfigError for bad input.

    A single run is composed and checked here, before Hydra writes anything
    (``ganrun.preflight``); on a resume, the run's stored overrides come first
    (``ganrun.resume``). Sweeps are checked per job by ``train()``.
    """
    if any(arg.startswith("-") and arg not in MULTIRUN_FLAGS for arg in argv):
        return argv
    multirun = any(arg in MULTIRUN_FLAGS for arg in argv)
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    values = override_values(overrides)
    launcher = values.get("launcher")
    if launcher in SWEEP_LAUNCHERS and not multirun:
        raise ConfigError(f"launcher={launcher} starts sweep jobs, and only with -m: add -m "
                          f"(ganrun -m launcher={launcher} ..., one job or many); without it the run would train here")
    if launcher in SWEEP_LAUNCHERS and not _installed(SWEEP_LAUNCHERS[launcher]):
        raise ConfigError(f"launcher={launcher} needs Hydra's {launcher} launcher plugin: pip install 'ganrun[{launcher}]'")
    added = resume_overrides(values, multirun)
    if multirun:
        return argv + added
    from ganrun.preflight import preflight
    from ganrun.resume import find_resume

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
    from ganrun.checkpoint_io import run_dir_of

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


def compose_or_explain(overrides: list[str], resume=None):
    """(the composed config, its group choices such as ``{"model": "dcgan"}``), or a
    ConfigError whose one line says what Hydra refused."""
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _compose(overrides, hydra=True)
    except (HydraException, OmegaConfBaseException) as error:
        problem = explain(error, overrides)
        if resume is not None and _composes(resume.given):
            problem = resume.refusal(problem, built=False)  # the command line clashes with the run's overrides
        raise ConfigError(problem) from None
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]  # ${hydra:...} cannot be resolved before Hydra runs
    return cfg, choices


def _composes(overrides: list[str]) -> bool:
    try:
        _compose(overrides)
        return True
    except Exception:
        return False


def compose_choices(overrides: list[str]) -> dict[str, str]:
    """The option chosen in each config group by ``overrides`` (``{"model": "dcgan", ...}``)."""
    return {k: v for k, v in _compose(overrides, hydra=True).hydra.runtime.choices.items() if v is not None}


def _compose(overrides: list[str], hydra: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="ganrun"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def explain(error: Exception, overrides: list[str]) -> str:
    text = str(error)
    missing = re.search(r"Could not find '(?P<group>[^']+)/(?P<option>[^']+)'", text)
    if missing:
        group, option = missing["group"], missing["option"]
        listing = text.split("Available options in", 1)[-1].split("Config search path", 1)[0]
        options = re.findall(r"^\t(\S+)$", listing, flags=re.MULTILINE)
        close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
        guess = f"; did you mean {group}={close[0]}?" if close else ""
        choices = f" (choose one of: {', '.join(options)})" if options else ""
        return f"{group}={option} is not a known {group} option{guess}{choices}"
    unknown = re.search(r"Could not override '(?P<key>[^']+)'", text)
    if unknown and "not in struct" in str(error.__cause__ or ""):
        key = unknown["key"]
        others = [item for item in overrides if item.partition("=")[0].lstrip("+") != key]
        guess = _closest_key(key, others)
        hint = f"did you mean {guess}? " if guess else ""
        return f"{key} is not a config key; {hint}(ganrun --cfg job lists every key; +{key}=VALUE adds a new one)"
    lines = [line.strip() for line in text.split("Config search path", 1)[0].splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _closest_key(key: str, overrides: list[str]) -> Optional[str]:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(_compose(overrides), resolve=False)
    except Exception:
        return None
    keys = list(_keys(cfg))
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    if close:
        return close[0]
    # A key given without its group (lr=1e-3 for optimizer.lr): match on the last path component.
    by_name: dict[str, list[str]] = {}
    for candidate in keys:
        by_name.setdefault(candidate.rsplit(".", 1)[-1], []).append(candidate)
    name = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=1, cutoff=0.8)
    return min(by_name[name[0]], key=len) if name else None


def _keys(node, prefix: str = ""):
    if isinstance(node, dict):
        for name, value in node.items():
            yield f"{prefix}{name}"
            yield from _keys(value, f"{prefix}{name}.")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def quote_value(value: str) -> str:
    """A Hydra override value: bare when safe, else single-quoted with escapes."""
    if re.fullmatch(r"[\w./~@:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
