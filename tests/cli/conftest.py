"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import ok


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """An initialized, empty log."""
    path = tmp_path / "log"
    ok("init", path)
    return path
