"""The write path (issue 10): one regression test per bug the issue lists, then the deliverables.

Bugs, each reproduced as a new user would meet it (each test failed on the code before the
fix, see the report of the change):

1. a fenced writer's acknowledged records were deleted by the next open of its local dir;
2. a failed append could still commit (a value Parquet cannot store was acknowledged, then
   never sealable), or left the schema changed, and the stream was stuck afterwards;
3. one seal failure poisoned the stream: after a short store outage every append failed;
4. a reader could see a gap while the writer sealed a head;
5. the head was not self-validating: a damaged byte was sealed and "verified";
6. `take_over=True` from the same machine and default local dir was refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from faulty_store import Fault, FaultyStore, path_contains

import transit_arrow as ta
from transit_arrow.names import encode_stream_name
from transit_arrow.segments.head import load_head
from transit_arrow.storage import LocalStore, MemoryStore


def _heads(local: Path, stream: str = "s") -> Path:
    return local / "streams" / encode_stream_name(stream) / "heads"


def _aside(local: Path, stream: str = "s") -> Path:
    return local / "streams" / encode_stream_name(stream) / "set-aside"


def _values(stream: ta.Stream, column: str = "n") -> list[Any]:
    return stream.read().column(column).to_pylist()


def _arrow_files(folder: Path) -> list[Path]:
    """Head files (and set-aside ones) below `folder`, without empty spare head files."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*.arrow") if p.stat().st_size)


def _records_in_files(folder: Path, column: str) -> list[Any]:
    """Every value of `column` in any Arrow IPC file below `folder` (heads are IPC streams)."""
    out: list[Any] = []
    for path in _arrow_files(folder):
        table = pa.ipc.open_stream(path.read_bytes()).read_all()
        if column in table.column_names:
            out += table.column(column).to_pylist()
    return out


def _run_child(code: str, *args: str) -> None:
    """Run Python `code` in a fresh process (which exits without closing any log)."""
    script = textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


# --- 1. a fenced writer's acknowledged records --------------------------------------------------


def test_fenced_writers_acknowledged_records_are_kept_and_reappendable(tmp_path: Path) -> None:
    """Bug 1: A acks a record `local`; B (another local dir) takes over and appends; A's
    records used to be deleted by the next open of A's local dir. Now they are set aside,
    listed, and `reappend_orphaned` puts them on a branch at the offsets A acknowledged."""
    root, a_dir, b_dir = tmp_path / "log", tmp_path / "a", tmp_path / "b"
    with ta.open(root, local_dir=a_dir) as log_a:
        log_a.create_stream("s").append({"n": 0}, durability="tiered")
        ack = log_a.stream("s").append({"n": 1}, durability="local")
        assert tuple(ack) == (1, 1, "local")
        with ta.open(root, local_dir=b_dir) as log_b:
            log_b.stream("s", take_over=True).append({"n": 100})
            log_b.stream("s").flush()
        # A closes without having noticed (its seal then loses to B's commits).
    with ta.open(root, local_dir=a_dir) as again:  # the next open of A's local dir
        again.stream("s").append({"n": 200})  # a writer here: recovery runs
        assert _values(again.stream("s")) == [0, 100, 200]
        assert 1 in _records_in_files(a_dir, "n"), "A's acknowledged record was deleted"
        orphans = again.orphaned_heads("s").to_pylist()
        assert len(orphans) == 1 and orphans[0]["set_aside"], orphans
        orphan = orphans[0]
        assert (orphan["kind"], orphan["first_offset"], orphan["last_offset"]) == ("fenced", 1, 1)
        ack = again.reappend_orphaned(orphan["path"], branch="s/kept")
        assert (ack.first_offset, ack.last_offset) == (1, 1)  # the offset A acknowledged
        assert _values(again.stream("s/kept")) == [0, 1]
        with pytest.raises(ta.InvalidInputError, match="re-appended already"):
            again.reappend_orphaned(orphan["path"], branch="s/kept")
        assert again.orphaned_heads("s").column("reappended_to").to_pylist() == ["s/kept"]


def test_fenced_writer_sets_its_heads_aside_when_it_notices(tmp_path: Path) -> None:
    """A live fenced writer that notices (its next seal loses to the fence) moves its own
    heads aside and names them in every later `FencedError`; they hold its acks."""
    root = tmp_path / "log"
    with ta.open(root, local_dir=tmp_path / "a", segment_max_age=3600) as log_a:
        a = log_a.create_stream("s")
        a.append([{"n": i} for i in range(3)])
        with ta.open(root, local_dir=tmp_path / "b") as log_b:
            log_b.stream("s", take_over=True).append({"n": 100})
            with pytest.raises(ta.FencedError, match=r"set aside.*\.arrow") as info:
                a.flush()
            kept = [
                Path(w) for w in str(info.value).replace(",", " ").split() if w.endswith(".arrow")
            ]
            assert kept and all(p.parent == _aside(tmp_path / "a") for p in kept)
            assert _records_in_files(_aside(tmp_path / "a"), "n") == [0, 1, 2]
            assert not _arrow_files(_heads(tmp_path / "a"))
            with pytest.raises(ta.FencedError, match="set aside"):
                a.append({"n": 3})


# --- 2. all or nothing ---------------------------------------------------------------------------


def _state(root: Path, local: Path) -> tuple[Any, ...]:
    """Every file of the store and local dir with its size (but locks and the empty spare head
    files the writer prepares in the background: they hold nothing)."""
    files = sorted(
        (str(p.relative_to(root.parent)), p.stat().st_size)
        for base in (root, local)
        for p in base.rglob("*")
        if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith("spare-")
    )
    return tuple(files)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            pa.table({"n": [5], "d": pa.array([86_400_000 + 1234], pa.date64())}),
            id="date64-time-of-day",
        ),
        pytest.param(
            pa.table({"n": [5], "t": pa.array([2**62], pa.timestamp("s"))}),
            id="seconds-overflow",
        ),
        pytest.param(
            pa.table({"n": [5], "i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())}),
            id="interval",
        ),
        pytest.param(pa.table({"n": [5], "e": pa.array([{}], pa.struct([]))}), id="empty-struct"),
        pytest.param({"n": 5, "f": 2**60, "s": "x"}, id="int-beyond-double-in-float-column"),
        pytest.param(
            pa.table(
                {
                    "n": [5],
                    "new": ["x"],
                    "_timestamp": pa.array([1_000_000_001], pa.timestamp("ns", tz="UTC")),
                }
            ),
            id="new-column-then-bad-timestamp",
        ),
    ],
)
@pytest.mark.parametrize("durability", ["memory", "local", "tiered"])
def test_a_refused_append_changes_nothing_and_the_stream_goes_on(
    tmp_path: Path, bad: Any, durability: str
) -> None:
    """Bug 2: values Parquet cannot store exactly, an int no double holds, a bad timestamp
    after a new column: each used to be acknowledged and then never sealable (the stream then
    failed every append), or left the schema changed. Now the append is refused before
    anything changes, and the stream goes on."""
    root = tmp_path / "log"
    schema = pa.schema([("n", pa.int64()), ("f", pa.float64()), ("s", pa.string())])
    with ta.open(root, segment_max_age=3600) as log:
        s = log.create_stream("s", schema=schema)
        s.append({"n": 1, "f": 0.5, "s": "a"}, durability="local")
        s.append({"n": 2, "f": 1.5, "s": "b"}, durability="memory")
        s.flush()
        s.append({"n": 3, "f": 2.5, "s": "c"}, durability="local")
        before = _state(root, root / "_local")
        read_schema = s.read().schema
        with pytest.raises((ta.InvalidInputError, ta.SchemaMismatchError)):
            s.append(bad, durability=durability)  # type: ignore[arg-type]
        assert _state(root, root / "_local") == before
        assert s.next_offset == 3 and s.read().schema == read_schema
        s.append({"n": 4, "f": 3.5, "s": "d"}, durability=durability)  # type: ignore[arg-type]
        s.flush()
        assert _values(s) == [1, 2, 3, 4]
        actions = [a for row in s.commits().column("actions").to_pylist() for a in row]
        assert "evolve_schema" not in actions
    with ta.open(root) as log:
        assert _values(log.stream("s")) == [1, 2, 3, 4]
        assert log.verify("s", deep=True).ok


def test_parquet_compatible_types_of_every_kind_are_still_accepted(log: ta.Log) -> None:
    """The check refuses only what sealing would refuse or change: seconds and date64 that
    Parquet stores exactly, dictionaries, durations, nested values all go through."""
    s = log.create_stream("s")
    table = pa.table(
        {
            "t": pa.array([5], pa.timestamp("s", tz="UTC")),
            "d": pa.array([86_400_000], pa.date64()),
            "c": pa.array(["x"]).dictionary_encode(),
            "dur": pa.array([7], pa.duration("ms")),
            "nested": pa.array([{"a": [1, 2], "b": {"k": "v"}}]),
        }
    )
    s.append(table)
    s.flush()
    assert s.read().num_rows == 1


# --- 3. store outages ----------------------------------------------------------------------------


def _commit_outage(store: FaultyStore) -> Fault:
    return store.arm(Fault("error", path_contains("put_if_absent", "/commits/"), times=None))


def test_store_outage_is_survived_not_remembered(tmp_path: Path) -> None:
    """Bug 3: a ~2 s outage fails one `tiered` append; once the store is back, every kind of
    append and flush works again, without reopening the log, and nothing was lost."""
    store = FaultyStore(MemoryStore(f"memory://outage-{tmp_path.name}"))
    with ta.open(store, local_dir=tmp_path / "w") as log:
        s = log.create_stream("s")
        s.append({"n": 0}, durability="tiered")
        _commit_outage(store)
        started = time.monotonic()
        with pytest.raises(ta.StorageError, match="was not acknowledged"):
            s.append({"n": 1}, durability="tiered")
        assert time.monotonic() - started < 10
        ack = s.append({"n": 2}, durability="local")  # local appends go on meanwhile
        assert ack.durability == "local"
        store.disarm()
        assert s.append({"n": 3}, durability="local").durability == "local"
        assert s.append({"n": 4}, durability="tiered").durability == "tiered"
        assert _values(s) == [0, 1, 2, 3, 4]
        s.flush()
    with ta.open(store.inner, local_dir=tmp_path / "fresh") as fresh:
        assert _values(fresh.stream("s")) == [0, 1, 2, 3, 4]
        assert fresh.verify("s", deep=True).ok


def test_tiered_appends_fail_while_the_store_is_down_and_succeed_after(tmp_path: Path) -> None:
    """While the store stays down, each `tiered` append and `flush()` fails with a
    `StorageError` after a fresh attempt (not after the full retry budget again); the first
    after the store is back succeeds."""
    store = FaultyStore(MemoryStore(f"memory://down-{tmp_path.name}"))
    with ta.open(store, local_dir=tmp_path / "w") as log:
        s = log.create_stream("s")
        _commit_outage(store)
        with pytest.raises(ta.StorageError, match="failed after"):
            s.append({"n": 0}, durability="tiered")
        started = time.monotonic()
        for i in range(3):
            with pytest.raises(ta.StorageError):
                s.append({"n": 1 + i}, durability="tiered")
        with pytest.raises(ta.StorageError, match="flush"):
            s.flush()
        assert time.monotonic() - started < 5, "a store known to be down should fail fast"
        store.disarm()
        assert s.append({"n": 9}, durability="tiered") == ta.Ack(4, 4, "tiered")
        assert _values(s) == [0, 1, 2, 3, 9]


def test_local_appends_during_an_outage_stop_at_the_backpressure_limit(tmp_path: Path) -> None:
    """`local` appends keep working while heads wait for the store, up to
    `max_pending_heads`; then a clear `StorageError` refuses the append (appending nothing);
    once the store is back, appends resume and everything acknowledged is committed."""
    store = FaultyStore(MemoryStore(f"memory://pressure-{tmp_path.name}"))
    with ta.open(store, local_dir=tmp_path / "w", segment_max_records=2) as log:
        s = log.create_stream("s")
        _commit_outage(store)
        acked = []
        with pytest.raises(ta.StorageError, match="wait to be sealed") as info:
            for i in range(100):
                s.append({"n": i}, durability="local")
                acked.append(i)
        assert "nothing was appended" in str(info.value)
        assert 8 <= len(acked) < 100
        assert s.next_offset == len(acked)
        store.disarm()
        s.append({"n": 1000}, durability="local")
        s.flush()
        assert _values(s) == [*acked, 1000]


def test_outage_then_close_keeps_local_acks_for_the_next_open(tmp_path: Path) -> None:
    """Closing while the store is down raises (after bounded retries) and keeps the `local`
    acks on disk; the next open seals them."""
    inner = MemoryStore(f"memory://close-{tmp_path.name}")
    store = FaultyStore(inner)
    log = ta.open(store, local_dir=tmp_path / "w")
    s = log.create_stream("s")
    s.append({"n": 0}, durability="local")
    _commit_outage(store)
    s.append({"n": 1}, durability="local")
    with pytest.raises(ta.StorageError, match="kept in"):
        log.close()
    with ta.open(inner, local_dir=tmp_path / "w") as again:
        again.stream("s").append({"n": 2})
    with ta.open(inner, local_dir=tmp_path / "fresh") as fresh:
        assert _values(fresh.stream("s")) == [0, 1, 2]


@pytest.mark.s3
def test_outage_of_a_real_s3_store_is_survived(
    s3_endpoint: Any, s3_uri: str, tmp_path: Path
) -> None:
    """The same against the moto server: a tiered append fails while commits fail, local
    appends go on, and once the store answers again everything commits."""
    from transit_arrow.storage.s3 import S3Store

    store = FaultyStore(S3Store(s3_uri, s3_endpoint.storage_options))
    with ta.open(store, local_dir=tmp_path / "w") as log:
        s = log.create_stream("s")
        s.append({"n": 0}, durability="tiered")
        _commit_outage(store)
        with pytest.raises(ta.StorageError):
            s.append({"n": 1}, durability="tiered")
        s.append({"n": 2}, durability="local")
        store.disarm()
        assert s.append({"n": 3}, durability="tiered").durability == "tiered"
    with ta.open(s3_uri, storage_options=s3_endpoint.storage_options,
                 local_dir=tmp_path / "fresh") as fresh:  # fmt: skip
        assert _values(fresh.stream("s")) == [0, 1, 2, 3]


# --- 4. readers never see a gap or a duplicate ---------------------------------------------------


def _check_dense(table: pa.Table, seen: int, start: int = 0) -> int:
    """Check a read from offset `start`: dense, values right, reaching at least `seen`."""
    offsets = table.column("_offset").to_pylist()
    want = list(range(start, start + len(offsets)))
    assert offsets == want, f"gap or duplicate: {offsets[-30:]}"
    assert table.column("n").to_pylist() == offsets
    assert start + len(offsets) >= seen, "records went missing"
    return start + len(offsets)


def test_reader_never_sees_a_gap_while_heads_are_sealed(tmp_path: Path) -> None:
    """Bug 4: another `Log` on the same folder (as another process does) reads while the
    writer appends 1,500 records and seals a 7-record head every few appends: every read is
    dense from 0, never shorter than an earlier one."""
    root = tmp_path / "log"
    errors: list[BaseException] = []
    with ta.open(root, segment_max_records=7) as log:
        s = log.create_stream("s", schema=pa.schema([("n", pa.int64())]))

        def write() -> None:
            try:
                for i in range(0, 1500, 3):
                    s.append([{"n": i + k} for k in range(3)], durability="local")
            except BaseException as e:
                errors.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            with ta.open(root) as reader_log:
                reader = reader_log.stream("s")
                seen = reads = 0
                while writer.is_alive():
                    start = 0 if reads % 10 == 0 else max(0, seen - 20)  # mostly the tail
                    seen = _check_dense(reader.read(start=start), seen, start)
                    reads += 1
        finally:
            writer.join()
        assert not errors, errors
        assert reads > 50 and len(s.commits()) > 100, (reads, len(s.commits()))


def test_in_process_reader_never_sees_a_gap(log: ta.Log) -> None:
    """The writer's own process reads its heads from memory, consistently with its
    commits."""
    s = log.create_stream("s", schema=pa.schema([("n", pa.int64())]))
    seen = 0
    for i in range(0, 600, 3):
        s.append([{"n": i + k} for k in range(3)], durability="memory")
        if i % 30 == 0:
            seen = _check_dense(s.read(), seen)


# --- 5. self-validating heads --------------------------------------------------------------------

_WRITE_AND_DIE = """
import os, sys
import transit_arrow as ta
log = ta.open(sys.argv[1], segment_max_age=3600)
s = log.create_stream("s")
for i in range(6):
    s.append([{"n": i, "text": f"needle-{i}-" + "x" * 40}], durability="local")
os._exit(0)  # a crash: nothing sealed, every record acknowledged "local"
"""


def _damage(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(needle)
    data[at + 3] ^= 0x20  # "needle" -> "neeDle"
    path.write_bytes(bytes(data))


def test_damaged_head_is_never_sealed_nor_silently_cut(tmp_path: Path) -> None:
    """Bug 5: a byte of an acknowledged record in a head changes on disk (frames 2 of 6). It
    used to be sealed into a segment whose BLAKE3 then verified the damaged data. Now a reader
    refuses the head naming it; a writer sets a copy aside, keeps the valid records before the
    damage, never seals a damaged byte, and lists the rest as orphaned."""
    root = tmp_path / "log"
    _run_child(_WRITE_AND_DIE, str(root))
    (head,) = _arrow_files(_heads(root / "_local"))
    _damage(head, b"needle-2")
    with ta.open(root) as log:
        with pytest.raises(ta.IntegrityError, match=head.name):
            log.stream("s").read()
        s = log.stream("s")
        s.append({"n": 100, "text": "after"})  # a writer: recovery runs
        s.flush()
        table = s.read()
        assert table.column("n").to_pylist() == [0, 1, 100]
        assert all(
            t.startswith("needle-") or t == "after" for t in table.column("text").to_pylist()
        )
        orphan = log.orphaned_heads("s").to_pylist()[0]
        assert orphan["kind"] == "damaged" and orphan["first_offset"] == 3, orphan
        assert orphan["last_offset"] == 5 and orphan["records"] == 3  # frames after the damage
        ack = log.reappend_orphaned(orphan["path"], branch="s/salvaged")
        assert ack.records == 3
        assert log.stream("s/salvaged").read().column("n").to_pylist() == [0, 1, 3, 4, 5]
        assert log.verify("s", deep=True).ok


def test_damage_in_the_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    """The last frame's damage cannot be told from a torn write: it is cut, the frames before
    it stay (the format's documented limit, `docs/format.md`)."""
    root = tmp_path / "log"
    _run_child(_WRITE_AND_DIE, str(root))
    (head,) = _arrow_files(_heads(root / "_local"))
    _damage(head, b"needle-5")
    with ta.open(root) as log:
        assert _values(log.stream("s")) == [0, 1, 2, 3, 4]


def test_torn_tails_are_cut_and_everything_before_is_kept(tmp_path: Path) -> None:
    """Garbage or half a frame after the last complete frame is cut; the records stay."""
    root = tmp_path / "log"
    _run_child(_WRITE_AND_DIE, str(root))
    (head,) = _arrow_files(_heads(root / "_local"))
    data = head.read_bytes()
    head.write_bytes(data + data[len(data) // 2 :][:300])
    with ta.open(root) as log:
        assert _values(log.stream("s")) == list(range(6))
        assert head.stat().st_size > len(data)  # readers change nothing
        log.stream("s").append({"n": 6, "text": "t"})
        for path in _arrow_files(_heads(root / "_local")):  # the writer cut the tail
            assert load_head(path).status == "ok"
    with ta.open(root) as log:
        assert _values(log.stream("s")) == list(range(7))
        assert not log.orphaned_heads().num_rows


# --- 6. take over from the same machine ----------------------------------------------------------


def test_take_over_from_the_same_machine_and_default_local_dir(tmp_path: Path) -> None:
    """Bug 6: `take_over=True` with the default local dir of a live writer used to raise
    `WriterBusyError`. Now it fences that writer like any other: a fence commit, the old
    writer's next call raises `FencedError`, and its acknowledged records are kept aside."""
    root = tmp_path / "log"
    with ta.open(root, segment_max_age=3600) as first:
        old = first.create_stream("s")
        old.append({"n": 0}, durability="tiered")
        old.append({"n": 1}, durability="local")
        with ta.open(root) as second:
            new = second.stream("s", take_over=True)
            assert new.append({"n": 100}) == ta.Ack(1, 1, "local")
            assert new.commits().column("actions").to_pylist()[-1] == ["fence"]
            with pytest.raises(ta.FencedError, match=r"\.arrow"):
                old.flush()
            with pytest.raises(ta.FencedError):
                old.append({"n": 2})
            new.flush()
            assert _values(new) == [0, 100]
            (orphan,) = second.orphaned_heads("s").to_pylist()
            assert (orphan["kind"], orphan["first_offset"]) == ("fenced", 1)
    with ta.open(root) as log:
        assert _values(log.stream("s")) == [0, 100]
        assert log.verify("s", deep=True).ok


def test_take_over_in_another_process_with_the_same_local_dir(tmp_path: Path) -> None:
    """The same across processes: a child holds the stream with the default local dir; this
    process takes over; the child's head stays its own (never adopted, never deleted)."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s")
    ready = tmp_path / "ready"
    code = """
    import sys, time, pathlib
    import transit_arrow as ta
    log = ta.open(sys.argv[1], segment_max_age=3600)
    log.stream("s").append({"n": 7}, durability="local")
    pathlib.Path(sys.argv[2]).write_text("ok")
    time.sleep(30)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(root), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with ta.open(root) as log:
            s = log.stream("s", take_over=True)
            assert s.append({"n": 8}) == ta.Ack(0, 0, "local")
            assert 7 in _records_in_files(_heads(root / "_local"), "n")  # the child's, kept
            s.flush()
            assert _values(s) == [8]
    finally:
        child.kill()
        child.wait()
    with ta.open(root) as log:  # the child is gone: a writer here sets its head aside
        log.stream("s").append({"n": 9})
        (orphan,) = log.orphaned_heads("s").to_pylist()
        assert orphan["kind"] == "fenced" and orphan["set_aside"]
        assert _values(log.stream("s")) == [8, 9]


# --- group commit ------------------------------------------------------------------------------


class _SyncCounter:
    """Counts `os.fdatasync` calls on files of heads folders (head files, and the markers of
    the previous format), optionally slowing each down."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        real = os.fdatasync

        def counting(fd: int) -> None:
            if "/heads/" in os.readlink(f"/proc/self/fd/{fd}"):
                with self.lock:
                    self.calls += 1
                if delay:
                    time.sleep(delay)
            real(fd)

        monkeypatch.setattr(os, "fdatasync", counting)


def test_one_fdatasync_per_local_append(log: ta.Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `local` append costs one fdatasync of its head (no marker to sync after it)."""
    s = log.create_stream("s")
    s.append({"n": -1})  # the head file exists from here on
    counter = _SyncCounter(monkeypatch)
    for i in range(20):
        s.append({"n": i}, durability="local")
    assert counter.calls == 20


def test_concurrent_local_appenders_share_fdatasyncs(
    log: ta.Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 threads appending one record at a time: fdatasyncs are shared (each takes 2 ms
    here, so appenders queue behind it and the next sync covers them all)."""
    s = log.create_stream("s")
    s.append({"t": -1, "j": -1})
    counter = _SyncCounter(monkeypatch, delay=0.002)
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for j in range(25):
            s.append({"t": t, "j": j}, durability="local")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert s.next_offset == 201
    assert counter.calls <= 200 / 3, f"{counter.calls} fdatasyncs for 200 appends"


def test_arrow_data_in_the_streams_schema_is_appended_as_is(
    log: ta.Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch or table exactly in the stream's schema (types Parquet stores exactly, no
    caller system column) skips conversion and checks; anything else takes the general path.
    Both give the same records: dense offsets, append times, no headers, the values."""
    import transit_arrow.engine.writer as writer_module

    converted = []
    real = writer_module.coerce_input

    def counting(data: Any, current: Any) -> Any:
        converted.append(type(data).__name__)
        return real(data, current)

    s = log.create_stream("s")
    s.append({"a": 0, "b": "x0"})
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    monkeypatch.setattr(writer_module, "coerce_input", counting)

    def batch(lo: int, hi: int, kind: pa.Schema = schema) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(
            [{"a": i, "b": f"x{i}"} for i in range(lo, hi)], schema=kind
        )

    chunked = pa.Table.from_batches([batch(7, 9), batch(9, 12)])
    plain = [batch(1, 4), pa.Table.from_batches([batch(4, 7)]), chunked, batch(12, 13)]
    for data in plain:
        s.append(data, durability="local")
    assert converted == []  # none converted
    other = [
        batch(13, 15, schema.with_metadata({"k": "v"})),  # metadata: conformed
        batch(15, 17, pa.schema([pa.field("a", pa.int64(), False), ("b", pa.string())])),
        pa.RecordBatch.from_pylist(
            [{"a": 17, "b": "x17", "_timestamp": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}]
        ),
        batch(18, 20).cast(pa.schema([("a", pa.int32()), ("b", pa.string())])),
    ]
    for data in other:
        s.append(data)
    assert len(converted) == len(other)
    table = s.read()
    assert table.column("_offset").to_pylist() == list(range(20))
    assert table.column("a").to_pylist() == list(range(20))
    assert table.column("b").to_pylist() == [f"x{i}" for i in range(20)]
    assert table.column("_timestamp").null_count == 0
    assert table.column("_headers").null_count == 20
    assert table.column("_timestamp")[17].as_py() == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    user = [s.schema.field(name) for name in ("a", "b")]
    assert user == list(schema) and not any(f.metadata for f in user)  # nothing leaked
    s.flush()
    assert s.read().equals(table)


def test_arrow_data_of_types_parquet_must_check_is_still_checked(
    log: ta.Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose columns need the Parquet check (here seconds, which Parquet rescales)
    checks every appended batch, even one exactly in the stream's schema."""
    import transit_arrow.engine.writer as writer_module

    checked = []
    real = writer_module.check_parquet
    monkeypatch.setattr(writer_module, "check_parquet", lambda t: checked.append(1) or real(t))
    schema = pa.schema([("t", pa.timestamp("s")), ("n", pa.int64())])
    s = log.create_stream("s")
    data = pa.RecordBatch.from_pylist([{"t": dt.datetime(2024, 1, 1), "n": 1}], schema=schema)
    s.append(data)
    s.append(data, durability="local")
    assert len(checked) == 2
    assert s.read().column("n").to_pylist() == [1, 1]


def test_change_tokens_count_from_the_first_watcher(log: ta.Log) -> None:
    """Appends cost no change notification until something asks for a change token; from
    then on every append changes the token, and a wait on an old token returns at once."""
    catalog = log.catalog
    s = log.create_stream("s")
    s.append({"n": 0, "m": 0})
    assert not catalog.watched
    seen = catalog.version("s")
    assert catalog.watched
    s.append({"n": 1, "m": 1})
    assert catalog.version("s") != seen
    assert catalog.wait_changed("s", seen, timeout=0) != seen
    again = catalog.version("s")
    s.append({"n": 2, "m": 2}, durability="local")
    assert catalog.version("s") != again


def test_per_record_append_at_no_level_appends_nothing(log: ta.Log) -> None:
    """The generated per-record append refuses a durability that is no level before it
    appends anything: the call raises and the stream is unchanged."""
    s = log.create_stream("s")
    s.append({"n": 0, "m": 0})
    with pytest.raises(ta.InvalidInputError):
        s.append({"n": 1, "m": 1}, durability="eventually")  # type: ignore[arg-type]
    assert s.next_offset == 1
    assert _values(s) == [0]


# --- heads of the previous format ---------------------------------------------------------------


def _legacy_head(folder: Path, start: int, rows: list[dict[str, Any]], extra: bytes = b"") -> None:
    """A head as the previous format wrote it: an IPC stream counted by a JSON marker."""
    from transit_arrow.record import head_schema, schema_to_json

    user = pa.schema([("n", pa.int64())])
    table = pa.table(
        {
            "_offset": pa.array(range(start, start + len(rows)), pa.int64()),
            "_timestamp": pa.array([1_700_000_000_000_000] * len(rows), pa.timestamp("us", "UTC")),
            "_headers": pa.nulls(len(rows), pa.map_(pa.string(), pa.string())),
            "n": [r["n"] for r in rows],
        },
        schema=head_schema(user),
    )
    folder.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema)
    writer.write_table(table)
    data = sink.getvalue().to_pybytes()  # the old writer never wrote an end-of-stream
    (folder / f"{start:020d}.arrow").write_bytes(data + extra)
    marker = {"start_offset": start, "records": len(rows), "bytes": len(data), "generation": 0,
              "schema": schema_to_json(user)}  # fmt: skip
    (folder / f"{start:020d}.json").write_text(json.dumps(marker))


def test_heads_of_the_previous_format_still_recover(tmp_path: Path) -> None:
    """A crash left a head of the previous format (with a torn tail): readers show exactly
    what its marker counts, and a writer seals it and goes on."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s", schema=pa.schema([("n", pa.int64())]))
    _legacy_head(_heads(root / "_local"), 0, [{"n": i} for i in range(4)], extra=b"\x01torn")
    with ta.open(root) as log:
        assert _values(log.stream("s")) == [0, 1, 2, 3]
        log.stream("s").append({"n": 4})
    with ta.open(root) as log:
        assert _values(log.stream("s")) == [0, 1, 2, 3, 4]
        assert not _arrow_files(_heads(root / "_local"))
        assert log.verify("s", deep=True).ok


def test_a_writer_dying_during_recovery_hides_nothing(tmp_path: Path) -> None:
    """Heads of a dead writer stay visible while the next writer holds the lease but has not
    adopted them yet (it died too): readers follow the same rule recovery does."""
    root = tmp_path / "log"
    _run_child(_WRITE_AND_DIE, str(root))
    code = """
    import os, sys
    import transit_arrow as ta
    from transit_arrow.lease import Lease
    log = ta.open(sys.argv[1])
    cat = log.catalog
    Lease.acquire(cat.store, "streams/s", "s", "x" * 32, str(cat.local_stream_dir("s")),
                  take_over=False, local_lock_held=False)
    os._exit(0)  # took the lease, died before recovering anything
    """
    _run_child(code, str(root))
    with ta.open(root) as log:
        assert _values(log.stream("s")) == list(range(6))


def test_writer_files_survive_memory_only_store(tmp_path: Path) -> None:
    """Heads of a log on a store without local files live in the local dir as well."""
    store = LocalStore(tmp_path / "store")
    with ta.open(store, local_dir=tmp_path / "w", segment_max_age=3600) as log:
        log.create_stream("s").append({"n": 1})
        assert _arrow_files(_heads(tmp_path / "w"))


def test_transit_verify_lists_orphaned_heads(tmp_path: Path) -> None:
    """`transit verify` lists a stream's orphaned heads (a note, not a failed check), with
    their offsets and file; `--output json` adds them as `orphaned_heads`."""
    root = tmp_path / "log"
    with ta.open(root, local_dir=tmp_path / "a", segment_max_age=3600) as log_a:
        log_a.create_stream("s").append({"n": 1})
        with ta.open(root, local_dir=tmp_path / "b") as log_b:
            log_b.stream("s", take_over=True).append({"n": 2}, durability="tiered")
    command = [sys.executable, "-m", "transit_arrow", "verify", str(root), "s"]
    done = subprocess.run(
        [*command, "--local-dir", str(tmp_path / "a")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (note,) = [line for line in done.stdout.splitlines() if "note orphaned" in line]
    assert "1 record (offsets 0..0, fenced)" in note and str(_aside(tmp_path / "a")) in note
    done = subprocess.run(
        [*command, "--local-dir", str(tmp_path / "a"), "-o", "json"], capture_output=True
    )
    report = json.loads(done.stdout)
    assert report["ok"] and [o["kind"] for o in report["orphaned_heads"]] == ["fenced"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_busy_writer_refusal_leaves_no_lock_file(tmp_path: Path) -> None:
    """A regression test: an append refused with `WriterBusyError` (another live writer holds
    the lease) left `writer.lock` and its folders in the refused writer's local dir."""
    root = tmp_path / "log"
    with ta.open(root, local_dir=tmp_path / "a", segment_max_age=3600) as log_a:
        log_a.create_stream("s").append({"n": 1}, durability="local")
        with ta.open(root, local_dir=tmp_path / "b") as log_b:
            before = _tree(tmp_path / "b")
            for _ in range(2):
                with pytest.raises(ta.WriterBusyError):
                    log_b.stream("s").append({"n": 2})
                assert _tree(tmp_path / "b") == before
            # the holder's own lock is untouched: a second writer of its dir is still refused
            with (
                ta.open(root, local_dir=tmp_path / "a") as log_a2,
                pytest.raises(ta.WriterBusyError, match="same local dir"),
            ):
                log_a2.stream("s").append({"n": 3})
        log_a.stream("s").append({"n": 4}, durability="local")
    with ta.open(root, local_dir=tmp_path / "b") as log_b:
        log_b.stream("s").append({"n": 5})
        assert _values(log_b.stream("s")) == [1, 4, 5]
