"""Heads: the unsealed tail of a stream, as Arrow IPC stream files with a commit marker.

Each head lives in `<local>/streams/<enc>/heads/<start_offset:020d>.arrow` (the IPC stream,
appended per batch) beside `<start_offset:020d>.json` (the marker: start offset, records,
bytes, generation, schema). The marker is created atomically (temp + fsync + rename) and then
updated in place with one `pwrite` + `fdatasync`, always *after* the IPC bytes it counts were
fdatasync'd, so it only ever counts durable, whole batches; recovery truncates anything past it.
If an in-place update were torn, every batch in the file is already durable (the writer holds
the sync lock through both syncs), so recovery then keeps exactly the complete batches.

Per-record `append(dict)` calls land in a row buffer (Python lists, one per column) that is
turned into one Arrow batch when the head is read, synced or sealed.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..commit import canonical
from ..errors import IntegrityError
from ..record import HEADERS_TYPE, TIMESTAMP_TYPE, head_schema, schema_from_json, schema_to_json
from ..storage.local import fsync_dir, write_file_atomic

__all__ = ["Head", "HeadBatches", "RecoveredHead", "recover_heads"]

#: Unsealed heads, oldest first: (start offset, user schema, batches).
HeadBatches = list[tuple[int, pa.Schema, list[pa.RecordBatch]]]


@dataclass
class _Marker:
    start_offset: int
    records: int
    bytes: int  # the marker's field name is fixed by DESIGN §3
    generation: int
    schema: str

    def dump(self) -> builtins.bytes:
        return canonical(self.__dict__)


class Head:
    """One head: its batches in memory, and (once a `local` append asks) the same on disk.

    Not thread-safe: the stream's writer serialises calls (see `stream._Writer`).
    """

    def __init__(self, folder: Path, start_offset: int, user: pa.Schema, generation: int) -> None:
        self.folder = folder
        self.start_offset = start_offset
        self.user_schema = user
        self.schema = head_schema(user)
        self.generation = generation
        self.batches: list[pa.RecordBatch] = []
        self.records = 0
        self.nbytes = 0
        self.created = time.monotonic()
        self.written_batches = 0
        self.written_records = 0
        self.durable_records = 0
        self.file_bytes = 0
        self._sink: pa.OSFile | None = None
        self._ipc: pa.ipc.RecordBatchStreamWriter | None = None
        self._marker_fd: int | None = None
        self._marker_size = 0
        self._schema_hex: str | None = None
        self.rows: list[tuple[Any, ...]] = []
        self.row_stamps: list[int] = []

    @property
    def next_offset(self) -> int:
        return self.start_offset + self.records

    @property
    def arrow_path(self) -> Path:
        return self.folder / f"{self.start_offset:020d}.arrow"

    @property
    def marker_path(self) -> Path:
        return self.folder / f"{self.start_offset:020d}.json"

    def add(self, batch: pa.RecordBatch) -> None:
        self.materialize()
        self.batches.append(batch)
        self.records += batch.num_rows
        self.nbytes += batch.nbytes

    def add_row(self, values: tuple[Any, ...], stamp_us: int, nbytes: int) -> None:
        """Buffer one record whose values were checked against the user schema's types."""
        self.rows.append(values)
        self.row_stamps.append(stamp_us)
        self.records += 1
        self.nbytes += nbytes

    def materialize(self) -> None:
        """Turn buffered rows into one Arrow batch at the end of `batches`."""
        n = len(self.row_stamps)
        if not n:
            return
        start = self.next_offset - n
        arrays = [
            pa.array(np.arange(start, start + n, dtype=np.int64)),
            pa.array(self.row_stamps, TIMESTAMP_TYPE),
            pa.nulls(n, HEADERS_TYPE),
            *(
                pa.array(values, field.type)
                for values, field in zip(
                    zip(*self.rows, strict=True), self.user_schema, strict=True
                )
            ),
        ]
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows = []
        self.row_stamps = []

    def all_batches(self) -> list[pa.RecordBatch]:
        """Every record of the head as batches (materializing buffered rows)."""
        self.materialize()
        return list(self.batches)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.all_batches(), schema=self.schema)

    def write_pending(self) -> tuple[int, int, int] | None:
        """Write unwritten batches to the IPC file (no fsync).

        Returns `(fd, records, bytes)` to pass to `make_durable`, or None if nothing is new.
        """
        self.materialize()
        if self.written_batches == len(self.batches) and self.durable_records == self.records:
            return None
        if self._sink is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(self.arrow_path), mode="wb")
            fsync_dir(self.folder)
            # The IPC writer writes straight from the batches' buffers: no extra copy.
            self._ipc = pa.ipc.new_stream(self._sink, self.schema)
        assert self._ipc is not None
        for batch in self.batches[self.written_batches :]:
            self._ipc.write_batch(batch)
            self.written_records += batch.num_rows
        self.written_batches = len(self.batches)
        self.file_bytes = self._sink.tell()
        return self._sink.fileno(), self.written_records, self.file_bytes

    def make_durable(self, fd: int, records: int, nbytes: int) -> None:
        """fdatasync the IPC bytes, then durably replace the marker to count them."""
        os.fdatasync(fd)
        if self._schema_hex is None:
            self._schema_hex = schema_to_json(self.user_schema)
        marker = _Marker(
            self.start_offset, records, nbytes, self.generation, self._schema_hex
        ).dump()
        if self._marker_fd is None:
            write_file_atomic(self.marker_path, marker)
            self._marker_fd = os.open(self.marker_path, os.O_WRONLY)
            self._marker_size = len(marker)
        else:
            # Pad with JSON whitespace so a shorter marker leaves no stale bytes behind.
            self._marker_size = max(self._marker_size, len(marker))
            os.pwrite(self._marker_fd, marker.ljust(self._marker_size), 0)
            os.fdatasync(self._marker_fd)
        self.durable_records = max(self.durable_records, records)

    def close_file(self) -> None:
        # The IPC writer is dropped, not closed: closing would append an end-of-stream marker
        # that no head marker counts.
        if self._sink is not None:
            self._sink.close()
        if self._marker_fd is not None:
            os.close(self._marker_fd)
        self._sink = self._ipc = None
        self._marker_fd = None

    def discard_files(self) -> None:
        """Remove the head's files (after its records are committed in a segment)."""
        self.close_file()
        for path in (self.marker_path, self.arrow_path):
            path.unlink(missing_ok=True)


@dataclass
class RecoveredHead:
    """A head found on disk: its durable records and where they came from."""

    start_offset: int
    generation: int
    user_schema: pa.Schema
    table: pa.Table
    arrow_path: Path
    marker_path: Path


def _complete_prefix(arrow_path: Path) -> tuple[pa.Schema, int, int]:
    """Schema, record count and byte length of the complete IPC messages at the file's start."""
    data = arrow_path.read_bytes()
    source = pa.BufferReader(data)
    try:
        reader = pa.ipc.open_stream(source)
    except (OSError, pa.ArrowInvalid):
        return pa.schema([]), 0, 0
    good, records = source.tell(), 0
    while True:
        try:
            batch = reader.read_next_batch()
        except (StopIteration, OSError, pa.ArrowInvalid):
            break
        records += batch.num_rows
        good = source.tell()
    user = pa.schema(
        [f for f in reader.schema if f.name not in ("_offset", "_timestamp", "_headers")]
    )
    return user, records, good


def _read_marker(arrow_path: Path, marker_path: Path) -> _Marker | None:
    try:
        raw = marker_path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _Marker(**json.loads(raw))
    except (ValueError, TypeError):
        # A torn in-place update: every complete batch in the file was durable before it began.
        user, records, good = _complete_prefix(arrow_path)
        start = int(arrow_path.stem)
        return _Marker(start, records, good, 0, schema_to_json(user))


def _load(arrow_path: Path, marker_path: Path, truncate: bool) -> RecoveredHead | None:
    marker = _read_marker(arrow_path, marker_path)
    if marker is None:
        return None
    user = schema_from_json(marker.schema)
    if not arrow_path.exists():
        if marker.records == 0:
            return None
        raise IntegrityError(
            f"head marker {marker_path} counts {marker.records} records but {arrow_path} is missing"
        )
    size = arrow_path.stat().st_size
    if size < marker.bytes:
        raise IntegrityError(
            f"head {arrow_path} has {size} bytes but its marker counts {marker.bytes}"
        )
    if size > marker.bytes and truncate:
        # Torn or unacknowledged tail: never expose it.
        os.truncate(arrow_path, marker.bytes)
        with open(arrow_path, "rb+") as f:
            os.fsync(f.fileno())
    with open(arrow_path, "rb") as f:
        data = f.read(marker.bytes)
    reader = pa.ipc.open_stream(data)
    table = reader.read_all()
    if table.num_rows != marker.records:
        raise IntegrityError(
            f"head {arrow_path} holds {table.num_rows} records but its marker counts "
            f"{marker.records}"
        )
    return RecoveredHead(
        marker.start_offset, marker.generation, user, table, arrow_path, marker_path
    )


def recover_heads(folder: Path, *, truncate: bool) -> list[RecoveredHead]:
    """Load every head in `folder`, oldest first, keeping exactly what the markers count.

    With `truncate=True` (the writer's recovery) torn tails are cut off the files and files
    with no marker (nothing acknowledged) are removed; without it (a reader) nothing changes.
    """
    if not folder.is_dir():
        return []
    out = []
    stems = {p.stem for p in folder.glob("*.arrow")} | {p.stem for p in folder.glob("*.json")}
    for stem in sorted(stems):
        arrow_path = folder / f"{stem}.arrow"
        marker_path = folder / f"{stem}.json"
        head = _load(arrow_path, marker_path, truncate)
        if head is None:
            if truncate:
                arrow_path.unlink(missing_ok=True)
                marker_path.unlink(missing_ok=True)
            continue
        out.append(head)
    return out
