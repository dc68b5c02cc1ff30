"""Real processes: clients in other processes (and folders) work concurrently through one
`transit serve`; SIGKILL of the server loses no acknowledged record and tails resume from
their cursors; SIGTERM acknowledges or refuses in-flight appends, ends tails, seals heads."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flight_helpers import (
    CLI,
    TOKEN,
    WAIT,
    Child,
    ServerProcess,
    detail,
    options,
    wait_until,
)

import transit_arrow as ta
from transit_arrow.client import connect


def serve_new_log(root: Path, token_file: Path, stream: str) -> ServerProcess:
    """A new log at `root` with one empty stream, served by a new server process."""
    with ta.open(root) as log:
        log.create_stream(stream)
    return ServerProcess(root, token_file).start()


class Tail(threading.Thread):
    """Follows a stream through `connect()` from `start`, recording every offset it gets."""

    def __init__(self, address: str, stream: str, start: int = 0, end: int | None = None):
        super().__init__(daemon=True)
        self.address, self.stream, self.start_at, self.end = address, stream, start, end
        self.offsets: list[int] = []
        self.rows: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.address, token=TOKEN) as log:
                tail = log.stream(self.stream).tail(self.start_at, timeout=WAIT, end=self.end)
                for batch in tail:
                    self.offsets += batch.column("_offset").to_pylist()
                    self.rows += batch.select(["writer", "seq"]).to_pylist()
        except BaseException as e:
            self.error = e

    @property
    def cursor(self) -> int:
        return self.offsets[-1] + 1 if self.offsets else self.start_at


def test_second_machine_does_the_tour(server: ServerProcess, tmp_path: Path) -> None:
    """A client process in another folder (no access to the log's files) runs the README tour."""
    elsewhere = tmp_path / "other-machine"
    elsewhere.mkdir()
    events = Child("tour", server.address, TOKEN, "remote-tour", cwd=elsewhere).finish()
    seen = {k: v for event in events for k, v in event.items()}
    assert seen["ack"] == [0, 0, "local"] and seen["read"] == 3 and seen["reader"] == 3
    assert seen["streams"] == ["remote-tour"]
    assert seen["retry"] == [0, 1, 42] and seen["best"] == 4
    assert seen["lineage"] == ["remote-tour", "remote-tour/best", "remote-tour/retry"]
    assert seen["verified"] and seen["at_checkpoint"] == 3 and seen["at_generation"] == 0
    assert seen["sql"] == [{"task": "t1", "n": 2}, {"task": "t2", "n": 1}]
    assert seen["refresh"] == 3 and seen["mv"] == ["t1", "t2"]
    assert not any(elsewhere.iterdir())  # nothing was written on the "second machine"
    # This process sees the same history, checkpoint included.
    with connect(server.address, token=TOKEN) as log:
        cp = ta.Checkpoint.from_dict(seen["checkpoint"])
        assert log.verify(cp).ok
        assert log.stream("remote-tour").read().column("step").to_pylist() == [0, 1, 0]


def test_concurrent_clients_in_other_processes(server: ServerProcess) -> None:
    """Three appenders, a branch-and-merge client and a live tail, all at once."""
    with connect(server.address, token=TOKEN) as log:
        log.create_stream("busy")
    writers = {f"w{i}": 25 for i in range(3)}
    tail = Tail(server.address, "busy", end=sum(writers.values()) + 0)
    tail.start()
    appenders = {
        w: Child("append", server.address, TOKEN, "busy", w, str(n), str(1 + i))
        for i, (w, n) in enumerate(writers.items())
    }
    brancher = Child("lineage", server.address, TOKEN, "busy", "20")
    acked: dict[int, tuple[str, int]] = {}
    for writer, proc in appenders.items():
        for event in proc.finish():
            assert "ack" in event, event
            first, last = event["ack"]
            for offset, seq in zip(
                range(first, last + 1), range(event["seq"][0], 10**9), strict=False
            ):
                assert offset not in acked
                acked[offset] = (writer, seq)
    lineage_events = brancher.finish()
    tail.join(WAIT)
    assert tail.error is None and not tail.is_alive()

    total = sum(writers.values())
    with connect(server.address, token=TOKEN) as log:
        table = log.stream("busy").read()
        assert table.column("_offset").to_pylist() == list(range(total))
        rows = table.select(["writer", "seq"]).to_pylist()
        assert {o: (r["writer"], r["seq"]) for o, r in enumerate(rows)} == acked
        for writer, count in writers.items():  # every record once, in each writer's order
            assert [r["seq"] for r in rows if r["writer"] == writer] == list(range(count))
        side, merged = lineage_events[0], lineage_events[1]
        fork = side["fork"]
        assert side["branch_records"] == fork + 1 + 3
        prefix = ["_stream", "_offset", "writer", "seq"]
        assert (
            log.stream(side["branch"]).read(end=fork + 1, columns=prefix).to_pylist()
            == log.stream("busy").read(end=fork + 1, columns=prefix).to_pylist()
        )
        assert merged["merge_records"] >= fork + 1 + 3
    assert tail.offsets == list(range(total))  # live, in order, no gap, no duplicate
    assert tail.rows == rows


@pytest.mark.crash
def test_sigkill_mid_append_loses_no_acknowledged_record(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "log"
    server = serve_new_log(root, token_file, "k")
    try:
        tail = Tail(server.address, "k")
        tail.start()
        appender = Child("append", server.address, TOKEN, "k", "w", "100000", "3")
        events = [appender.event() for _ in range(15)]  # well under way: now kill the server
        server.kill()
        events += appender.finish()  # it ends with the error it got
        assert events[-1]["error"] == "unavailable", events[-1]
        acks = [e for e in events if "ack" in e]
        tail.join(WAIT)
        assert isinstance(tail.error, ta.StorageError)  # the tail saw the server go away
        cursor = tail.cursor

        server = ServerProcess(root, token_file).start()  # restart on the same log
        with connect(server.address, token=TOKEN) as log:
            table = log.stream("k").read()
        offsets = table.column("_offset").to_pylist()
        assert offsets == list(range(len(offsets)))
        seqs = table.column("seq").to_pylist()
        for event in acks:  # every acknowledged record is there, at its acknowledged offset
            first, last = event["ack"]
            assert seqs[first : last + 1] == list(range(event["seq"][0], event["seq"][1] + 1))
        assert len(set(seqs)) == len(seqs)  # nothing twice
        # Unacknowledged calls are all or nothing: at most the in-flight one is there too.
        assert len(seqs) - (acks[-1]["ack"][1] + 1) in (0, 3)

        # The tail resumes from its cursor: together, the two runs see every offset once.
        resumed = Tail(server.address, "k", start=cursor, end=len(offsets))
        resumed.start()
        resumed.join(WAIT)
        assert resumed.error is None
        assert tail.offsets + resumed.offsets == offsets
        code, err = server.terminate()
        assert code == 0, err
    finally:
        server.close()


@pytest.mark.crash
def test_sigkill_mid_upload_loses_no_acknowledged_batch(tmp_path: Path, token_file: Path) -> None:
    """One DoPut of many batches at `local`: the server acknowledges groups of batches once
    one sync made them durable; a SIGKILL mid-upload loses none of them."""
    root = tmp_path / "log"
    server = serve_new_log(root, token_file, "u")
    try:
        uploader = Child("upload", server.address, TOKEN, "u", "10000000", "2000")
        events = [uploader.event() for _ in range(3)]  # three acks: now kill the server
        server.kill()
        events += uploader.finish()
        acks = [e for e in events if "last_offset" in e]
        assert len(acks) >= 3 and any("error" in e for e in events)
        assert events[-1] == {"done": True}
        assert {a["durability"] for a in acks} == {"local"}
        assert acks[0]["first_offset"] == 0
        for before, after in itertools.pairwise(acks):
            assert after["first_offset"] == before["last_offset"] + 1
        acknowledged = acks[-1]["last_offset"] + 1
        assert acknowledged == 2000 * sum(a["batches"] for a in acks)

        server = ServerProcess(root, token_file).start()  # restart on the same log
        check_uploaded(server, "u", acknowledged, 2000)
        code, err = server.terminate()
        assert code == 0, err
    finally:
        server.close()


def check_uploaded(server: ServerProcess, stream: str, acknowledged: int, batch: int) -> None:
    """After a restart: every acknowledged batch of an `upload` child is there, whole, at its
    offsets; unacknowledged ones are whole batches too (each batch is one atomic append)."""
    with connect(server.address, token=TOKEN) as log:
        table = log.stream(stream).read()
    seqs = table.column("seq").to_pylist()
    assert table.column("_offset").to_pylist() == list(range(len(seqs)))
    assert len(seqs) >= acknowledged and len(seqs) % batch == 0
    assert seqs == list(range(len(seqs)))


#: `transit serve` on a log whose heads roll every 5,000 records and whose sealer, while an
#: upload defers seals, waits for no idle time or age: every rolled head up to the bound stays
#: unsealed until the upload ends.
DEFERRING_SERVE = f"""
import functools
import transit_arrow.cli.common as common
import transit_arrow.engine.writer as writer
writer.DEFER_IDLE = 1e9
common.open_log = functools.partial(
    common.open_log, segment_max_records=5000, segment_max_age=1e9
)
{CLI}
"""


@pytest.mark.crash
def test_sigkill_during_a_deferred_seal_upload_loses_no_acknowledged_batch(
    tmp_path: Path, token_file: Path
) -> None:
    """A `local` upload that fills several heads, which the sealer leaves unsealed while it
    lasts: a SIGKILL loses none of the acknowledged batches; the restarted server recovers
    the unsealed heads, in order, with no gap and no duplicate."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("d")
    server = ServerProcess(root, token_file, code=DEFERRING_SERVE).start()
    try:
        uploader = Child("upload", server.address, TOKEN, "d", "10000000", "1000")
        # Engine appends fold up to 65,536 uploaded records, so a head holds 5,000 to about
        # 70,000: past 300,000 acknowledged records, at least three heads have rolled.
        events = [uploader.event()]
        while events[-1].get("last_offset", -1) < 300_000:
            events.append(uploader.event())
        server.kill()
        events += uploader.finish()
        acks = [e for e in events if "last_offset" in e]
        assert {a["durability"] for a in acks} == {"local"}
        for before, after in itertools.pairwise(acks):
            assert after["first_offset"] == before["last_offset"] + 1
        acknowledged = acks[-1]["last_offset"] + 1
        assert acknowledged == 1000 * sum(a["batches"] for a in acks) > 300_000
        # The sealer left rolled heads unsealed (it seals the oldest beyond the bound).
        heads = [p for p in root.rglob("heads/*.arrow") if p.stat().st_size]
        assert len(heads) >= 2, heads

        server = ServerProcess(root, token_file).start()  # a plain server on the same log
        check_uploaded(server, "d", acknowledged, 1000)
        code, err = server.terminate()
        assert code == 0, err
        with ta.open(root) as log:  # everything sealed on the way out: the heads are gone
            assert log.stream("d").commits().num_rows >= 1
            assert log.verify("d", deep=True).ok
    finally:
        server.close()


@pytest.mark.crash
def test_producer_retries_after_a_crash_do_not_duplicate(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "log"
    server = serve_new_log(root, token_file, "p")
    try:
        with connect(server.address, token=TOKEN) as log:
            stream = log.stream("p")
            for seq in range(5):
                stream.append({"seq": seq}, producer="prod", sequence=seq)
        server.kill()
        server = ServerProcess(root, token_file).start()
        with connect(server.address, token=TOKEN) as log:
            stream = log.stream("p")
            for seq in range(3, 8):  # a retry of 3 and 4 (acknowledged before), then new ones
                stream.append({"seq": seq}, producer="prod", sequence=seq)
            assert stream.read().column("seq").to_pylist() == list(range(8))
    finally:
        server.close()


@pytest.mark.crash
def test_sigterm_acknowledges_or_refuses_in_flight_appends_and_seals(
    tmp_path: Path, token_file: Path
) -> None:
    root = tmp_path / "log"
    server = serve_new_log(root, token_file, "g")
    tail = Tail(server.address, "g")
    tail.start()
    client = flight.FlightClient(server.address)
    command = json.dumps({"stream": "g", "durability": "local"}).encode()
    schema = pa.schema([("writer", pa.string()), ("seq", pa.int64())])
    writer, acks = client.do_put(flight.FlightDescriptor.for_command(command), schema, options())
    messages: list[dict[str, Any]] = []
    ended: list[BaseException] = []

    def read_acks() -> None:
        try:
            while (buffer := acks.read()) is not None:
                messages.append(json.loads(buffer.to_pybytes()))
        except flight.FlightError as e:
            ended.append(e)

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    sent = 0
    try:
        for i in range(3000):  # an upload still sending when SIGTERM arrives
            batch = pa.record_batch(
                [pa.array(["up"] * 10), pa.array(range(i * 10, i * 10 + 10))], schema=schema
            )
            writer.write_batch(batch)
            sent += 1
            if i == 30:
                wait_until(lambda: messages, what="a first ack")
                server.send_term()
            time.sleep(0.002)
    except flight.FlightError:
        pass  # the server ended the call: later batches are refused
    with pytest.raises(flight.FlightError) as info:
        writer.close()
    assert detail(info.value)["code"] == "unavailable"
    reader.join(WAIT)
    code, err = server.wait()
    assert code == 0 and "stopped: heads sealed" in err, err
    tail.join(WAIT)
    assert isinstance(tail.error, ta.StorageError) and tail.error.code == "unavailable"  # type: ignore[attr-defined]

    acked = sum(m["batches"] for m in messages if "batches" in m)
    assert messages[-1].get("error", {}).get("code") == "unavailable", messages[-1]
    assert 0 < acked < sent
    with ta.open(root) as log:  # after a clean stop: heads sealed, exactly the acked batches
        row = next(r for r in log.streams().to_pylist() if r["name"] == "g")
        assert row["committed_offset"] == row["next_offset"] == acked * 10
        assert log.stream("g").read().column("seq").to_pylist() == list(range(acked * 10))
    assert tail.offsets == list(range(len(tail.offsets)))


def test_a_slow_reader_does_not_grow_server_memory(tmp_path: Path, token_file: Path) -> None:
    """A client that stops reading a big DoGet holds the server at a few batches of memory,
    not the whole result (gRPC flow control + a bounded read-ahead)."""
    root = tmp_path / "log"
    segments, rows, width = 10, 8_000, 2_000  # 10 segments of 16 MB of Arrow data
    with ta.open(root, row_group_size=1_000) as log:
        s = log.create_stream("big")
        for k in range(segments):
            ids = pa.array(range(k * rows, (k + 1) * rows))
            table = pa.table({"i": ids, "text": pa.array(["x" * width] * rows)})
            s.append(table, durability="memory")
            s.flush()
    data_bytes = segments * rows * width
    server = ServerProcess(root, token_file).start()
    try:
        client = flight.FlightClient(server.address)
        warm = json.dumps({"stream": "big", "end": 10}).encode()
        client.do_get(flight.Ticket(warm), options()).read_all()
        before = server.rss_bytes()
        reader = client.do_get(flight.Ticket(b"big"), options())
        first = reader.read_chunk()
        assert first.data.num_rows > 0
        time.sleep(1.0)  # the client reads nothing more: the server must stop producing
        during = server.rss_bytes()
        rest = reader.read_all()  # and it goes on when the client reads again
        assert first.data.num_rows + rest.num_rows == segments * rows
        # The engine reads a segment at a time: a few segments' worth, not all of them.
        assert during - before < data_bytes / 2, (before, during, data_bytes)
    finally:
        code, err = server.terminate()
    assert code == 0, err


def test_a_read_cache_serves_the_same_records(tmp_path: Path, token_file: Path) -> None:
    """`transit serve --read-cache-mb`: a second read of the same segments (from the cache)
    returns what the first one (decoded) returned."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("c")
        s.append([{"k": k, "v": f"v{k}"} for k in range(5000)])
        s.flush()
        s.append({"k": -1, "v": "head"})
    server = ServerProcess(root, token_file, extra=["--read-cache-mb", "64"]).start()
    try:
        with connect(server.address, token=TOKEN) as log:
            first = log.stream("c").read()
            assert first.column("k").to_pylist() == [*range(5000), -1]
            for _ in range(2):
                assert log.stream("c").read().equals(first)
                assert log.stream("c").read(start=10, end=20).equals(first.slice(10, 10))
        code, err = server.terminate()
        assert code == 0, err
    finally:
        server.close()
