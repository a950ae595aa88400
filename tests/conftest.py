"""Shared fixtures: compose ganrun configs the way the CLI does, small and fast."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ganrun import config_dir

# Quiet, small and CPU-only settings for tests that train.
FAST = [
    "accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


def group_options(group: str) -> list[str]:
    """Every option of a config group, read from the config tree (new files are tested automatically)."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


@pytest.fixture
def make_config(tmp_path):
    """make_config(*overrides) -> composed DictConfig with run_dir inside tmp_path."""

    def _make(*overrides: str, run_dir: Path | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[f"run_dir={run_dir or tmp_path / 'run'}", *overrides])
        return cfg

    yield _make
    GlobalHydra.instance().clear()
