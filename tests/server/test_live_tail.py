"""Live tails over DoGet (`follow`): records arrive as they are appended, across schema
changes, with cursors in the app metadata; `end` and the idle `timeout` bound every wait."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flight_helpers import TOKEN, WAIT, ServerProcess, options

from transit_arrow.client import RemoteLog, connect


@pytest.fixture
def remote(server: ServerProcess) -> Iterator[RemoteLog]:
    with connect(server.address, token=TOKEN, timeout=WAIT) as log:
        yield log


def test_tail_delivers_appends_live_and_across_schema_changes(remote: RemoteLog) -> None:
    stream = remote.create_stream("live-a")
    stream.append({"k": 0})
    got: list[pa.RecordBatch] = []
    done = threading.Event()

    def follow() -> None:
        for batch in remote.stream("live-a").tail(0, timeout=2.0):
            got.append(batch)
        done.set()

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.3)
    for k in range(1, 6):
        stream.append({"k": k})
        time.sleep(0.05)
    stream.append({"k": 6, "note": "a new column"})  # the tail reconnects with the new schema
    stream.append([{"k": 7}, {"k": 8, "note": "x"}])
    assert done.wait(WAIT)
    thread.join(WAIT)
    offsets = [o for b in got for o in b.column("_offset").to_pylist()]
    assert offsets == list(range(9))
    assert got[-1].schema.names[-2:] == ["k", "note"]
    assert [b.column("note").to_pylist() for b in got if "note" in b.schema.names][-1][-1] == "x"


def test_tail_from_a_cursor_with_columns_and_end(remote: RemoteLog) -> None:
    stream = remote.create_stream("live-b")
    stream.append([{"k": k, "pad": "x"} for k in range(10)])
    batches = list(stream.tail(4, end=8, columns=["k"], timeout=WAIT))
    table = pa.Table.from_batches(batches)
    assert table.column_names == ["k"] and table.column("k").to_pylist() == [4, 5, 6, 7]
    started = time.monotonic()
    assert list(stream.tail(10, end=10, timeout=WAIT)) == []  # nothing to wait for
    assert list(stream.tail(10, timeout=0.2)) == []  # idle: ends after the timeout
    assert time.monotonic() - started < 5


def test_follow_ticket_for_a_plain_flight_client(server: ServerProcess, remote: RemoteLog) -> None:
    stream = remote.create_stream("live-c")
    stream.append([{"k": k} for k in range(3)])
    client = flight.FlightClient(server.address)
    ticket = json.dumps({"stream": "live-c", "start": 1, "follow": True, "timeout": 0.3})
    reader = client.do_get(flight.Ticket(ticket.encode()), options())
    chunks = []
    while True:
        try:
            chunks.append(reader.read_chunk())
        except StopIteration:
            break
    metadata = [json.loads(c.app_metadata.to_pybytes()) for c in chunks]
    assert metadata[-1] == {"next": 3, "end": "timeout"} and chunks[-1].data.num_rows == 0
    assert metadata[0]["next"] == 3
    assert chunks[0].data.column("_offset").to_pylist() == [1, 2]


def test_a_follower_sees_only_records_durable_at_the_level_it_asks(remote: RemoteLog) -> None:
    """The server's log acknowledges `local` by default: a default follower never sees a
    record before it is synced (a crash could take it back); `memory` sees it at once."""
    stream = remote.create_stream("live-durable")
    stream.append([{"k": 0}, {"k": 1}], durability="memory")

    def offsets(**kwargs: object) -> list[int]:
        batches = list(stream.tail(0, timeout=0.3, **kwargs))  # type: ignore[arg-type]
        return [o for b in batches for o in b.column("_offset").to_pylist()]

    assert offsets() == []
    assert offsets(durability="memory") == [0, 1]
    stream.append({"k": 2})  # `local`: its sync writes the records before it too
    assert offsets() == [0, 1, 2]
    assert offsets(durability="tiered") == []
    stream.flush()
    assert offsets(durability="tiered") == [0, 1, 2]
