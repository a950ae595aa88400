"""Console entry points: ``ganrun`` (train), ``ganrun-sample``, ``ganrun-eval``.

Kept thin and light to import (no torch at module level) so ``ganrun --help`` is fast.
Errors a user can fix are printed as one line naming the bad value and the choices
(exit status 2); a run stopped by the divergence guard prints one line and exits 3.
"""
from __future__ import annotations

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from ganrun import config_dir
from ganrun.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, ConfigError, TrainingDiverged

USER_ERRORS = (ConfigError, FileNotFoundError, TrainingDiverged)


def user_error(error: BaseException) -> Optional[BaseException]:
    """The user-fixable error behind ``error`` (Hydra wraps constructor errors), or None."""
    while error is not None:
        if isinstance(error, USER_ERRORS):
            return error
        error = error.__cause__
    return None


def _fail(error: BaseException) -> None:
    print(f"ganrun: error: {error}", file=sys.stderr)
    sys.exit(EXIT_DIVERGED if isinstance(error, TrainingDiverged) else EXIT_BAD_INPUT)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _train(cfg: DictConfig) -> Optional[float]:
    from ganrun.train import train

    try:
        metrics = train(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        _fail(cause)
    if "stopped_by_signal" in metrics:
        # Checkpoint saved; the conventional status of a signalled process tells schedulers it did not finish.
        sys.exit(128 + int(metrics["stopped_by_signal"]))
    return metrics.get("hp/metric")


def train_main() -> None:
    from ganrun.overrides import prepare_overrides

    try:
        sys.argv[1:] = prepare_overrides(sys.argv[1:])
    except USER_ERRORS as error:
        _fail(error)
    _train()


def sample_main(argv: Optional[list[str]] = None) -> None:
    from ganrun.sample import main

    _run_command(main, argv)


def eval_main(argv: Optional[list[str]] = None) -> None:
    from ganrun.evaluate import run

    _run_command(run, argv)


def _run_command(command, argv: Optional[list[str]]) -> None:
    try:
        command(sys.argv[1:] if argv is None else argv)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        _fail(cause)
