"""Fixtures of the server tests: a `transit serve` subprocess, and a log that is either local
(`transit_arrow.open`) or remote (`connect()` to the server), for the shared suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flight_helpers import TOKEN, WAIT, ServerProcess, Target

import transit_arrow as ta
from transit_arrow.client import connect


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    """One server for the whole run, on a fresh log (each test uses its own stream names)."""
    root = tmp_path_factory.mktemp("served") / "log"
    ta.open(root).close()
    proc = ServerProcess(root, token_file).start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(params=["local", "remote"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, server: ServerProcess
) -> Iterator[Target]:
    """The same test runs against `transit_arrow.open(path)` and `connect(server)`."""
    if request.param == "local":
        with ta.open(tmp_path / "log") as log:
            yield Target(log, "", remote=False)
    else:
        with connect(server.address, token=TOKEN, timeout=WAIT) as log:
            yield Target(log, f"t{uuid.uuid4().hex[:8]}-", remote=True)
