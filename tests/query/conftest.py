"""Fixtures of the query tests: the branchy log (see `branchy_log`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from branchy_log import Branchy, build

import transit_arrow as ta


@pytest.fixture(scope="module")
def branchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Branchy]:
    """The branchy log on a local folder (module-scoped: tests must not change it)."""
    path: Path = tmp_path_factory.mktemp("branchy") / "log"
    with ta.open(path, segment_max_records=4) as log:
        yield build(log)
