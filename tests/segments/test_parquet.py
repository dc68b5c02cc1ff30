"""Sealed segments: Parquet (zstd; snappy when small), BLAKE3-named, read by offset range
(DESIGN §3, §4)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transit_arrow.manifest import SegmentRef
from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE, head_schema
from transit_arrow.segments.parquet import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    GROUPS_PER_TASK,
    ROW_GROUP_SIZE,
    SMALL_SEGMENT_BYTES,
    encode_segment,
    iter_segment,
    plan_segment,
    read_groups,
    segment_path,
    with_headers,
)

USER = pa.schema([pa.field("a", pa.int64()), pa.field("s", pa.string())])
FIRST = 1_000
ROWS = 1_050
GROUP = 100


def _head_table(first: int, n: int) -> pa.Table:
    """A head table (`_offset`, `_timestamp`, `_headers`, user columns) of `n` records."""
    return pa.Table.from_arrays(
        [
            pa.array(range(first, first + n), pa.int64()),
            pa.array([1_700_000_000_000_000 + 10 * i for i in range(n)], TIMESTAMP_TYPE),
            pa.array([[("k", str(i))] if i % 3 == 0 else None for i in range(n)], HEADERS_TYPE),
            pa.array([i * i for i in range(n)], pa.int64()),
            pa.array([f"value-{i}" for i in range(n)]),
        ],
        schema=head_schema(USER),
    )


def _codecs(data: bytes) -> set[str]:
    """The codecs of every column chunk of a Parquet file."""
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    return {
        meta.row_group(i).column(c).compression
        for i in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }


@pytest.fixture(scope="module")
def segment() -> tuple[bytes, dict[str, Any], SegmentRef]:
    """One encoded segment of offsets 1000..2049 in row groups of 100 rows."""
    data, meta = encode_segment(_head_table(FIRST, ROWS), "main/branch", row_group_size=GROUP)
    raw = bytes(data)
    ref = SegmentRef(path=segment_path("streams/x", 0, 0, meta["blake3"]), **meta)
    return raw, meta, ref


class _RecordingFile(io.BytesIO):
    """An in-memory file that records the byte ranges read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def read(self, size: int | None = -1) -> bytes:
        start = self.tell()
        out = super().read(size)
        self.ranges.append((start, start + len(out)))
        return out

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        n = super().readinto(buffer)
        self.ranges.append((start, start + n))
        return n


def _group_spans(raw: bytes) -> list[tuple[int, int]]:
    """The byte span of each row group's column chunks."""
    meta = pq.ParquetFile(pa.BufferReader(raw)).metadata
    spans = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        starts, ends = [], []
        for c in range(rg.num_columns):
            col = rg.column(c)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                start = min(start, col.dictionary_page_offset)
            starts.append(start)
            ends.append(start + col.total_compressed_size)
        spans.append((min(starts), max(ends)))
    return spans


def _groups_read(raw: bytes, ranges: list[tuple[int, int]]) -> set[int]:
    """Row groups whose bytes were read, not counting footer reads.

    The reader fetches the footer with one speculative read of the file's last 64 KiB (here the
    whole file); footer reads are the ones that end at the end of the file, and column-chunk
    reads never do, since the footer follows them.
    """
    data_reads = [(a, b) for a, b in ranges if b != len(raw)]
    spans = enumerate(_group_spans(raw))
    return {i for i, (lo, hi) in spans for a, b in data_reads if a < hi and lo < b}


class TestEncodeSegment:
    """`encode_segment` writes the head table as Parquet and describes it."""

    def test_layout(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """Columns are `_stream` (dictionary), the head columns, then user columns."""
        raw, _, _ = segment
        pf = pq.ParquetFile(pa.BufferReader(raw))
        assert pf.schema_arrow.names == ["_stream", "_offset", "_timestamp", "_headers", "a", "s"]
        assert pa.types.is_dictionary(pf.schema_arrow.field("_stream").type)
        assert pf.schema_arrow.field("_offset").type == pa.int64()
        assert pf.schema_arrow.field("_timestamp").type == TIMESTAMP_TYPE
        table = pf.read()
        assert table.column("_stream").to_pylist() == ["main/branch"] * ROWS
        assert table.drop_columns(["_stream"]).equals(_head_table(FIRST, ROWS))

    def test_default_codec(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """By default ("auto") every column chunk of a small segment is snappy-compressed,
        and every one of a segment of `SMALL_SEGMENT_BYTES` or more zstd-compressed."""
        raw, _, _ = segment
        assert DEFAULT_COMPRESSION == "auto"
        assert _codecs(raw) == {"SNAPPY"}
        big = _head_table(0, 4 * ROWS).append_column("pad", pa.array([b"x" * 300] * 4 * ROWS))
        assert big.nbytes >= SMALL_SEGMENT_BYTES > big.slice(0, ROWS).nbytes
        data, _ = encode_segment(big, "s", GROUP)
        assert _codecs(data) == {"ZSTD"}
        data, _ = encode_segment(big.slice(0, ROWS), "s", GROUP)
        assert _codecs(data) == {"SNAPPY"}
        assert (
            pq.read_table(pa.BufferReader(data))
            .drop_columns(["_stream"])
            .equals(big.slice(0, ROWS))
        )

    @pytest.mark.parametrize("codec", COMPRESSIONS)
    def test_codec_option(self, codec: str) -> None:
        """`compression` picks the codec of every column chunk; the file reads the same."""
        data, _ = encode_segment(_head_table(0, 300), "s", GROUP, compression=codec)
        # pyarrow's names of the codecs; "auto" is snappy for a segment this small
        names = {"none": "UNCOMPRESSED", "lz4_raw": "LZ4", "auto": "SNAPPY"}
        assert _codecs(data) == {names.get(codec, codec.upper())}
        table = pq.read_table(pa.BufferReader(data)).drop_columns(["_stream"])
        assert table.equals(_head_table(0, 300))

    def test_incompressible_column_stored_plain(self) -> None:
        """A binary column the codec cannot shrink (random bytes) is stored uncompressed; the
        other columns keep the codec, and the values read back unchanged."""
        n = 200
        rng = np.random.default_rng(5)
        blobs = [rng.bytes(4096) for _ in range(n)]
        table = _head_table(0, n).append_column("blob", pa.array(blobs, pa.binary()))
        data, _ = encode_segment(table, "s", compression="snappy")
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        by_column = {
            meta.schema.column(c).path: meta.row_group(0).column(c).compression
            for c in range(meta.num_columns)
        }
        assert by_column.pop("blob") == "UNCOMPRESSED"
        assert set(by_column.values()) == {"SNAPPY"}
        assert pq.read_table(pa.BufferReader(data)).column("blob").to_pylist() == blobs

    def test_incompressible_numbers_stored_plain(self) -> None:
        """A fixed-width column without a dictionary that zstd cannot shrink by an eighth
        (random doubles) is stored uncompressed once the sample is full; a compressible one
        (steady ids) keeps zstd, and both read back unchanged. Too few values to sample
        change nothing."""
        n = 40_000  # 320 KB of doubles: more than the sample
        rng = np.random.default_rng(7)
        scores = rng.random(n)
        table = (
            _head_table(0, n)
            .append_column("score", pa.array(scores))
            .append_column("id", pa.array(np.arange(n, dtype=np.int64) * 3))
        )
        data, _ = encode_segment(table, "s", compression="zstd")
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        by_column = {
            meta.schema.column(c).path: meta.row_group(0).column(c).compression
            for c in range(meta.num_columns)
        }
        assert by_column["score"] == "UNCOMPRESSED"
        assert by_column["id"] == "ZSTD"
        back = pq.read_table(pa.BufferReader(data))
        assert back.column("score").to_pylist() == scores.tolist()
        assert back.drop_columns(["_stream"]).equals(table)
        small, _ = encode_segment(table.slice(0, 1_000), "s", compression="zstd")
        meta = pq.ParquetFile(pa.BufferReader(small)).metadata
        assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {
            "ZSTD"
        }

    def test_all_null_headers_left_out(self) -> None:
        """A segment whose records carry no header has no `_headers` column; `with_headers`
        gives it back (all null, after `_timestamp`); one header keeps the column."""
        table = _head_table(0, 100)
        bare = table.set_column(2, "_headers", pa.nulls(100, HEADERS_TYPE))
        data, _ = encode_segment(bare, "s", GROUP)
        raw = pq.read_table(pa.BufferReader(data))
        assert "_headers" not in raw.column_names
        assert with_headers(raw).drop_columns(["_stream"]).equals(bare)
        data, _ = encode_segment(table, "s", GROUP)
        raw = pq.read_table(pa.BufferReader(data))
        assert raw.drop_columns(["_stream"]).equals(table)
        assert with_headers(raw) is raw

    def test_unique_strings_skip_the_dictionary(self) -> None:
        """A string column of mostly distinct values is not dictionary-encoded (Parquet would
        give the dictionary up in every row group); a repetitive one is."""
        n = 1_000
        table = _head_table(0, n).append_column("tag", pa.array(["x", "y"] * (n // 2)))
        data, _ = encode_segment(table, "s", GROUP)
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        encodings = {
            meta.schema.column(c).path: meta.row_group(0).column(c).encodings
            for c in range(meta.num_columns)
        }
        assert "RLE_DICTIONARY" not in encodings["s"]  # "value-<i>": all distinct
        assert "RLE_DICTIONARY" in encodings["tag"]
        assert "RLE_DICTIONARY" in encodings["_stream"]

    def test_stream_column_dictionary_encoded(
        self, segment: tuple[bytes, dict[str, Any], SegmentRef]
    ) -> None:
        """The `_stream` column is dictionary-encoded in the file, one value per row group."""
        raw, _, _ = segment
        meta = pq.ParquetFile(pa.BufferReader(raw)).metadata
        for i in range(meta.num_row_groups):
            col = meta.row_group(i).column(0)
            assert col.path_in_schema == "_stream"
            assert col.has_dictionary_page
            assert any("DICTIONARY" in e for e in col.encodings), col.encodings
            assert col.statistics.min == col.statistics.max == "main/branch"

    def test_row_groups(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """Row groups hold `row_group_size` rows (the last one the rest)."""
        raw, _, _ = segment
        meta = pq.ParquetFile(pa.BufferReader(raw)).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sizes == [GROUP] * (ROWS // GROUP) + [ROWS % GROUP]

    def test_offsets_sorted(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """`_offset` is sorted within the file, and row-group statistics are ordered ranges."""
        raw, _, _ = segment
        pf = pq.ParquetFile(pa.BufferReader(raw))
        offsets = pf.read(columns=["_offset"]).column("_offset").to_pylist()
        assert offsets == sorted(offsets) == list(range(FIRST, FIRST + ROWS))
        idx = pf.schema_arrow.get_field_index("_offset")
        stats = [
            pf.metadata.row_group(i).column(idx).statistics
            for i in range(pf.metadata.num_row_groups)
        ]
        assert [(s.min, s.max) for s in stats] == [
            (FIRST + g * GROUP, min(FIRST + (g + 1) * GROUP, FIRST + ROWS) - 1)
            for g in range(len(stats))
        ]

    def test_meta(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """The returned fields describe the file, with BLAKE3 of its exact bytes."""
        raw, meta, _ = segment
        assert meta == {
            "first_offset": FIRST,
            "last_offset": FIRST + ROWS - 1,
            "records": ROWS,
            "bytes": len(raw),
            "blake3": blake3.blake3(raw).hexdigest(),
            "min_timestamp": 1_700_000_000_000_000,
            "max_timestamp": 1_700_000_000_000_000 + 10 * (ROWS - 1),
        }

    def test_default_row_group_size(self) -> None:
        """Without `row_group_size` a small head is one row group."""
        data, _ = encode_segment(_head_table(0, 10), "s")
        assert pq.ParquetFile(pa.BufferReader(bytes(data))).metadata.num_row_groups == 1
        assert ROW_GROUP_SIZE >= 10

    def test_deterministic(self) -> None:
        """The same head encodes to the same bytes (so the same name)."""
        a, meta_a = encode_segment(_head_table(0, 300), "s", row_group_size=GROUP)
        b, meta_b = encode_segment(_head_table(0, 300), "s", row_group_size=GROUP)
        assert bytes(a) == bytes(b)
        assert meta_a == meta_b


def test_segment_path() -> None:
    """`<folder>/segments/<first:020d>-<last:020d>-<blake3[:16]>.parquet`."""
    digest = "0123456789abcdef" + "f" * 48
    assert segment_path("streams/a%2Fb", 5, 1234, digest) == (
        "streams/a%2Fb/segments/00000000000000000005-00000000000000001234-0123456789abcdef.parquet"
    )


class TestIterSegment:
    """`iter_segment` returns exactly an offset range, reading only the row groups it needs."""

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (FIRST + 250, FIRST + 260),
            (FIRST + 199, FIRST + 201),
            (FIRST + 200, FIRST + 300),
            (FIRST + 1000, FIRST + 2000),
            (0, FIRST + 1),
            (FIRST + 437, FIRST + 438),
        ],
    )
    def test_narrow_range(
        self, segment: tuple[bytes, dict[str, Any], SegmentRef], start: int, end: int
    ) -> None:
        """Exactly the requested offsets come back, from the overlapping row groups only."""
        raw, _, ref = segment
        source = _RecordingFile(raw)
        batches = list(iter_segment(pa.PythonFile(source, mode="r"), ref, start, end, None))
        offsets = [o for b in batches for o in b.column("_offset").to_pylist()]
        expected = list(range(max(start, FIRST), min(end, FIRST + ROWS)))
        assert offsets == expected
        assert all(b.num_rows for b in batches)
        wanted = {(o - FIRST) // GROUP for o in expected}
        assert _groups_read(raw, source.ranges) == wanted

    def test_values_match(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """The rows returned are the rows written, every column intact."""
        raw, _, ref = segment
        batches = list(iter_segment(pa.BufferReader(raw), ref, FIRST + 95, FIRST + 105, None))
        table = pa.Table.from_batches(batches).drop_columns(["_stream"])
        assert table.equals(_head_table(FIRST, ROWS).slice(95, 10))

    def test_whole_segment(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """A range covering the segment returns every row."""
        raw, _, ref = segment
        batches = list(iter_segment(pa.BufferReader(raw), ref, 0, 1 << 62, None))
        assert sum(b.num_rows for b in batches) == ROWS

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, FIRST), (FIRST + ROWS, FIRST + ROWS + 10), (FIRST + 5, FIRST + 5)],
        ids=["before", "after", "empty"],
    )
    def test_outside(
        self, segment: tuple[bytes, dict[str, Any], SegmentRef], start: int, end: int
    ) -> None:
        """A range with no offset of the segment yields nothing and reads no row group."""
        raw, _, ref = segment
        source = _RecordingFile(raw)
        assert list(iter_segment(pa.PythonFile(source, mode="r"), ref, start, end, None)) == []
        if start < end:
            assert _groups_read(raw, source.ranges) == set()

    def test_columns(self, segment: tuple[bytes, dict[str, Any], SegmentRef]) -> None:
        """A projection returns the asked columns in file order, plus `_offset`."""
        raw, _, ref = segment
        batches = list(
            iter_segment(pa.BufferReader(raw), ref, FIRST + 10, FIRST + 20, ["s", "_stream"])
        )
        table = pa.Table.from_batches(batches)
        assert table.column_names == ["_stream", "_offset", "s"]
        assert table.column("s").to_pylist() == [f"value-{i}" for i in range(10, 20)]


def _read_whole(path: Path, ref: SegmentRef, start: int, end: int) -> pa.Table:
    """`plan_segment` + `read_groups` of every task, concatenated (what `read()` does)."""
    file, meta, tasks, names = plan_segment(str(path), start, end, None)
    try:
        parts = [read_groups(file, meta, g, names, ref, start, end) for g in tasks]
    finally:
        file.close()
    return pa.concat_tables(parts) if parts else pa.table({"_offset": pa.array([], pa.int64())})


class TestReadGroups:
    """`plan_segment` + `read_groups` (the parallel `read()` path) return exactly an offset
    range, like `iter_segment`."""

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (FIRST + 250, FIRST + 260),
            (FIRST + 199, FIRST + 201),
            (FIRST + 1000, FIRST + 2000),
            (0, FIRST + 1),
            (0, 1 << 62),
            (0, FIRST),
        ],
    )
    def test_range(
        self,
        segment: tuple[bytes, dict[str, Any], SegmentRef],
        tmp_path: Path,
        start: int,
        end: int,
    ) -> None:
        raw, _, ref = segment
        path = tmp_path / "seg.parquet"
        path.write_bytes(raw)
        table = _read_whole(path, ref, start, end)
        lo, hi = max(start, FIRST), min(end, FIRST + ROWS)
        assert table.column("_offset").to_pylist() == list(range(lo, hi))
        if hi > lo:
            expected = _head_table(FIRST, ROWS).slice(lo - FIRST, hi - lo)
            assert table.drop_columns(["_stream"]).equals(expected)

    def test_tasks_cover_only_needed_groups(
        self, segment: tuple[bytes, dict[str, Any], SegmentRef], tmp_path: Path
    ) -> None:
        raw, _, _ = segment
        path = tmp_path / "seg.parquet"
        path.write_bytes(raw)
        file, _, tasks, _ = plan_segment(str(path), FIRST + 250, FIRST + 560, None)
        file.close()
        assert [g for t in tasks for g in t] == [2, 3, 4, 5]
        assert all(len(t) <= GROUPS_PER_TASK for t in tasks)

    def test_gaps_are_filtered(self, tmp_path: Path) -> None:
        """Offsets that are not consecutive (not written by this library) are filtered, not
        sliced by position."""
        head = _head_table(0, 20)
        gapped = head.set_column(0, "_offset", pa.array(range(0, 40, 2), pa.int64()))
        data, meta = encode_segment(gapped, "x", row_group_size=8)
        ref = SegmentRef(path="streams/x/segments/g.parquet", **meta)
        path = tmp_path / "g.parquet"
        path.write_bytes(bytes(data))
        table = _read_whole(path, ref, 5, 21)
        assert table.column("_offset").to_pylist() == [6, 8, 10, 12, 14, 16, 18, 20]

    def test_open_file_survives_removal(
        self, segment: tuple[bytes, dict[str, Any], SegmentRef], tmp_path: Path
    ) -> None:
        """A planned segment stays readable if its path is removed before it is decoded (a
        cache eviction during a read)."""
        raw, _, ref = segment
        path = tmp_path / "seg.parquet"
        path.write_bytes(raw)
        file, meta, tasks, names = plan_segment(str(path), 0, 1 << 62, None)
        path.unlink()
        try:
            rows = sum(read_groups(file, meta, g, names, ref, 0, 1 << 62).num_rows for g in tasks)
        finally:
            file.close()
        assert rows == ROWS
