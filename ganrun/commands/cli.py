"""Console entry points: ``ganrun`` (train), ``ganrun-sample``, ``ganrun-eval``, ``ganrun-report``.

Kept thin and light to import (no torch at module level) so ``ganrun --help`` is fast.
Errors a user can fix are printed as one line naming the bad value and the choices
(exit status 2); a run stopped by the divergence guard prints one line and exits 3.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from ganrun import config_dir
from ganrun.runtime import threads

if "torch" not in sys.modules:
    # Before anything imports torch (ganrun.runtime.threads). Once torch is loaded its OpenMP
    # has read them: setting them then would change nothing but what environment.json reports.
    threads.set_wait_policy()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ganrun.config.resolvers import register_resolvers  # noqa: E402
from ganrun.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, ConfigError, TrainingDiverged  # noqa: E402

register_resolvers()
USER_ERRORS = (ConfigError, FileNotFoundError, TrainingDiverged)


def user_error(error: BaseException) -> Optional[BaseException]:
    """The user-fixable error behind ``error`` (Hydra wraps constructor errors), or None."""
    while error is not None:
        if isinstance(error, USER_ERRORS):
            return error
        error = error.__cause__
    return None


def _fail(error: BaseException, command: str = "ganrun") -> None:
    print(f"{command}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_DIVERGED if isinstance(error, TrainingDiverged) else EXIT_BAD_INPUT)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _train(cfg: DictConfig) -> Optional[float]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ganrun.runtime.distributed import check_sweep_launch

    hydra_cfg = HydraConfig.get()
    try:
        check_sweep_launch(cfg, hydra_cfg)
    except ConfigError as error:
        _fail(error)  # wrong for every job of the sweep: stop now
    try:
        metrics = train_and_record(cfg, hydra_cfg)
    except USER_ERRORS as cause:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One line now; raising lets the sweep run its other jobs and fail at the end.
            print(f"ganrun: error: {cause}", file=sys.stderr, flush=True)
            raise
        _fail(cause)
    if "stopped_by_signal" in metrics:
        # Checkpoint saved; the conventional status of a signalled process tells schedulers it did not finish.
        sys.exit(128 + int(metrics["stopped_by_signal"]))
    return metrics.get("hp/metric")


def train_and_record(cfg: DictConfig, hydra_cfg) -> dict[str, float]:
    """``train(cfg)`` as one Hydra job of ``ganrun`` or ``ganrun.run``: its metrics, with
    ``result.json`` written however the job ends.

    Every job leaves result.json, failed ones too (ganrun-report lists them); a refusal
    never overwrites the record of a run that was already there (a resume). A user-fixable
    error (``USER_ERRORS``) is raised as itself, unwrapped from Hydra's instantiation errors.
    """
    from ganrun.commands.report import write_result
    from ganrun.train import train

    started = time.perf_counter()
    earlier_run = has_run_records(cfg.run_dir)
    try:
        metrics = train(cfg, overrides=list(hydra_cfg.overrides.task))
    except BaseException as error:
        cause = user_error(error)
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        if not (earlier_run and isinstance(cause, (ConfigError, FileNotFoundError))):
            write_result(cfg.run_dir, status, {}, hydra_cfg, time.perf_counter() - started, error=cause or error)
        if cause is None:
            raise
        raise cause from None
    status = "interrupted" if "stopped_by_signal" in metrics else "completed"
    write_result(cfg.run_dir, status, metrics, hydra_cfg, time.perf_counter() - started)
    return metrics


def has_run_records(run_dir) -> bool:
    """Whether ``run_dir`` holds an earlier run (its result.json or checkpoints)."""
    from pathlib import Path

    return (Path(run_dir) / "result.json").is_file() or (Path(run_dir) / "checkpoints").is_dir()


def train_main() -> None:
    from ganrun.config.command_line import prepare_overrides

    try:
        sys.argv[1:] = prepare_overrides(sys.argv[1:])
    except USER_ERRORS as error:
        _fail(error)
    _train()


def sample_main(argv: Optional[list[str]] = None) -> None:
    from ganrun.commands import sample

    _run_command("ganrun-sample", sample.main, sample.HELP, argv)


def eval_main(argv: Optional[list[str]] = None) -> None:
    from ganrun.commands import evaluate

    _run_command("ganrun-eval", evaluate.run, evaluate.HELP, argv)


def report_main(argv: Optional[list[str]] = None) -> None:
    from ganrun.commands import report

    _run_command("ganrun-report", report.main, report.HELP, argv)


def _run_command(name: str, command, help_text: str, argv: Optional[list[str]]) -> None:
    """Run a helper command: ``-h``/``--help`` prints its usage (exit 0); a user error is one
    line prefixed by the command's own name (``ganrun-sample: error: ...``, exit 2)."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text.strip())
        sys.exit(0)
    try:
        command(argv)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        _fail(cause, name)
