"""The code style checks CI runs in the fast tier: ``ruff check .`` and ``ruff format --check .``
(configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import REPO


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_the_tree_is_ruff_clean(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
