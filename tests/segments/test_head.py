"""Heads: durable Arrow IPC files, their commit markers, and recovery (DESIGN §3, §4)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from transit_arrow.errors import IntegrityError
from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE, head_schema, schema_from_json
from transit_arrow.segments.head import Head, recover_heads

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
    pending = head.write_pending()
    assert pending is not None
    head.make_durable(*pending)


def _offsets(table: pa.Table) -> list[int]:
    return [int(v) for v in table.column("_offset").to_pylist()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The heads folder of one stream."""
    return tmp_path / "heads"


@pytest.fixture
def head(folder: Path) -> Iterator[Head]:
    """A head starting at offset 100, generation 4, closed after the test."""
    h = Head(folder, 100, USER, 4)
    yield h
    h.close_file()


def _marker(head: Head) -> dict[str, object]:
    return json.loads(head.marker_path.read_bytes())  # type: ignore[no-any-return]


class TestDurability:
    """The marker counts exactly the durable batches."""

    def test_files_and_marker(self, head: Head, folder: Path) -> None:
        """A durable batch is in `<start:020d>.arrow`, counted by `<start:020d>.json`."""
        head.add(_batch(100, 3))
        _sync(head)
        assert head.arrow_path == folder / "00000000000000000100.arrow"
        assert head.marker_path == folder / "00000000000000000100.json"
        marker = _marker(head)
        assert marker["start_offset"] == 100
        assert marker["records"] == 3
        assert marker["bytes"] == head.arrow_path.stat().st_size
        assert marker["generation"] == 4
        assert schema_from_json(str(marker["schema"])) == USER
        assert head.durable_records == 3

    def test_nothing_new(self, head: Head) -> None:
        """`write_pending` returns None when everything is already durable."""
        assert head.write_pending() is None
        head.add(_batch(100, 2))
        _sync(head)
        assert head.write_pending() is None

    def test_marker_counts_only_durable_batches(self, head: Head, folder: Path) -> None:
        """Written but not yet durable batches are in the file, not in the marker."""
        head.add(_batch(100, 3))
        _sync(head)
        durable_bytes = head.arrow_path.stat().st_size
        head.add(_batch(103, 5))
        assert head.write_pending() is not None  # written, never made durable
        assert head.arrow_path.stat().st_size > durable_bytes
        assert _marker(head)["records"] == 3
        assert _marker(head)["bytes"] == durable_bytes
        head.close_file()
        (rec,) = recover_heads(folder, truncate=False)
        assert _offsets(rec.table) == [100, 101, 102]

    def test_many_syncs(self, head: Head, folder: Path) -> None:
        """Each sync moves the marker forward; recovery returns every durable record in order."""
        for i in range(10):
            head.add(_batch(100 + 3 * i, 3))
            _sync(head)
            assert _marker(head)["records"] == 3 * (i + 1)
        head.close_file()
        (rec,) = recover_heads(folder, truncate=True)
        assert _offsets(rec.table) == list(range(100, 130))
        assert rec.table.schema == head_schema(USER)
        assert rec.table.column("s").to_pylist() == [f"v{i}" for i in range(100, 130)]
        assert (rec.start_offset, rec.generation, rec.user_schema) == (100, 4, USER)

    def test_heads_oldest_first(self, folder: Path) -> None:
        """Several heads in a folder come back ordered by start offset."""
        for start in (1_000, 7, 10_000_000):
            h = Head(folder, start, USER, 0)
            h.add(_batch(start, 2))
            _sync(h)
            h.close_file()
        assert [r.start_offset for r in recover_heads(folder, truncate=True)] == [
            7,
            1_000,
            10_000_000,
        ]

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A folder that does not exist holds no heads."""
        assert recover_heads(tmp_path / "nowhere", truncate=True) == []


def _durable_head(folder: Path) -> tuple[Path, int]:
    """A closed head with 3 durable records; returns its file and its durable byte count."""
    h = Head(folder, 0, USER, 1)
    h.add(_batch(0, 3))
    _sync(h)
    h.close_file()
    return h.arrow_path, h.arrow_path.stat().st_size


def _partial_batch() -> bytes:
    whole = _batch(3, 50).serialize().to_pybytes()
    return whole[: len(whole) // 2]


class TestRecovery:
    """`recover_heads` keeps exactly what the markers count."""

    @pytest.mark.parametrize(
        "tail",
        [
            pytest.param(b"\x00garbage\xff" * 10, id="garbage"),
            pytest.param(_partial_batch(), id="partial-batch"),
            pytest.param(_batch(3, 4).serialize().to_pybytes(), id="whole-uncounted-batch"),
        ],
    )
    def test_tail_truncated(self, folder: Path, tail: bytes) -> None:
        """With `truncate=True`, bytes past the marker's count are cut off the file."""
        path, size = _durable_head(folder)
        with open(path, "ab") as f:
            f.write(tail)
        (rec,) = recover_heads(folder, truncate=True)
        assert _offsets(rec.table) == [0, 1, 2]
        assert path.stat().st_size == size
        # Idempotent: a second recovery finds the same head, untouched.
        (again,) = recover_heads(folder, truncate=True)
        assert again.table.equals(rec.table)

    @pytest.mark.parametrize(
        "tail",
        [
            pytest.param(b"\x00garbage\xff" * 10, id="garbage"),
            pytest.param(_partial_batch(), id="partial-batch"),
            pytest.param(_batch(3, 4).serialize().to_pybytes(), id="whole-uncounted-batch"),
        ],
    )
    def test_tail_left_alone_without_truncate(self, folder: Path, tail: bytes) -> None:
        """With `truncate=False` (a reader) the file is unchanged, the tail still hidden."""
        path, size = _durable_head(folder)
        with open(path, "ab") as f:
            f.write(tail)
        before = path.read_bytes()
        (rec,) = recover_heads(folder, truncate=False)
        assert _offsets(rec.table) == [0, 1, 2]
        assert path.read_bytes() == before
        assert path.stat().st_size == size + len(tail)

    def test_head_without_marker_removed(self, folder: Path) -> None:
        """A head file with no marker acknowledged nothing: removed with `truncate=True`."""
        h = Head(folder, 0, USER, 1)
        h.add(_batch(0, 3))
        assert h.write_pending() is not None  # never made durable: no marker
        h.close_file()
        assert h.arrow_path.exists()
        assert not h.marker_path.exists()
        assert recover_heads(folder, truncate=False) == []
        assert h.arrow_path.exists()
        assert recover_heads(folder, truncate=True) == []
        assert not h.arrow_path.exists()
        assert os.listdir(folder) == []

    def test_unmarked_head_beside_a_marked_one(self, folder: Path) -> None:
        """Only the unmarked head is removed; the acknowledged one is kept."""
        path, _ = _durable_head(folder)
        stray = Head(folder, 3, USER, 1)
        stray.add(_batch(3, 2))
        assert stray.write_pending() is not None
        stray.close_file()
        (rec,) = recover_heads(folder, truncate=True)
        assert rec.arrow_path == path
        assert not stray.arrow_path.exists()

    @pytest.mark.parametrize("truncate", [True, False])
    def test_marker_counts_more_bytes_than_the_file(self, folder: Path, truncate: bool) -> None:
        """A file shorter than its marker's byte count lost acknowledged data: IntegrityError."""
        path, size = _durable_head(folder)
        os.truncate(path, size - 1)
        with pytest.raises(IntegrityError, match=f"has {size - 1} bytes but its marker counts"):
            recover_heads(folder, truncate=truncate)
        assert path.stat().st_size == size - 1

    def test_marker_counts_more_records_than_the_bytes_hold(self, folder: Path) -> None:
        """A marker whose record count disagrees with its byte count raises IntegrityError."""
        path, _ = _durable_head(folder)
        marker_path = path.with_suffix(".json")
        marker = json.loads(marker_path.read_bytes())
        marker["records"] += 1
        marker_path.write_text(json.dumps(marker))
        with pytest.raises(IntegrityError, match="holds 3 records but its marker counts 4"):
            recover_heads(folder, truncate=True)

    def test_marker_without_its_file(self, folder: Path) -> None:
        """A marker counting records whose IPC file is gone lost acknowledged data."""
        path, _ = _durable_head(folder)
        path.unlink()
        with pytest.raises(IntegrityError, match="is missing"):
            recover_heads(folder, truncate=True)

    def test_torn_marker(self, folder: Path) -> None:
        """An unreadable marker (torn update) keeps the complete batches, which were durable."""
        h = Head(folder, 0, USER, 1)
        for i in range(3):
            h.add(_batch(2 * i, 2))
            _sync(h)
        h.close_file()
        size = h.arrow_path.stat().st_size
        with open(h.arrow_path, "ab") as f:
            f.write(_partial_batch())
        h.marker_path.write_bytes(b'{"start_offset": 0, "reco')
        (rec,) = recover_heads(folder, truncate=True)
        assert _offsets(rec.table) == list(range(6))
        assert h.arrow_path.stat().st_size == size
