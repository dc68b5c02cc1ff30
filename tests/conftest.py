"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import transit_arrow as ta


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ta.Log]:
    """A fresh log on a local folder."""
    with ta.open(tmp_path / "log") as log:
        yield log
