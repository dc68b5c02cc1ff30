"""Sealed segments: immutable Parquet files named by offsets and BLAKE3 (DESIGN §3-4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..layout import segment_path
from ..manifest import SegmentRef
from .verified import hash_bytes

__all__ = [
    "GROUPS_PER_TASK",
    "ROW_GROUP_SIZE",
    "encode_segment",
    "iter_segment",
    "plan_segment",
    "read_groups",
    "segment_path",
]

#: Rows per Parquet row group: small enough that an `_offset` range read skips most of a
#: segment, large enough to keep zstd effective.
ROW_GROUP_SIZE = 65536
_DELTA_COLUMNS = ("_offset", "_timestamp")


def encode_segment(
    table: pa.Table, stream: str, row_group_size: int = ROW_GROUP_SIZE
) -> tuple[memoryview, dict[str, Any]]:
    """Write a head table (`_offset`, `_timestamp`, `_headers`, user columns) as Parquet.

    Returns the file bytes and the `add_segment` fields other than `path`.
    """
    n = table.num_rows
    stream_col = pa.DictionaryArray.from_arrays(
        np.zeros(n, dtype=np.int32), pa.array([stream], pa.string())
    )
    full = table.add_column(0, pa.field("_stream", stream_col.type, nullable=False), stream_col)
    sink = pa.BufferOutputStream()
    pq.write_table(
        full,
        sink,
        compression="zstd",
        row_group_size=row_group_size,
        write_statistics=True,
        store_schema=True,
        # `_offset` and `_timestamp` rise steadily: delta encoding stores them in a few bits a
        # value, where trying a dictionary first costs time and bytes (about a tenth of a seal).
        use_dictionary=[c for c in full.column_names if c not in _DELTA_COLUMNS],  # type: ignore[arg-type]
        column_encoding=dict.fromkeys(_DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    )
    data = sink.getvalue()
    offsets = table.column("_offset")
    ts = table.column("_timestamp").cast(pa.int64())
    first, last = pc.min_max(offsets).values()
    tmin, tmax = pc.min_max(ts).values()
    meta = {
        "first_offset": first.as_py(),
        "last_offset": last.as_py(),
        "records": n,
        "bytes": data.size,
        "blake3": hash_bytes(memoryview(data)),
        "min_timestamp": tmin.as_py(),
        "max_timestamp": tmax.as_py(),
    }
    return memoryview(data), meta


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
) -> Iterator[pa.RecordBatch]:
    """Yield the segment's rows with `start <= _offset < end`, skipping row groups outside.

    Pages are read as the batches need them (no pre-buffering of every row group the range
    covers), so the first batch of a large segment arrives after one row group's work."""
    pf = pq.ParquetFile(source, memory_map=isinstance(source, str), pre_buffer=False)
    groups, names = _plan(pf, start, end, columns)
    if not groups:
        return
    whole = start <= seg.first_offset and end > seg.last_offset
    for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=names):
        if not whole:
            off = batch.column("_offset")
            mask = pc.and_(pc.greater_equal(off, start), pc.less(off, end))  # type: ignore[call-overload]
            batch = batch.filter(mask)  # type: ignore[arg-type]
            if batch.num_rows == 0:
                continue
        yield batch


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
    file = pa.memory_map(source)
    try:
        pf = pq.ParquetFile(file)
        groups, names = _plan(pf, start, end, columns)
    except BaseException:
        file.close()
        raise
    tasks = [groups[i : i + GROUPS_PER_TASK] for i in range(0, len(groups), GROUPS_PER_TASK)]
    return file, pf.metadata, tasks, names


def read_groups(
    source: pa.NativeFile,
    metadata: pq.FileMetaData,
    groups: list[int],
    names: list[str] | None,
    seg: SegmentRef,
    start: int,
    end: int,
) -> pa.Table:
    """Rows `start <= _offset < end` of the given row groups of a segment (see
    `plan_segment`). A range inside the file is a zero-copy slice when the offsets read are
    consecutive (as a segment's are), a filter otherwise."""
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
