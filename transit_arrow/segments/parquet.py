"""Sealed segments: immutable Parquet files named by offsets and BLAKE3 (DESIGN §3-4)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..layout import segment_path
from ..manifest import SegmentRef
from ..record import HEADERS_TYPE, empty_table
from . import arena, verified
from .decoded import DecodedCache
from .verified import hash_bytes

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "GROUPS_PER_TASK",
    "ROW_GROUP_SIZE",
    "SMALL_SEGMENT_BYTES",
    "codec_of",
    "encode_segment",
    "iter_segment",
    "open_segment",
    "plan_segment",
    "read_groups",
    "segment_path",
    "with_headers",
    "with_headers_schema",
]

#: Rows per Parquet row group: small enough that an `_offset` range read skips most of a
#: segment, large enough that encoding and scanning amortise their per-group work.
ROW_GROUP_SIZE = 65536
#: The Parquet codec of new segments (`open(..., segment_compression=)`); readers need not
#: know it (Parquet names each column chunk's codec), so segments of any codec mix in a log.
#: "auto": zstd (half snappy's bytes on text for about 1.25x its encoding time), except for a
#: small segment, which is written with snappy (docs/format.md, "Segment encoding").
DEFAULT_COMPRESSION = "auto"
#: The codecs `segment_compression` accepts.
COMPRESSIONS = ("auto", "snappy", "zstd", "lz4_raw", "none")
#: With "auto", a segment holding less than this many bytes of Arrow data is written with
#: snappy: pyarrow makes a new zstd context for every column chunk it decompresses, which for
#: a segment of 1,000 records cost as much as the rest of its decoding (a read of 10 such
#: segments, or DuckDB's scan of 500, took about 1.3x and 1.15x as long as with snappy).
SMALL_SEGMENT_BYTES = 1 << 20
_DELTA_COLUMNS = ("_offset", "_timestamp")
#: At most this many rows, and values of at most `_SAMPLE_BYTES`, are sampled to decide
#: whether a column gets a dictionary; that many bytes of values to decide whether it is
#: worth compressing (see `_encoding`).
_DICT_SAMPLE = 4096
_SAMPLE_BYTES = 256 * 1024
#: At most this many fixed-width values are sampled to decide on a dictionary (counting
#: distinct values costs more than linear time beyond it).
_FIXED_SAMPLE = 8192


_BYTES_LIKE = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)
_FIXED_WIDTH = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_decimal,
    pa.types.is_temporal,
    pa.types.is_fixed_size_binary,
)


def _is(kind: pa.DataType, tests: tuple[Callable[[pa.DataType], bool], ...]) -> bool:
    return any(test(kind) for test in tests)


def _value_bytes(
    column: pa.ChunkedArray[Any], kind: pa.DataType
) -> tuple[pa.Buffer, int, int] | None:
    """The values buffer of a string or binary column's first chunk and where its values
    start and end in it (None if empty)."""
    if column.num_chunks == 0 or len(column.chunk(0)) == 0:
        return None
    chunk: Any = column.chunk(0)
    _, offsets_buffer, values = chunk.buffers()
    if offsets_buffer is None or values is None:
        return None
    wide = pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)
    offsets = np.frombuffer(offsets_buffer, np.int64 if wide else np.int32)
    return values, int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])


def _encoding(
    table: pa.Table, compression: str, row_group_size: int
) -> tuple[list[str], str | dict[str, str]]:
    """The columns to dictionary-encode and the codec of each column.

    Dictionaries: every column but `_offset`/`_timestamp`, except the string, binary and
    fixed-width (numbers, times) columns whose first values are mostly distinct (ids,
    measurements, payloads, blobs): Parquet would build a dictionary of every value of each
    row group for those (a row group of 65,536 numbers never outgrows the dictionary page
    that would make it give up), which costs time and bytes. The sample is `_FIXED_SAMPLE`
    fixed-width values, or `_DICT_SAMPLE` strings of `_SAMPLE_BYTES` at most.

    Codecs: `compression`, except for string or binary columns whose first `_SAMPLE_BYTES`
    of values it cannot shrink by a twentieth (random blobs, already compressed data), and
    fixed-width columns without a dictionary whose first `_SAMPLE_BYTES` it cannot shrink by
    an eighth (random scores, hashes: zstd saved 6% of such doubles, and decoding them was a
    quarter of DuckDB's scan of a column of them and a float group key): those are stored
    uncompressed, which writes and reads them at memory speed.

    Both decisions depend on the values only, so the same head encodes to the same bytes.
    """
    dictionary, plain = [], []
    for field in table.schema:
        if field.name in _DELTA_COLUMNS:
            continue
        kind, column = field.type, table.column(field.name)
        found = _value_bytes(column, kind) if _is(kind, _BYTES_LIKE) else None
        if found is not None:
            values, start, end = found
            average = max(1, (end - start) // len(column.chunk(0)))
            rows = min(_DICT_SAMPLE, max(64, _SAMPLE_BYTES // average))
            if compression != "none" and end - start >= _SAMPLE_BYTES:
                chunk = values.slice(start, _SAMPLE_BYTES)
                packed = pa.compress(chunk, codec=compression)  # type: ignore[call-overload]
                if packed.size * 20 >= chunk.size * 19:
                    plain.append(field.name)
        elif _is(kind, _FIXED_WIDTH):
            rows = min(row_group_size, _FIXED_SAMPLE)
        else:
            rows = 0  # nested, boolean, dictionary, null: Parquet's default
        sample = column.slice(0, rows)
        if len(sample) <= 16 or pc.count_distinct(sample).as_py() * 2 <= len(sample):
            dictionary.append(field.name)
        elif _is(kind, _FIXED_WIDTH) and _shrinks_little(column, compression):
            plain.append(field.name)
    if not plain:
        return dictionary, compression
    # A codec per column is keyed by Parquet leaf column (`_headers.key_value.key`, ...);
    # a leaf left out would be stored uncompressed.
    sink = io.BytesIO()
    pq.write_table(empty_table(table.schema), sink, store_schema=False)
    schema = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    leaves = [schema.column(i).path for i in range(len(schema))]
    codecs = {leaf: "none" if leaf.split(".", 1)[0] in plain else compression for leaf in leaves}
    return dictionary, codecs


def _shrinks_little(column: pa.ChunkedArray[Any], codec: str) -> bool:
    """Whether `codec` cannot shrink the first `_SAMPLE_BYTES` of a fixed-width column's
    values by an eighth (random measurements such as scores; False with fewer bytes)."""
    if column.num_chunks == 0:
        return False
    chunk: Any = column.chunk(0)
    width = chunk.type.byte_width if chunk.type.bit_width % 8 == 0 else 0
    values = chunk.buffers()[1]
    if codec == "none" or width == 0 or values is None or len(chunk) * width < _SAMPLE_BYTES:
        return False
    sample = values.slice(chunk.offset * width, _SAMPLE_BYTES)
    packed = pa.compress(sample, codec=codec)  # type: ignore[call-overload]
    return bool(packed.size * 8 >= sample.size * 7)


def codec_of(table: pa.Table, compression: str) -> str:
    """The codec a segment of `table` is written with for `segment_compression=compression`:
    "auto" is zstd, or snappy for less than `SMALL_SEGMENT_BYTES` of data."""
    if compression != "auto":
        return compression
    return "snappy" if table.nbytes < SMALL_SEGMENT_BYTES else "zstd"


def encode_segment(
    table: pa.Table,
    stream: str,
    row_group_size: int = ROW_GROUP_SIZE,
    compression: str = DEFAULT_COMPRESSION,
    *,
    pooled: bool = True,
) -> tuple[bytes | bytearray, dict[str, Any]]:
    """Write a head table (`_offset`, `_timestamp`, `_headers`, user columns) as Parquet.

    A `_headers` column that holds no header at all (every value null) is left out of the file:
    every reader reads a missing column as nulls (`with_headers` gives a raw table it back).

    Returns the file bytes and the `add_segment` fields other than `path`. Large segments come
    as a `bytearray` lent by `arena.pool` (memory already mapped by an earlier encode): do not
    change it, and drop it once stored; the pool lends it again only after that. `pooled=False`
    always returns `bytes`: for stores that keep a copy of what they are given (the memory
    store, `ObjectStore.copies_puts`), where a pooled buffer would only add a copy.
    """
    n = table.num_rows
    if "_headers" in table.column_names and table.column("_headers").null_count == n:
        table = table.drop_columns(["_headers"])
    stream_col = pa.DictionaryArray.from_arrays(
        np.zeros(n, dtype=np.int32), pa.array([stream], pa.string())
    )
    full = table.add_column(0, pa.field("_stream", stream_col.type, nullable=False), stream_col)
    dictionary, codecs = _encoding(full, codec_of(table, compression), row_group_size)
    options: dict[str, Any] = {
        "compression": codecs,
        "row_group_size": row_group_size,
        "write_statistics": True,
        "store_schema": True,
        # `_offset` and `_timestamp` rise steadily: delta encoding stores them in a few bits a
        # value, where trying a dictionary first costs time and bytes (about a tenth of a seal).
        "use_dictionary": dictionary,
        "column_encoding": dict.fromkeys(_DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    }
    # A pooled buffer only for segments stored mostly uncompressed (blobs that do not
    # compress, or no codec), whose Parquet is about as large as their Arrow data: a buffer
    # sized for compressible data would be mostly trimmed, then faulted in again to regrow.
    # Parquet is rarely larger than the Arrow data; if it is, the pooled buffer overflows and
    # the segment is encoded again into a growing one.
    bound = full.nbytes + full.nbytes // 8 + (1 << 20)
    data: bytes | bytearray | None = None
    if (
        pooled
        and bound >= arena.ARENA_MIN_BYTES
        and _stored_plain(full, codecs) * 4 >= full.nbytes * 3
    ):
        data = _encode_pooled(full, bound, options)
    if data is None:
        # A Python sink: `getvalue()` hands its bytes over without a copy, and it grows by
        # `realloc`, where an Arrow buffer stream copies on each doubling.
        sink = io.BytesIO()
        pq.write_table(full, sink, **options)
        data = sink.getvalue()
    offsets = table.column("_offset")
    ts = table.column("_timestamp").cast(pa.int64())
    first, last = pc.min_max(offsets).values()
    tmin, tmax = pc.min_max(ts).values()
    meta = {
        "first_offset": first.as_py(),
        "last_offset": last.as_py(),
        "records": n,
        "bytes": len(data),
        "blake3": hash_bytes(data),
        "min_timestamp": tmin.as_py(),
        "max_timestamp": tmax.as_py(),
    }
    return data, meta


def with_headers(table: pa.Table) -> pa.Table:
    """A segment's raw table (as `pq.read_table` gives it) with its `_headers` column: all
    nulls, after `_timestamp`, when the file has none (see `encode_segment`)."""
    if "_headers" in table.column_names:
        return table
    names = table.column_names
    at = names.index("_timestamp") + 1 if "_timestamp" in names else len(names)
    nulls = pa.nulls(table.num_rows, HEADERS_TYPE)
    return table.add_column(at, pa.field("_headers", HEADERS_TYPE), nulls)


def with_headers_schema(schema: pa.Schema) -> pa.Schema:
    """A segment file's schema with its `_headers` field (see `with_headers`)."""
    if "_headers" in schema.names:
        return schema
    at = schema.get_field_index("_timestamp") + 1 if "_timestamp" in schema.names else len(schema)
    return schema.insert(at, pa.field("_headers", HEADERS_TYPE))


def _stored_plain(full: pa.Table, codecs: str | dict[str, str]) -> int:
    """Bytes of Arrow data in the columns of `full` that `codecs` leaves uncompressed."""
    if isinstance(codecs, str):
        return int(full.nbytes) if codecs == "none" else 0
    plain = {leaf.split(".", 1)[0] for leaf, codec in codecs.items() if codec == "none"}
    return sum(int(full.column(name).nbytes) for name in plain if name in full.column_names)


def _encode_pooled(full: pa.Table, bound: int, options: dict[str, Any]) -> bytearray | None:
    """Encode `full` into a buffer of `bound` bytes from `arena.pool`, trimmed to the file's
    size (None if the file is larger than `bound`)."""
    buffer = arena.pool.take(bound)
    view = pa.py_buffer(buffer)
    writer = pa.FixedSizeBufferWriter(view)
    try:
        pq.write_table(full, writer, **options)
        size = writer.tell()
    except OSError:  # "Write out of bounds": the file outgrew `bound`
        size = None
    finally:
        writer.close()
        del writer, view  # the buffer can be trimmed and lent only without views over it
    if size is None:
        arena.pool.give(buffer)
        return None
    del buffer[size:]
    arena.pool.give(buffer)
    return buffer


def _plan(
    pf: pq.ParquetFile, start: int, end: int, columns: list[str] | None
) -> tuple[list[int], list[str] | None]:
    """The row groups of `pf` that may hold offsets in `[start, end)` (by their `_offset`
    statistics) and the file's columns to read for `columns` (None: all)."""
    meta = pf.metadata
    offset_idx = pf.schema_arrow.get_field_index("_offset")
    groups = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(offset_idx).statistics
        if (
            stats is not None and stats.has_min_max and (stats.max < start or stats.min >= end)  # type: ignore[operator]
        ):
            continue
        groups.append(i)
    names = None
    if columns is not None:
        names = [c for c in pf.schema_arrow.names if c in set(columns) | {"_offset"}]
    return groups, names


def iter_segment(
    source: str | pa.NativeFile,
    seg: SegmentRef,
    start: int,
    end: int,
    columns: list[str] | None,
    batch_size: int = ROW_GROUP_SIZE,
    *,
    decoded: DecodedCache | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the segment's rows with `start <= _offset < end`, skipping row groups outside.

    Pages are read as the batches need them (no pre-buffering of every row group the range
    covers), so the first batch of a large segment arrives after one row group's work. With
    `decoded`, row groups are taken from (and kept in) that cache, by the segment's BLAKE3:
    the caller has just verified `source` against `seg.blake3`."""
    pf = pq.ParquetFile(source, memory_map=isinstance(source, str), pre_buffer=False)
    groups, names = _plan(pf, start, end, columns)
    if not groups:
        return
    whole = start <= seg.first_offset and end > seg.last_offset
    if decoded is None:
        read = pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=names)
    else:
        read = _cached_groups(pf, groups, names, seg.blake3, batch_size, decoded)
    for batch in read:
        if not whole:
            off = batch.column("_offset")
            mask = pc.and_(pc.greater_equal(off, start), pc.less(off, end))  # type: ignore[call-overload]
            batch = batch.filter(mask)  # type: ignore[arg-type]
            if batch.num_rows == 0:
                continue
        yield batch


def _cached_groups(
    pf: pq.ParquetFile,
    groups: list[int],
    names: list[str] | None,
    digest: str,
    batch_size: int,
    decoded: DecodedCache,
) -> Iterator[pa.RecordBatch]:
    """The batches of `groups`, from `decoded` or decoded (and kept there) one row group at
    a time, from a file verified to hold `digest`."""
    for group in groups:
        key = decoded.key(digest, group, names)
        batches = decoded.get(key)
        if batches is None:
            reader = pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=names)
            batches = list(reader)
            decoded.put(key, batches)
        yield from batches


#: Row groups `read_groups` decodes in one task: large enough to amortise a task, small
#: enough that one large segment spreads over every core.
GROUPS_PER_TASK = 2


def plan_segment(
    source: str, start: int, end: int, columns: list[str] | None
) -> tuple[pa.MemoryMappedFile, pq.FileMetaData, list[list[int]], list[str] | None]:
    """Open a segment file (memory-mapped: the open file stays readable if the path is
    removed meanwhile, e.g. evicted from the cache) and its footer; return the open file, its
    metadata, the row groups that may hold offsets in `[start, end)` in tasks of
    `GROUPS_PER_TASK` (for `read_groups`), and the file's columns to read for `columns`
    (None: all). The caller closes the file."""
    file, pf, tasks, names = open_segment(source, start, end, columns)
    return file, pf.metadata, tasks, names


def open_segment(
    source: str,
    start: int,
    end: int,
    columns: list[str] | None,
    *,
    whole: bool = False,
    digest: str | None = None,
) -> tuple[pa.MemoryMappedFile, pq.ParquetFile, list[list[int]], list[str] | None]:
    """`plan_segment` returning the opened `ParquetFile` (one thread's reader: `read_groups`
    of its tasks in that thread reuse it) instead of its metadata. `whole`: the caller knows
    that `[start, end)` covers the segment, so with every column every row group is read
    (without looking at their statistics). `digest`: the BLAKE3 the file was just verified
    to hold (`verified.check`): its footer is then parsed once per identity of the file and
    kept in the registry of verified files."""
    file = pa.memory_map(source)
    try:
        footer = None if digest is None else verified.registry.footer(source, digest)
        pf = pq.ParquetFile(file, metadata=footer)
        if footer is None and digest is not None:
            verified.registry.keep_footer(source, digest, pf.metadata)
        if whole and columns is None:
            groups, names = list(range(pf.metadata.num_row_groups)), None
        else:
            groups, names = _plan(pf, start, end, columns)
    except BaseException:
        file.close()
        raise
    tasks = [groups[i : i + GROUPS_PER_TASK] for i in range(0, len(groups), GROUPS_PER_TASK)]
    return file, pf, tasks, names


def read_groups(
    source: pa.NativeFile,
    metadata: pq.FileMetaData | pq.ParquetFile,
    groups: list[int],
    names: list[str] | None,
    seg: SegmentRef,
    start: int,
    end: int,
) -> pa.Table:
    """Rows `start <= _offset < end` of the given row groups of a segment (see
    `plan_segment`; `metadata` may be the `ParquetFile` of `open_segment`, used in the thread
    that opened it). A range inside the file is a zero-copy slice when the offsets read are
    consecutive (as a segment's are), a filter otherwise."""
    if isinstance(metadata, pq.ParquetFile):
        pf = metadata
    else:
        pf = pq.ParquetFile(source, metadata=metadata)
    table = pf.read_row_groups(groups, columns=names, use_threads=False)
    if (start <= seg.first_offset and end > seg.last_offset) or table.num_rows == 0:
        return table
    off = table.column("_offset")
    first, last = off[0].as_py(), off[-1].as_py()
    if last - first + 1 == table.num_rows:
        a = max(0, start - first)
        return table.slice(a, max(0, min(end, last + 1) - first - a))
    mask = pc.and_(pc.greater_equal(off, start), pc.less(off, end))  # type: ignore[call-overload]
    return table.filter(mask)  # type: ignore[arg-type]
