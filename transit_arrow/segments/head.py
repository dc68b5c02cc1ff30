"""Heads: the unsealed tail of a stream, as Arrow IPC stream files with a commit marker.

Each head lives in `<local>/streams/<enc>/heads/<start_offset:020d>.arrow` (the IPC stream,
appended per batch) beside `<start_offset:020d>.json` (the marker: start offset, records,
bytes, generation, schema). The marker is replaced atomically after the IPC bytes are
fdatasync'd, so it only ever counts durable, whole batches; recovery truncates anything past it.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..commit import canonical
from ..errors import IntegrityError
from ..record import head_schema, schema_from_json, schema_to_json
from ..storage.local import fsync_dir, write_file_atomic

__all__ = ["Head", "RecoveredHead", "recover_heads"]


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
        self._fd: int | None = None

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
        self.batches.append(batch)
        self.records += batch.num_rows
        self.nbytes += batch.nbytes

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=self.schema)

    def write_pending(self) -> tuple[int, int, int] | None:
        """Write unwritten batches to the IPC file (no fsync).

        Returns `(fd, records, bytes)` to pass to `make_durable`, or None if nothing is new.
        """
        if self.written_batches == len(self.batches) and self.durable_records == self.records:
            return None
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.arrow_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fsync_dir(self.folder)
            self._write(self.schema.serialize())
        for batch in self.batches[self.written_batches :]:
            self._write(batch.serialize())
            self.written_records += batch.num_rows
        self.written_batches = len(self.batches)
        return self._fd, self.written_records, self.file_bytes

    def _write(self, buf: pa.Buffer) -> None:
        assert self._fd is not None
        view = memoryview(buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.file_bytes += n

    def make_durable(self, fd: int, records: int, nbytes: int) -> None:
        """fdatasync the IPC bytes, then durably replace the marker to count them."""
        os.fdatasync(fd)
        marker = _Marker(
            self.start_offset, records, nbytes, self.generation, schema_to_json(self.user_schema)
        )
        write_file_atomic(self.marker_path, marker.dump())
        self.durable_records = max(self.durable_records, records)

    def close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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


def _load(arrow_path: Path, marker_path: Path, truncate: bool) -> RecoveredHead | None:
    try:
        marker = _Marker(**json.loads(marker_path.read_bytes()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"head marker {marker_path} is unreadable: {e}") from e
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
    for arrow_path in sorted(folder.glob("*.arrow")):
        marker_path = arrow_path.with_suffix(".json")
        head = _load(arrow_path, marker_path, truncate)
        if head is None:
            if truncate:
                arrow_path.unlink(missing_ok=True)
                marker_path.unlink(missing_ok=True)
            continue
        out.append(head)
    return out
