"""Deferred sealing under ingest (`Writer.defer_seals`, held by the Flight server's uploads):
while held, up to `DEFERRED_HEADS` rolled heads stay unsealed, readable and durable; beyond
that the oldest is sealed as usual; `flush()` seals at once; releasing it seals the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

import transit_arrow as ta
import transit_arrow.engine.writer as writer_module
from transit_arrow.engine.writer import DEFERRED_HEADS, Writer, writer_for

WAIT = 30.0  # the longest a test waits for the sealer


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.005)


def batch(first: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"k": list(range(first, first + n)), "v": ["x" * 10] * n})


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ta.Log:
    # No idle time or age ends a deferral here: only the bound, `flush()` and the release do.
    monkeypatch.setattr(writer_module, "DEFER_IDLE", 1e9)
    return ta.open(tmp_path / "log", segment_max_records=100, segment_max_age=1e9)


def committed(writer: Writer) -> int:
    with writer.lock:
        return writer.manifest.next_offset


def check_replay(stream: ta.Stream, n: int) -> None:
    """Every record once, in order, whatever is sealed and what not."""
    table = stream.read()
    assert table.column("_offset").to_pylist() == list(range(n))
    assert table.column("k").to_pylist() == list(range(n))


def test_rolled_heads_wait_while_an_upload_defers_seals(log: ta.Log) -> None:
    with log:
        stream = log.create_stream("s")
        stream.append(batch(0, 50), durability="local")
        writer = writer_for(log.catalog, "s")
        rolled = 100 * DEFERRED_HEADS
        with writer.defer_seals():
            for first in range(50, rolled, 50):
                stream.append(batch(first, 50), durability="local")
            stream.append(batch(rolled, 50), durability="local")  # the bound's heads rolled
            assert len(writer.pending) == DEFERRED_HEADS
            assert committed(writer) == 0  # none sealed while deferred
            check_replay(stream, rolled + 50)
            # One more rolled head than the bound: the oldest is sealed as usual.
            stream.append(batch(rolled + 50, 50), durability="local")
            wait_until(lambda: committed(writer) >= 100, "the oldest head sealed")
            check_replay(stream, rolled + 100)
            assert len(writer.pending) <= DEFERRED_HEADS
        # The upload ended: what waited is sealed.
        wait_until(lambda: committed(writer) == rolled + 100, "every rolled head sealed")
        check_replay(stream, rolled + 100)
        assert log.verify("s", deep=True).ok


def test_flush_seals_deferred_heads_at_once(log: ta.Log) -> None:
    with log:
        stream = log.create_stream("s")
        stream.append(batch(0, 150), durability="memory")
        writer = writer_for(log.catalog, "s")
        with writer.defer_seals():
            stream.append(batch(150, 100), durability="memory")
            assert committed(writer) < 250
            stream.flush()
            assert committed(writer) == 250
            ack = stream.append(batch(250, 10), durability="tiered")  # waits for its commit
            assert ack.durability == "tiered" and committed(writer) == 260
        check_replay(stream, 260)
