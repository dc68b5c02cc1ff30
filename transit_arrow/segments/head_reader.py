"""Following head files as they grow: read only the frames written since the last look.

A head file (`segments.head`, `docs/format.md` "Heads") is appended one frame per group
commit, each frame closed by a trailer holding its checksum. `read_heads` loads every head file
from its first byte, which a reader that looks after every append (a live tail in another
process) would do once per append: quadratic in the head's length. A `HeadReader` keeps, per
file, the byte where its last verified frame ends and the batches decoded so far; a refresh
reads the bytes after that position only, and accepts a frame only once its bytes hash to the
value its trailer records (nothing unverified is served). An incomplete frame at the end (being
written) is left for the next refresh; a frame that fails while a later frame is complete is
damage, which the full reader (`load_head`) confirms and names.

A refresh opens the file by name, reads, and checks that the name still leads to the same file
afterwards: a sealed head's file is emptied and renamed to be the next head's (see
`Head.recycle`), so bytes read from a file that changed names meanwhile may be another head's
and are dropped (the next refresh reads the new file from its start).

`HeadsReader` follows a stream's heads folder; `chain` applies the rule `chain_heads` applies
(the heads after the committed end, each continuing the previous, none of a fenced writer), and
returns only the batches from a given offset on.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import pyarrow as pa

from ..record import head_schema
from .head import (
    FRAME_MARKER,
    HeadBatches,
    HeadFile,
    chain_links,
    frame_matches,
    frame_trailer,
    head_header,
    list_head_files,
    load_head,
    read_head,
)

__all__ = ["HeadReader", "HeadsReader", "chain"]

_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError, ValueError, IndexError)


def _has_dictionary(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return True
    return any(_has_dictionary(kind.field(i).type) for i in range(kind.num_fields))


class HeadReader:
    """One head file, read incrementally (see the module docstring).

    Attributes (valid once `ready`): `start_offset`, `epoch`, `generation`, `user_schema`,
    `records` (in the verified frames), `status` (`ok`, or `damaged` with `detail`).
    """

    def __init__(self, path: Path, epoch: int | None) -> None:
        self.path = path
        self.epoch = epoch
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self._identity = identity
        self._pos = 0  # the byte after the last verified frame
        self._header = b""  # the schema message (to decode frames with dictionaries)
        self._schema: pa.Schema | None = None  # the file's schema, with its metadata
        self._plain: pa.Schema | None = None  # the head schema batches are served with
        self._dictionaries = False
        self._checked_at = -1  # the file size at the last check for damage
        self.ready = False
        self.start_offset = 0
        self.generation = 0
        self.user_schema = pa.schema([])
        self.batches: list[pa.RecordBatch] = []
        self._ends: list[int] = []  # the offset after each batch
        self.records = 0
        self.status = "ok"
        self.detail = ""

    @classmethod
    def of_file(cls, file: HeadFile) -> HeadReader:
        """A reader holding what a fully loaded head file holds (format 1 heads)."""
        reader = cls(file.path, file.epoch)
        reader.ready = True
        reader.start_offset, reader.generation = file.start_offset, file.generation
        reader.user_schema = file.user_schema
        reader.status, reader.detail = file.status, file.detail
        for batch in file.batches:
            reader._add(batch)
        return reader

    @property
    def end_offset(self) -> int:
        """One past the last record of the verified frames."""
        return self.start_offset + self.records

    def _add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.records += batch.num_rows
        self._ends.append(self.start_offset + self.records)

    def batches_from(self, offset: int) -> tuple[int, list[pa.RecordBatch]]:
        """The batches holding the records from `offset` on, and the offset of the first one
        (at most `offset`)."""
        if offset <= self.start_offset:
            return self.start_offset, list(self.batches)
        i = bisect.bisect_right(self._ends, offset)
        return (self._ends[i - 1] if i else self.start_offset), self.batches[i:]

    # --- refreshing -----------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read what was appended since the last refresh; False when the file is gone (or
        was renamed meanwhile: its bytes are then dropped)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._identity or stat.st_size < self._pos:
                self._reset(identity)  # another file, or one cut back: read it anew
            data = os.pread(fd, stat.st_size - self._pos, self._pos) if stat.st_size else b""
        finally:
            os.close(fd)
        try:
            now = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            self._reset(None)
            return False
        if (now.st_dev, now.st_ino) != self._identity:
            self._reset(None)  # renamed away while we read: what we read may be another head's
            return False
        if data and self.status == "ok":
            self._parse(data)
        return True

    def _parse(self, data: bytes) -> None:
        """Take the complete, verified frames at the start of `data` (the bytes from `_pos`)."""
        base = self._pos
        view = memoryview(data)
        source = pa.BufferReader(pa.py_buffer(data))
        frame_start = 0  # relative to `data`
        messages: list[tuple[int, int, pa.ipc.Message]] = []
        size = len(data)
        while frame_start < size:
            at = source.tell()
            if at >= size:
                break
            try:
                message = pa.ipc.read_message(source)
            except _READ_ERRORS:
                break
            end = source.tell()
            value = frame_trailer(message)
            if value is False:
                messages.append((at, end, message))
                continue
            if value is True:
                break
            assert not isinstance(value, bool)
            start, length, digest, trailer = value
            start -= base
            data_end = start + length
            if start != frame_start or data_end > at or data_end + trailer != end:
                break
            own = [m for m in messages if m[1] <= data_end]
            if data_end != frame_start and (not own or own[-1][1] != data_end):
                break
            if not frame_matches(view[start:data_end], digest):
                break
            if not self._take(data, own):
                break
            frame_start = end
            messages = []
        self._pos = base + frame_start
        if frame_start < size and data.find(FRAME_MARKER, frame_start) >= 0:
            self._check_damage(base + size)

    def _take(self, data: bytes, messages: list[tuple[int, int, pa.ipc.Message]]) -> bool:
        """Decode one verified frame's messages (the header frame's schema first)."""
        try:
            if not self.ready:
                if len(messages) != 1 or messages[0][2].type != "schema":
                    raise ValueError("the first frame holds no schema")
                schema = pa.ipc.read_schema(messages[0][2])
                user, info = head_header(schema)
                self._header = data[messages[0][0] : messages[0][1]]
                self._schema, self._plain, self.user_schema = schema, head_schema(user), user
                self._dictionaries = any(_has_dictionary(f.type) for f in schema)
                self.start_offset = int(info.get("start_offset", 0))
                self.generation = int(info.get("generation", 0))
                self.ready = True
                return True
            if not messages:
                return True
            assert self._schema is not None and self._plain is not None
            if self._dictionaries:
                blob = self._header + data[messages[0][0] : messages[-1][1]]
                batches = pa.ipc.open_stream(blob).read_all().to_batches()
            else:
                batches = [pa.ipc.read_record_batch(m, self._schema) for _, _, m in messages]
        except (*_READ_ERRORS, KeyError, TypeError):
            return False
        plain = self._plain
        for batch in batches:
            same = batch.schema.equals(plain)
            self._add(batch if same else pa.RecordBatch.from_arrays(batch.columns, schema=plain))
        return True

    def _check_damage(self, size: int) -> None:
        """A frame does not verify and a trailer follows it: ask the full reader whether a
        complete, valid frame follows (damage) or the end is being written (a torn tail)."""
        if size == self._checked_at:
            return
        self._checked_at = size
        try:
            full = load_head(self.path)
        except FileNotFoundError:
            return
        if full.status == "damaged" and full.valid_bytes <= self._pos:
            self.status, self.detail = "damaged", full.detail


class HeadsReader:
    """The heads of one stream's heads folder, each read incrementally."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._readers: dict[Path, HeadReader] = {}

    def refresh(self) -> list[HeadReader]:
        """Every head file of the folder that holds a header, oldest first (damaged ones
        included, see `status`); files gone meanwhile are forgotten."""
        out: list[HeadReader] = []
        readers: dict[Path, HeadReader] = {}
        for _, epoch, path in list_head_files(self.folder):
            if epoch is None:  # format 1: a marker counts the records; read it whole
                file = read_head(path, None)
                if file is not None:
                    out.append(HeadReader.of_file(file))
                continue
            reader = self._readers.get(path) or HeadReader(path, epoch)
            if reader.refresh():
                readers[path] = reader
                if reader.ready:
                    out.append(reader)
        self._readers = readers
        return out


def chain(readers: list[HeadReader], next_offset: int, fenced: int, position: int) -> HeadBatches:
    """The unsealed heads a reader shows after the committed `next_offset` (the rule of
    `chain_heads`: from there, each head starts where the previous one ends, none is owned by
    a writer epoch <= `fenced`, and of heads starting at one offset the newest owner's), with
    only the batches that hold records from `position` on.

    Raises:
        IntegrityError: a head of the chain is damaged (naming the file).
    """
    out: HeadBatches = []
    for head in chain_links(readers, next_offset, fenced):
        if head.end_offset <= position:
            continue
        start, batches = head.batches_from(position)
        out.append((start, head.user_schema, batches))
    return out
