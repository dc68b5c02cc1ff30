"""Heads: self-validating Arrow IPC files (framed batches), recovery, set-aside files, and heads
of the previous format (an IPC stream counted by a JSON marker) (DESIGN §3-4, docs/format.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from transit_arrow.errors import IntegrityError
from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE, head_schema, schema_to_json
from transit_arrow.segments.head import (
    Head,
    chain_heads,
    list_head_files,
    load_head,
    orphan_records,
    read_head,
    read_heads,
    read_set_aside,
    recover_heads,
    set_aside,
    update_set_aside,
)

USER = pa.schema([pa.field("a", pa.int64()), pa.field("s", pa.string())])


def _batch(first: int, n: int) -> pa.RecordBatch:
    """`n` head records with offsets `first..first+n-1`."""
    return pa.RecordBatch.from_arrays(
        [
            pa.array(range(first, first + n), pa.int64()),
            pa.array([1_700_000_000_000_000 + i for i in range(n)], TIMESTAMP_TYPE),
            pa.nulls(n, HEADERS_TYPE),
            pa.array(range(first, first + n), pa.int64()),
            pa.array([f"v{i}" for i in range(first, first + n)]),
        ],
        schema=head_schema(USER),
    )


def _sync(head: Head) -> None:
    """Write and make durable what the head holds (one group commit)."""
    job = head.prepare()
    assert job is not None
    head.write(job)
    head.sync(job[2])


def _offsets(batches: list[pa.RecordBatch]) -> list[int]:
    return [int(v) for b in batches for v in b.column("_offset").to_pylist()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The heads folder of one stream."""
    return tmp_path / "heads"


@pytest.fixture
def head(folder: Path) -> Iterator[Head]:
    """A head starting at offset 100, generation 4, owned by lease epoch 7."""
    h = Head(folder, 100, USER, 4, 7)
    yield h
    h.close_file()


def _written(folder: Path, frames: int = 3, per_frame: int = 2) -> tuple[Path, list[int]]:
    """A closed head at offset 0 with `frames` synced frames; its path and the byte where each
    data frame starts (the header frame is before the first)."""
    h = Head(folder, 0, USER, 1, 3)
    for i in range(frames):
        h.add(_batch(i * per_frame, per_frame))
        _sync(h)
    h.close_file()
    return h.path, [frame.start for frame in load_head(h.path).frames]


class TestFrames:
    """Every group commit appends one frame; the file stays a valid Arrow IPC stream."""

    def test_file_name_header_and_ipc(self, head: Head, folder: Path) -> None:
        """`<start:020d>-<epoch:020d>.arrow`, readable by any Arrow IPC reader."""
        head.add(_batch(100, 3))
        _sync(head)
        assert head.path == folder / f"{100:020d}-{7:020d}.arrow"
        assert list_head_files(folder) == [(100, 7, head.path)]
        table = pa.ipc.open_stream(head.path.read_bytes()).read_all()
        assert _offsets(table.to_batches()) == [100, 101, 102]
        loaded = load_head(head.path)
        assert (loaded.status, loaded.start_offset, loaded.epoch, loaded.generation) == (
            "ok",
            100,
            7,
            4,
        )
        assert loaded.user_schema == USER and loaded.table().schema == head_schema(USER)
        assert loaded.valid_bytes == loaded.size == head.path.stat().st_size
        assert head.durable_records == 3

    def test_nothing_new(self, head: Head) -> None:
        """`prepare` returns None when everything is written and durable."""
        assert head.prepare() is None
        head.add(_batch(100, 2))
        _sync(head)
        assert head.prepare() is None

    def test_written_but_unsynced_frames_are_synced_later(self, head: Head) -> None:
        """A frame written whose sync failed is synced by the next group commit."""
        head.add(_batch(100, 2))
        job = head.prepare()
        assert job is not None
        head.write(job)
        again = head.prepare()
        assert again is not None and again[0] == []  # nothing to write, a sync to do
        head.write(again)
        head.sync(again[2])
        assert head.durable_records == 2 and head.prepare() is None

    def test_many_frames(self, head: Head) -> None:
        """Each sync appends a frame; all records come back in order."""
        for i in range(10):
            head.add(_batch(100 + 3 * i, 3))
            _sync(head)
        loaded = load_head(head.path)
        assert _offsets(loaded.batches) == list(range(100, 130))
        assert loaded.table().column("s").to_pylist() == [f"v{i}" for i in range(100, 130)]
        assert len(loaded.frames) == 10

    def test_rows_buffered_by_the_fast_path(self, head: Head) -> None:
        """Buffered per-record rows become one batch, one frame."""
        for i in range(5):
            head.add_row((i, f"r{i}"), 1_700_000_000_000_000, 16)
        _sync(head)
        loaded = load_head(head.path)
        assert _offsets(loaded.batches) == list(range(100, 105))
        assert loaded.table().column("s").to_pylist() == [f"r{i}" for i in range(5)]

    @pytest.mark.parametrize("rows", [1, 7, 63, 64, 200])
    def test_buffered_rows_become_the_same_batch_at_any_size(self, folder: Path, rows: int) -> None:
        """Few buffered rows are converted as one struct, many column by column: the batch is
        the same either way (values, nulls, types, schema and its metadata)."""
        user = pa.schema([("i", pa.int64()), ("s", pa.string()), ("f", pa.float64())])
        h = Head(folder, 10, user, 0, 1)
        for k in range(rows):
            value = None if k % 5 == 4 else k
            h.add_row((value, f"r{k}", k / 2 if k % 3 else k), 1_700_000_000_123_456_789 + k, 24)
        (batch,) = h.all_batches()
        expected = pa.RecordBatch.from_arrays(
            [
                pa.array(range(10, 10 + rows), pa.int64()),
                pa.array([1_700_000_000_123_456 + (789 + k) // 1000 for k in range(rows)]).cast(
                    TIMESTAMP_TYPE
                ),
                pa.nulls(rows, HEADERS_TYPE),
                pa.array([None if k % 5 == 4 else k for k in range(rows)], pa.int64()),
                pa.array([f"r{k}" for k in range(rows)], pa.string()),
                pa.array([k / 2 if k % 3 else k for k in range(rows)], pa.float64()),
            ],
            schema=head_schema(user),
        )
        assert batch.schema.equals(head_schema(user), check_metadata=True)
        assert batch.equals(expected)

    def test_dictionary_columns(self, folder: Path) -> None:
        """Dictionary-encoded columns are framed with their dictionaries."""
        user = pa.schema([("c", pa.dictionary(pa.int32(), pa.string()))])
        h = Head(folder, 0, user, 0, 1)
        for i in range(3):
            batch = pa.RecordBatch.from_arrays(
                [
                    pa.array([i], pa.int64()),
                    pa.array([0], TIMESTAMP_TYPE),
                    pa.nulls(1, HEADERS_TYPE),
                    pa.array([f"x{i}"]).dictionary_encode(),
                ],
                schema=head_schema(user),
            )
            h.add(batch)
            _sync(h)
        h.close_file()
        loaded = load_head(h.path)
        assert loaded.status == "ok"
        assert loaded.table().column("c").to_pylist() == ["x0", "x1", "x2"]
        assert pa.ipc.open_stream(h.path.read_bytes()).read_all().num_rows == 3

    def test_heads_oldest_first(self, folder: Path) -> None:
        """Several heads in a folder come back ordered by start offset, then epoch."""
        for start, epoch in ((1_000, 2), (7, 5), (10_000_000, 1), (7, 2)):
            h = Head(folder, start, USER, 0, epoch)
            h.add(_batch(start, 2))
            _sync(h)
            h.close_file()
        found = [(h.start_offset, h.epoch) for h in read_heads(folder)]
        assert found == [(7, 2), (7, 5), (1_000, 2), (10_000_000, 1)]

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A folder that does not exist holds no heads."""
        assert read_heads(tmp_path / "nowhere") == []
        assert recover_heads(tmp_path / "nowhere", truncate=True) == []


class TestRecovery:
    """Valid frames are kept, torn tails cut, damage before valid frames always reported."""

    @pytest.mark.parametrize(
        "tail",
        [
            pytest.param(b"\x00garbage\xff" * 10, id="garbage"),
            pytest.param(_batch(9, 50).serialize().to_pybytes()[:700], id="partial-batch"),
            pytest.param(_batch(9, 4).serialize().to_pybytes(), id="batch-without-trailer"),
        ],
    )
    def test_torn_tail(self, folder: Path, tail: bytes) -> None:
        """A reader keeps the valid frames and changes nothing; the writer's repair cuts the
        tail, idempotently."""
        path, _ = _written(folder)
        size = path.stat().st_size
        with open(path, "ab") as f:
            f.write(tail)
        before = path.read_bytes()
        found = load_head(path)
        assert (found.status, _offsets(found.batches)) == ("torn", list(range(6)))
        assert path.read_bytes() == before
        repaired = read_head(path, 3, repair=True)
        assert repaired is not None and repaired.status == "ok"
        assert path.stat().st_size == size
        again = read_head(path, 3, repair=True)
        assert again is not None and _offsets(again.batches) == list(range(6))

    def test_every_cut_keeps_exactly_the_complete_frames(self, folder: Path) -> None:
        """A file cut at any byte (a torn write) keeps exactly the frames before the cut."""
        path, starts = _written(folder)
        data = path.read_bytes()
        ends = [*starts[1:], len(data)]
        for cut in range(0, len(data), 3):
            path.write_bytes(data[:cut])
            found = load_head(path)
            complete = sum(1 for end in ends if end <= cut)
            assert found.status in ("torn", "empty", "ok"), (cut, found.detail)
            assert _offsets(found.batches) == list(range(2 * complete)), cut

    def test_damage_before_a_valid_frame_is_never_dropped_silently(self, folder: Path) -> None:
        """Flip any byte before the last frame: the head is reported damaged, unless the byte
        held nothing (IPC padding), in which case every record reads back unchanged."""
        path, starts = _written(folder, frames=4)
        data = path.read_bytes()
        original = load_head(path).table()
        last_frame = starts[-1]
        for position in range(0, last_frame, 5):
            damaged = bytearray(data)
            damaged[position] ^= 0x41
            path.write_bytes(bytes(damaged))
            found = load_head(path)
            if found.status == "damaged":
                assert found.detail and "valid frame follows" in found.detail
                continue
            assert found.status == "ok", (position, found.status, found.detail)
            assert found.table().equals(original), position

    def test_damage_in_the_last_frame_is_a_torn_tail(self, folder: Path) -> None:
        """The last frame's damage cannot be told from a torn write: the frames before stay."""
        path, starts = _written(folder)
        damaged = bytearray(path.read_bytes())
        damaged[starts[-1] + 40] ^= 0xFF
        path.write_bytes(bytes(damaged))
        found = load_head(path)
        assert found.status == "torn" and _offsets(found.batches) == [0, 1, 2, 3]

    def test_salvage_reads_the_frames_after_damage(self, folder: Path) -> None:
        """`salvage` returns every valid frame, those after the damage too."""
        path, starts = _written(folder, frames=4)
        damaged = bytearray(path.read_bytes())
        damaged[starts[1] + 30] ^= 0xFF
        path.write_bytes(bytes(damaged))
        assert load_head(path).status == "damaged"
        assert _offsets(load_head(path).batches) == [0, 1]
        assert _offsets(load_head(path, salvage=True).batches) == [0, 1, 4, 5, 6, 7]
        assert _offsets(orphan_records(path)[1]) == [0, 1, 4, 5, 6, 7]

    def test_readers_refuse_a_damaged_head(self, folder: Path) -> None:
        """The compatibility reader raises `IntegrityError` naming the file."""
        path, starts = _written(folder)
        damaged = bytearray(path.read_bytes())
        damaged[starts[0] + 20] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(IntegrityError, match=path.name):
            recover_heads(folder, truncate=False)
        with pytest.raises(IntegrityError, match="damaged"):
            chain_heads(read_heads(folder), 0, 0)

    def test_recheck_detects_changed_bytes(self, folder: Path) -> None:
        """Sealing re-checks the frames a recovered head came from."""
        path, _ = _written(folder)
        found = load_head(path)
        found.recheck()
        assert found.data is not None
        changed = bytearray(found.data)
        changed[found.frames[1].start + 10] ^= 1
        found.data = bytes(changed)
        with pytest.raises(IntegrityError, match="checksum"):
            found.recheck()

    def test_a_file_without_a_complete_frame_is_removed_by_repair(self, folder: Path) -> None:
        """A head whose header frame is torn acknowledged nothing: the writer removes it."""
        path, starts = _written(folder)
        path.write_bytes(path.read_bytes()[: starts[0] - 5])
        assert load_head(path).status == "empty"
        assert read_heads(folder) == []
        assert path.exists()
        assert read_head(path, 3, repair=True) is None
        assert not path.exists()


class TestChain:
    """Which heads continue a stream: the readers' and the writer's rule."""

    def _heads(self, folder: Path, specs: list[tuple[int, int, int]]) -> None:
        for start, epoch, n in specs:
            h = Head(folder, start, USER, 0, epoch)
            h.add(_batch(start, n))
            _sync(h)
            h.close_file()

    def test_chain_from_the_committed_end(self, folder: Path) -> None:
        """From the next offset, each head starts where the previous one ends."""
        self._heads(folder, [(0, 2, 3), (3, 2, 2), (5, 2, 1), (9, 2, 1)])
        chain = chain_heads(read_heads(folder), 3, 0)
        assert [(start, sum(b.num_rows for b in bs)) for start, _, bs in chain] == [(3, 2), (5, 1)]

    def test_fenced_epochs_never_continue_and_newest_owner_wins(self, folder: Path) -> None:
        """Heads of a fenced epoch are skipped; at one start, the newest owner's is chosen."""
        self._heads(folder, [(0, 1, 5), (0, 2, 2), (2, 2, 1), (0, 3, 4)])
        chain = chain_heads(read_heads(folder), 0, 2)
        assert [(start, len(bs)) for start, _, bs in chain] == [(0, 1)]
        assert _offsets(chain[0][2]) == [0, 1, 2, 3]
        chain = chain_heads(read_heads(folder), 0, 0)
        assert _offsets([b for _, _, bs in chain for b in bs]) == [0, 1, 2, 3]


class TestSetAside:
    """Set-aside heads keep their bytes and say why."""

    def test_move_copy_and_update(self, folder: Path, tmp_path: Path) -> None:
        path, _ = _written(folder)
        data = path.read_bytes()
        aside = tmp_path / "set-aside"
        copy = set_aside(path, aside, {"stream": "s", "kind": "damaged"}, copy=True)
        assert path.exists() and copy.read_bytes() == data
        moved = set_aside(path, aside, {"stream": "s", "kind": "fenced", "records": 6})
        assert not path.exists() and moved.read_bytes() == data and moved != copy
        listed = dict(read_set_aside(aside))
        assert listed[copy]["kind"] == "damaged" and listed[moved]["kind"] == "fenced"
        assert listed[moved]["source"] == str(path) and listed[moved]["set_aside_at"]
        update_set_aside(moved, {"reappended_to": "s/x"})
        assert dict(read_set_aside(aside))[moved]["reappended_to"] == "s/x"
        assert _offsets(orphan_records(moved)[1]) == list(range(6))


# --- heads of the previous format --------------------------------------------------------------


def _legacy(folder: Path, start: int, batches: list[pa.RecordBatch], counted: int) -> Path:
    """A head as the previous format wrote it: an IPC stream (never closed) whose first
    `counted` batches a JSON marker counts."""
    folder.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, head_schema(USER))
    sizes = []
    for batch in batches:
        writer.write_batch(batch)
        sizes.append(sink.tell())
    data = sink.getvalue().to_pybytes()
    path = folder / f"{start:020d}.arrow"
    path.write_bytes(data)
    records = sum(b.num_rows for b in batches[:counted])
    marker = {
        "start_offset": start,
        "records": records,
        "bytes": sizes[counted - 1],
        "generation": 1,
        "schema": schema_to_json(USER),
    }
    path.with_suffix(".json").write_text(json.dumps(marker))
    return path


class TestPreviousFormat:
    """Heads written by the previous format still recover exactly as they did."""

    def test_marker_counts_the_records(self, folder: Path) -> None:
        path = _legacy(folder, 0, [_batch(0, 3), _batch(3, 4)], counted=1)
        (found,) = read_heads(folder)
        assert (found.epoch, found.status, _offsets(found.batches)) == (None, "ok", [0, 1, 2])
        size = path.stat().st_size
        (rec,) = recover_heads(folder, truncate=False)
        assert path.stat().st_size == size
        (rec,) = recover_heads(folder, truncate=True)
        assert _offsets(rec.table.to_batches()) == [0, 1, 2]
        assert path.stat().st_size < size

    def test_file_without_marker_is_removed(self, folder: Path) -> None:
        path = _legacy(folder, 0, [_batch(0, 3)], counted=1)
        path.with_suffix(".json").unlink()
        assert read_heads(folder) == []
        assert recover_heads(folder, truncate=True) == []
        assert not path.exists()

    @pytest.mark.parametrize("truncate", [True, False])
    def test_marker_counts_more_bytes_than_the_file(self, folder: Path, truncate: bool) -> None:
        path = _legacy(folder, 0, [_batch(0, 3)], counted=1)
        size = path.stat().st_size
        os.truncate(path, size - 1)
        with pytest.raises(IntegrityError, match="bytes but its marker counts"):
            recover_heads(folder, truncate=truncate)

    def test_torn_marker_keeps_the_complete_batches(self, folder: Path) -> None:
        path = _legacy(folder, 0, [_batch(0, 2), _batch(2, 2)], counted=2)
        path.with_suffix(".json").write_bytes(b'{"start_offset": 0, "reco')
        (rec,) = recover_heads(folder, truncate=True)
        assert _offsets(rec.table.to_batches()) == [0, 1, 2, 3]

    def test_orphan_records_of_a_previous_format_file(self, folder: Path) -> None:
        path = _legacy(folder, 5, [_batch(5, 3)], counted=1)
        assert _offsets(orphan_records(path)[1]) == [5, 6, 7]
