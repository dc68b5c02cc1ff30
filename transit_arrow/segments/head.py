"""Heads: the unsealed tail of a stream, as self-validating Arrow IPC stream files.

A head file (`docs/format.md`, "Heads") is a valid Arrow IPC stream, appended one **frame**
per group commit. A frame is the IPC messages of the batches it holds, followed by a
*trailer*: a zero-row record batch whose custom metadata `transit.frame` records where the
frame's data starts, how long it is and its checksum (XXH3-64; BLAKE3-64 in heads of format 2,
still read). The first frame holds the
schema message, whose metadata `transit.head` names the head (start offset, generation, the
writer's epoch). A group commit writes its frame with one `writev` and makes it durable with
one `fdatasync`: no separate marker, so no second sync.

Recovery keeps every complete frame whose checksum verifies and cuts a torn tail (a frame whose
bytes or trailer stop short: it was never acknowledged, since acks follow the sync). A frame
that fails its checksum while a complete, valid frame follows it is *damage*, never a torn tail:
the file is reported as damaged and the writer sets it aside (`engine.writer`), nothing in it
is sealed, and readers refuse it with `IntegrityError` naming the file.

Files: `<start_offset:020d>-<epoch:020d>.arrow`, where `epoch` is the writer lease epoch of the
writer that owns the head (a writer adopting a dead writer's head renames it to its own epoch,
so a commit's writer epoch tells whether a head was sealed from it). Heads of format 1 (before
this one: `<start_offset:020d>.arrow` counted by a `<start_offset:020d>.json` marker) are still
read and recovered.

Per-record `append(dict)` calls land in a row buffer (Python lists, one per column) that is
turned into one Arrow batch when the head is read, synced or sealed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import blake3
import numpy as np
import pyarrow as pa
import xxhash

from ..commit import canonical, now_rfc3339
from ..errors import IntegrityError
from ..record import HEADERS_TYPE, TIMESTAMP_TYPE, head_schema, schema_from_json
from ..storage.local import fsync_dir, write_file_atomic

__all__ = [
    "HEAD_FORMAT",
    "ChainLink",
    "Head",
    "HeadBatches",
    "HeadFile",
    "RecoveredHead",
    "by_priority",
    "chain_heads",
    "chain_links",
    "continues",
    "fenced_epoch",
    "head_name",
    "list_head_files",
    "list_spare_files",
    "load_head",
    "orphan_records",
    "parse_head_name",
    "parse_spare_name",
    "read_heads",
    "read_set_aside",
    "recover_heads",
    "set_aside",
    "spare_name",
    "update_set_aside",
]

#: Unsealed heads, oldest first: (start offset, user schema, batches).
HeadBatches = list[tuple[int, pa.Schema, list[pa.RecordBatch]]]

HEAD_FORMAT = 3
_HEAD_KEY = b"transit.head"
_FRAME_KEY = b"transit.frame"
# Every trailer value starts with `TAFRAME`, then the checksum's version: `1:` for BLAKE3-64
# (head format 2), `2:` for XXH3-64 (format 3, written now). A digest is kept as
# `<algorithm>:<16 hex digits>`, so that it names how to recompute it.
_PREFIX = b"TAFRAME"
_ALGORITHMS = {b"TAFRAME1:": "blake3", b"TAFRAME2:": "xxh3"}
_MARKERS = {name: marker for marker, name in _ALGORITHMS.items()}
_WRITTEN = "xxh3"  # the checksum of the frames written now
_MARKER = _MARKERS[_WRITTEN]
# The trailer's value: marker, then the start, length and checksum of the frame's data and
# the trailer's own length, in hex: every byte of a frame is accounted for.
_VALUE_LEN = len(_MARKER) + 4 * 16 + 3
_Value = tuple[int, int, str, int]
_PLACEHOLDER = _MARKER + b"X" * (_VALUE_LEN - len(_MARKER))
_NAME = re.compile(r"^(\d{20})(?:-(\d{20}))?\.arrow$")
_SPARE = re.compile(r"^spare-(\d{20})-(\d{6})\.arrow$")
_ORPHAN_SUFFIX = ".orphan.json"
#: How frames are encoded: Arrow's defaults, stated (`new_stream` without options would read two
#: environment variables on every frame, and they could make it write a pre-1.0 format).
_IPC_OPTIONS = pa.ipc.IpcWriteOptions()


def head_name(start_offset: int, epoch: int) -> str:
    """The file name of a head starting at `start_offset`, owned by writer epoch `epoch`."""
    return f"{start_offset:020d}-{epoch:020d}.arrow"


def spare_name(epoch: int, n: int) -> str:
    """The name of writer `epoch`'s `n`-th spare head file: a sealed head's file, emptied,
    renamed to the next head's name when that head first writes (see `Head.recycle`)."""
    return f"spare-{epoch:020d}-{n:06d}.arrow"


def parse_spare_name(name: str) -> int | None:
    """The epoch of a spare head file's name, or None if it is not one."""
    match = _SPARE.match(name)
    return int(match.group(1)) if match else None


def parse_head_name(name: str) -> tuple[int, int | None] | None:
    """`(start_offset, epoch)` of a head file name (epoch None: format 1), or None."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _hasher(algorithm: str) -> Any:
    """A new hasher of a frame checksum (`update`, `hexdigest` of 16 hex digits)."""
    if algorithm == "xxh3":
        return xxhash.xxh3_64()
    return _Blake3_64()


class _Blake3_64:
    """BLAKE3's first 64 bits, as the frames of head format 2 record them."""

    def __init__(self) -> None:
        self.hasher = blake3.blake3()

    def update(self, data: Any) -> None:
        self.hasher.update(data)

    def hexdigest(self) -> str:
        return self.hasher.hexdigest(length=8)


def _digest(parts: Sequence[Any], algorithm: str = _WRITTEN) -> str:
    """The checksum `algorithm` of the concatenated `parts`, as `<algorithm>:<hex>`."""
    hasher = _hasher(algorithm)
    for part in parts:
        hasher.update(part)
    return f"{algorithm}:{hasher.hexdigest()}"


def _check(data: Any, digest: str) -> bool:
    """Whether `data` hashes to `digest` (`<algorithm>:<hex>`, as a trailer value holds it)."""
    return _digest([data], digest.partition(":")[0]) == digest


def _has_dictionary(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return True
    return any(_has_dictionary(kind.field(i).type) for i in range(kind.num_fields))


class FrameCodec:
    """Encodes the frames of one head file (its schema message, batches and trailers)."""

    #: Trailer template and where its value goes, per head schema (the trailer's bytes do not
    #: depend on the head's own metadata).
    _templates: ClassVar[dict[pa.Schema, tuple[bytes, int]]] = {}

    def __init__(self, schema: pa.Schema, info: dict[str, Any]) -> None:
        self.schema = schema.with_metadata({_HEAD_KEY: canonical(info)})
        self.schema_message = self.schema.serialize()
        # `RecordBatch.serialize` leaves dictionaries out: such schemas go through a writer.
        self.dictionaries = any(_has_dictionary(f.type) for f in schema)
        cached = self._templates.get(schema)
        if cached is None:
            empty = pa.RecordBatch.from_arrays(
                [pa.array([], f.type) for f in schema], schema=self.schema
            )
            template = self._stream([empty], {_FRAME_KEY: _PLACEHOLDER})
            cached = self._templates[schema] = (template, template.index(_PLACEHOLDER))
        self.trailer_template, self.value_at = cached

    def _stream(
        self, batches: list[pa.RecordBatch], metadata: dict[bytes, bytes] | None = None
    ) -> bytes:
        """The IPC messages a stream writer emits for `batches`, without the schema message."""
        sink = pa.BufferOutputStream()
        writer = pa.ipc.new_stream(sink, self.schema, options=_IPC_OPTIONS)
        for batch in batches:
            writer.write_batch(batch, custom_metadata=metadata)
        data = sink.getvalue()
        return data.to_pybytes()[self.schema_message.size :]

    def encode(self, batches: list[pa.RecordBatch]) -> list[Any]:
        """The IPC messages of `batches` (buffers, written as they are)."""
        if self.dictionaries:
            return [self._stream(batches)]
        return [b.serialize() for b in batches]

    def trailer(self, start: int, parts: Sequence[Any]) -> bytes:
        """The trailer closing a frame of `parts` that starts at byte `start` of the file."""
        length = sum(len(memoryview(p)) for p in parts)
        return self.trailer_for(start, length, _digest(parts))

    def trailer_for(self, start: int, length: int, digest: str) -> bytes:
        """The trailer closing a frame of `length` bytes of data at byte `start`, whose
        checksum is `digest` (`<algorithm>:<hex>`, of the algorithm frames are written with)."""
        t = self.trailer_template
        algorithm, _, hexdigest = digest.partition(":")
        assert algorithm == _WRITTEN, digest
        value = b"%s%016x:%016x:%s:%016x" % (_MARKER, start, length, hexdigest.encode(), len(t))
        return t[: self.value_at] + value + t[self.value_at + _VALUE_LEN :]


#: Buffered rows below this many are converted to Arrow as structs, more column by column.
_SMALL_ROWS = 64

#: Frames of more bytes than this stream from the IPC writer into the file (see `Head.write`).
_STREAM_BYTES = 1 << 18


class _FrameSink:
    """A file object for Arrow's IPC stream writer: it drops the schema message the writer
    starts with (the file has it already) and writes the rest to the head file, hashing it.
    Small writes (message headers, padding) are gathered and written with the next large one,
    so a frame costs a few `writev` calls."""

    closed = False

    def __init__(self, fd: int, skip: int) -> None:
        self.fd = fd
        self.skip = skip
        self.length = 0
        self.hasher = _hasher(_WRITTEN)
        self.small = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.skip:
            dropped = min(self.skip, size)
            self.skip -= dropped
            view = view[dropped:]
        if not len(view):
            return size
        self.hasher.update(view)
        self.length += len(view)
        if len(view) < 1 << 16:
            self.small += view
        else:
            _write_all(self.fd, [self.small, view])
            self.small = bytearray()
        return size

    def finish(self) -> None:
        """Write what is gathered."""
        if self.small:
            _write_all(self.fd, [self.small])
            self.small = bytearray()

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.length


@dataclass
class _Frame:
    """Where one frame lies in its file (bytes), and how many records it holds."""

    start: int  # first byte of the frame's data
    data_end: int  # first byte of its trailer
    end: int  # first byte after its trailer
    records: int = 0


@dataclass
class HeadFile:
    """What a head file holds: its identity, its valid frames and what is wrong with it."""

    path: Path
    start_offset: int
    epoch: int | None  # the owner's lease epoch (None: format 1)
    generation: int
    user_schema: pa.Schema
    batches: list[pa.RecordBatch]
    #: `ok`, `torn` (an incomplete tail after `valid_bytes`), `damaged` (a frame that fails
    #: its hash with a valid frame after it) or `empty` (not even one valid frame).
    status: str
    detail: str
    valid_bytes: int
    size: int
    data: bytes | None = field(default=None, repr=False)  # to re-check the frames
    frames: list[_Frame] = field(default_factory=list, repr=False)
    legacy_marker: Path | None = None

    @property
    def records(self) -> int:
        return sum(b.num_rows for b in self.batches)

    @property
    def end_offset(self) -> int:
        """One past the last record of the valid frames."""
        return self.start_offset + self.records

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=head_schema(self.user_schema))

    def recheck(self) -> None:
        """Re-hash every frame the batches came from. Raises `IntegrityError` on a mismatch."""
        if self.data is None:
            return
        view = memoryview(self.data)
        for frame in self.frames:
            value = _find_value(view[frame.data_end : frame.end])
            if value is None or not _check(view[frame.start : frame.data_end], value[2]):
                raise IntegrityError(
                    f"head {self.path}: the frame at bytes {frame.start}..{frame.end} no longer "
                    "matches its checksum"
                )


def _find_value(region: memoryview) -> _Value | None:
    raw = bytes(region)
    at = raw.find(_PREFIX)
    return None if at < 0 else _parse_value(raw[at : at + _VALUE_LEN])


def _parse_value(raw: bytes) -> _Value | None:
    """(start, length, digest, trailer length) from a trailer value, or None. The digest is
    `<algorithm>:<hex>` (the marker says which algorithm)."""
    algorithm = _ALGORITHMS.get(raw[: len(_MARKER)])
    parts = raw[len(_MARKER) :].split(b":")
    if algorithm is None or len(raw) != _VALUE_LEN or len(parts) != 4:
        return None
    if any(len(p) != 16 for p in parts):
        return None
    try:
        digest = f"{algorithm}:{parts[2].decode('ascii')}"
        return int(parts[0], 16), int(parts[1], 16), digest, int(parts[3], 16)
    except (ValueError, UnicodeDecodeError):
        return None


def _frame_value(message: pa.ipc.Message) -> _Value | bool:
    """A trailer's value; False for a data message; True for a trailer that cannot be read."""
    if message.type != "record batch":
        return False
    meta = message.metadata.to_pybytes()
    at = meta.find(_PREFIX)
    if at < 0:
        return False
    return _parse_value(meta[at : at + _VALUE_LEN]) or True


_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError, ValueError, IndexError)

# One IPC message: (first byte, end byte, message).
_Located = tuple[int, int, pa.ipc.Message]


def _walk(data: bytes, start: int) -> Iterator[_Located | None]:
    """Each IPC message from byte `start` on; None at the first one that cannot be read (a
    torn or damaged message), and then the walk stops."""
    reader = pa.BufferReader(pa.py_buffer(data))
    reader.seek(start)
    size = len(data)
    while True:
        begin = reader.tell()
        if begin >= size:
            return
        try:
            message = pa.ipc.read_message(reader)
        except _READ_ERRORS:
            yield None
            return
        yield begin, reader.tell(), message


def _scan_frames(data: bytes, begin: int) -> tuple[list[_Frame], list[list[_Located]], int]:
    """The run of valid frames from byte `begin` on, the data messages of each, and the byte
    where the run ends."""
    frames: list[_Frame] = []
    contents: list[list[_Located]] = []
    frame_start = begin
    messages: list[_Located] = []
    view = memoryview(data)
    for item in _walk(data, begin):
        if item is None:
            break
        at, end, message = item
        value = _frame_value(message)
        if value is False:
            messages.append(item)
            continue
        if value is True:
            break
        start, length, digest, trailer = value
        data_end = start + length
        # The frame is exactly [start, data_end + trailer): data, then the trailer (with the
        # dictionaries of its zero-row batch, for dictionary columns), ending here.
        if start != frame_start or data_end > at or data_end + trailer != end:
            break
        own = [m for m in messages if m[1] <= data_end]
        if data_end != frame_start and (not own or own[-1][1] != data_end):
            break
        if not _check(view[start:data_end], digest):
            break
        frames.append(_Frame(start, data_end, end))
        contents.append(own)
        frame_start = end
        messages = []
    return frames, contents, frame_start


def _whole_frame_at(data: bytes, value: _Value) -> bool:
    """Whether the frame this trailer value describes is complete and valid: its data hashes
    right and its trailer reads, ending where the value says (a torn write can cut a trailer
    after its value)."""
    start, length, digest, trailer = value
    if not _check(memoryview(data)[start : start + length], digest):
        return False
    for item in _walk(data, start + length):
        if item is None or item[1] > start + length + trailer:
            return False
        if _frame_value(item[2]) == value:
            return item[1] == start + length + trailer
    return False


def _later_valid_frame(data: bytes, after: int) -> int | None:
    """The start of a complete, valid frame at or after byte `after`, or None: evidence that
    what fails at `after` is damage rather than a torn tail."""
    at = data.find(_PREFIX, after)
    while at >= 0:
        value = _parse_value(data[at : at + _VALUE_LEN])
        if value is not None:
            start, length = value[0], value[1]
            if after <= start and start + length <= at and _whole_frame_at(data, value):
                return start
        at = data.find(_PREFIX, at + 1)
    return None


def _decode(
    data: bytes, schema: pa.Schema, frames: list[_Frame], contents: list[list[_Located]]
) -> list[pa.RecordBatch]:
    """The record batches of the data frames (zero-copy views of `data` when possible);
    counts each frame's records into `frames[1:]` (`frames[0]` is the header)."""
    plain = head_schema(_user_of(schema))
    dictionaries = any(_has_dictionary(f.type) for f in schema)
    header = frames[0]
    out: list[pa.RecordBatch] = []
    for frame, messages in zip(frames[1:], contents[1:], strict=True):
        if not messages:
            continue
        if dictionaries:
            blob = data[header.start : header.data_end] + data[messages[0][0] : messages[-1][1]]
            batches = pa.ipc.open_stream(blob).read_all().to_batches()
        else:
            batches = [pa.ipc.read_record_batch(m, schema) for _, _, m in messages]
        frame.records = sum(b.num_rows for b in batches)
        out.extend(batches)
    return [b if b.schema.equals(plain) else _retag(b, plain) for b in out]


def _retag(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _user_of(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in ("_offset", "_timestamp", "_headers")])


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load_head(path: Path, *, salvage: bool = False) -> HeadFile:
    """Read a head file of format 2, changing nothing.

    With `salvage`, the valid frames after damage are returned too (to re-append what a
    damaged head still holds); otherwise only those before the first failure.

    Raises:
        FileNotFoundError: the file is gone (sealed and removed meanwhile).
    """
    parsed = parse_head_name(path.name)
    start_offset, epoch = parsed if parsed is not None else (0, parse_spare_name(path.name))
    data = _read(path)
    size = len(data)
    frames, contents, valid = _scan_frames(data, 0)
    status, detail = "ok", ""
    if valid < size:
        later = _later_valid_frame(data, valid)
        if later is None:
            status = "torn"
            detail = f"{size - valid} bytes after byte {valid} are an incomplete frame"
        else:
            status = "damaged"
            detail = (
                f"the bytes from {valid} fail their checksum (or do not read) while a "
                f"valid frame follows at byte {later}"
            )
            if salvage and frames:
                more, more_contents, _ = _scan_frames(data, later)
                frames += more
                contents += more_contents

    def unreadable(why: str) -> HeadFile:
        kind = "damaged" if status == "damaged" or frames else "empty"
        return HeadFile(path, start_offset, epoch, 0, pa.schema([]), [], kind, why, 0, size, data)

    if not frames:
        return unreadable(detail or "no complete frame")
    header = contents[0]
    try:
        if len(header) != 1 or header[0][2].type != "schema":
            raise ValueError("the first frame holds no schema")
        schema = pa.ipc.read_schema(header[0][2])
        info = json.loads((schema.metadata or {})[_HEAD_KEY])
    except (*_READ_ERRORS, KeyError, TypeError) as e:
        return unreadable(f"its header frame is not a head schema ({e})")
    batches = _decode(data, schema, frames, contents)
    return HeadFile(
        path,
        int(info.get("start_offset", start_offset)),
        epoch,
        int(info.get("generation", 0)),
        _user_of(schema),
        batches,
        status,
        detail,
        valid,
        size,
        data,
        frames[1:],
    )


# --- format 1 (a marker counts the durable bytes) --------------------------------------------


def _complete_prefix(data: bytes) -> tuple[pa.Schema, int, int]:
    """Schema, record count and byte length of the complete IPC messages at the data's start."""
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
    return _user_of(reader.schema), records, good


def _load_legacy(arrow_path: Path, marker_path: Path, repair: bool) -> HeadFile | None:
    try:
        raw = marker_path.read_bytes()
    except FileNotFoundError:
        if repair:
            arrow_path.unlink(missing_ok=True)  # nothing in it was ever acknowledged
        return None
    start = int(arrow_path.name[:20])
    try:
        marker = json.loads(raw)
        counted_records, counted_bytes = int(marker["records"]), int(marker["bytes"])
        user = schema_from_json(marker["schema"])
        generation = int(marker["generation"])
    except (ValueError, TypeError, KeyError):
        # A torn in-place update: every complete batch in the file was durable before it began.
        user, counted_records, counted_bytes = _complete_prefix(_read(arrow_path))
        generation = 0
    try:
        data = _read(arrow_path)
    except FileNotFoundError:
        if counted_records == 0:
            return None
        raise IntegrityError(
            f"head marker {marker_path} counts {counted_records} records but {arrow_path} is "
            "missing"
        ) from None
    if len(data) < counted_bytes:
        raise IntegrityError(
            f"head {arrow_path} has {len(data)} bytes but its marker counts {counted_bytes}"
        )
    if len(data) > counted_bytes and repair:
        # Torn or unacknowledged tail: never expose it.
        os.truncate(arrow_path, counted_bytes)
        with open(arrow_path, "rb+") as f:
            os.fsync(f.fileno())
    table = pa.ipc.open_stream(data[:counted_bytes]).read_all()
    if table.num_rows != counted_records:
        raise IntegrityError(
            f"head {arrow_path} holds {table.num_rows} records but its marker counts "
            f"{counted_records}"
        )
    plain = head_schema(user)
    batches = [_retag(b, plain) for b in table.to_batches()]
    return HeadFile(
        arrow_path, start, None, generation, user, batches, "ok", "", counted_bytes, len(data),
        legacy_marker=marker_path,
    )  # fmt: skip


# --- reading a heads folder --------------------------------------------------------------------


def list_head_files(folder: Path) -> list[tuple[int, int | None, Path]]:
    """`(start_offset, epoch, path)` of every head file in `folder`, by start then epoch.

    A spare file that holds data is a head whose rename a crash undid: its start offset is
    read from its header frame. Empty spares are not heads (see `list_spare_files`).
    """
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        parsed = parse_head_name(name)
        if parsed is not None:
            out.append((parsed[0], parsed[1], folder / name))
            continue
        epoch = parse_spare_name(name)
        if epoch is not None:
            try:
                head = load_head(folder / name)
            except FileNotFoundError:
                continue
            if head.status != "empty" or head.size:
                out.append((head.start_offset, epoch, folder / name))
    out.sort(key=lambda t: (t[0], -1 if t[1] is None else t[1]))
    return out


def list_spare_files(folder: Path) -> list[tuple[int, Path]]:
    """`(epoch, path)` of every spare head file in `folder` (empty or not)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        (epoch, folder / name)
        for name in sorted(names)
        if (epoch := parse_spare_name(name)) is not None
    ]


def read_head(path: Path, epoch: int | None, *, repair: bool = False) -> HeadFile | None:
    """Load one head file of either format; None when it is gone or acknowledges nothing.

    With `repair` (the writer's recovery) a torn tail is cut off the file (format 2) or past
    the marker (format 1); damage is reported in the result, never repaired.
    """
    try:
        if epoch is None:
            return _load_legacy(path, path.with_suffix(".json"), repair)
        head = load_head(path)
    except FileNotFoundError:
        return None
    if repair and head.status in ("torn", "empty"):
        _cut(path, head.valid_bytes)
        head.size = head.valid_bytes
        if head.status == "empty":
            path.unlink(missing_ok=True)
            return None
        head.status, head.detail = "ok", ""
    if head.status == "empty":
        return None
    return head


def _cut(path: Path, size: int) -> None:
    with open(path, "rb+") as f:
        f.truncate(size)
        os.fsync(f.fileno())


def read_heads(folder: Path) -> list[HeadFile]:
    """Every head in `folder` (read-only), oldest first; files that vanish meanwhile (sealed
    and removed by their writer) are skipped. Damaged heads are included (see `status`)."""
    out = []
    for _, epoch, path in list_head_files(folder):
        head = read_head(path, epoch)
        if head is not None:
            out.append(head)
    return out


def fenced_epoch(commits: list[dict[str, Any]]) -> int:
    """The highest writer lease epoch a `fence` commit fenced (0: none). Heads owned by that
    epoch or an older one never continue the stream."""
    fenced = 0
    for commit in commits:
        for action in commit["actions"]:
            previous = action.get("previous") if action.get("type") == "fence" else None
            if isinstance(previous, dict) and isinstance(previous.get("epoch"), int):
                fenced = max(fenced, previous["epoch"])
    return fenced


class ChainLink(Protocol):
    """What the chain rule reads of a head: a `HeadFile`, or a `head_reader.HeadReader`."""

    @property
    def path(self) -> Path: ...
    @property
    def start_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def records(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def detail(self) -> str: ...


Link = TypeVar("Link", bound=ChainLink)


def continues(head: ChainLink, expected: int, fenced: int) -> bool:
    """Whether `head` continues a stream whose next offset is `expected`, given the highest
    `fenced` epoch: it starts there and its owner was never fenced."""
    return head.start_offset == expected and (head.epoch is None or head.epoch > fenced)


def by_priority(heads: Iterable[Link]) -> list[Link]:
    """Heads by start offset, the newest owner first among those starting at one offset."""
    return sorted(heads, key=lambda h: (h.start_offset, -(h.epoch if h.epoch is not None else -1)))


def chain_links(heads: Iterable[Link], next_offset: int, fenced: int) -> Iterator[Link]:
    """The heads a reader shows after the committed `next_offset`, in order: from there, each
    starts where the previous one ends and none is owned by a fenced epoch (<= `fenced`); of
    heads starting at one offset, the newest owner's; empty ones are skipped. This is the rule
    the writer's recovery adopts heads by, so readers show what the next writer will keep.

    Raises:
        IntegrityError: a head of the chain is damaged (naming the file).
    """
    expected = next_offset
    for head in by_priority(heads):
        if not continues(head, expected, fenced):
            continue
        if head.status == "damaged":
            raise IntegrityError(
                f"head {head.path} of the stream's unsealed records is damaged: {head.detail}; "
                "a writer opening the stream sets it aside (see Log.orphaned_heads)"
            )
        if not head.records:
            continue
        yield head
        expected = head.end_offset


def chain_heads(heads: list[HeadFile], next_offset: int, fenced: int) -> HeadBatches:
    """The batches of the heads `chain_links` keeps (the rule readers and recovery share).

    Raises:
        IntegrityError: a head of the chain is damaged (naming the file).
    """
    return [
        (head.start_offset, head.user_schema, head.batches)
        for head in chain_links(heads, next_offset, fenced)
    ]


# --- the writer's heads --------------------------------------------------------------------------


class Head:
    """One head: its batches in memory and, once a `local` append asks, the same on disk.

    Not thread-safe: the stream's writer serialises calls (see `engine.writer`).
    """

    def __init__(
        self, folder: Path, start_offset: int, user: pa.Schema, generation: int, epoch: int
    ) -> None:
        self.folder = folder
        self.start_offset = start_offset
        self.user_schema = user
        self.schema = head_schema(user)
        self.generation = generation
        self.epoch = epoch
        self.batches: list[pa.RecordBatch] = []
        self.records = 0
        self.nbytes = 0
        self.created = time.monotonic()
        self.written_batches = 0
        self.written_records = 0
        self.durable_records = 0
        self.file_bytes = 0
        self.fd: int | None = None
        self.new_file = False  # created, but its folder entry not yet synced
        self.codec: FrameCodec | None = None
        #: Buffered per-record appends, one Python list per user column (no object per record:
        #: a tuple per record would be tracked by the garbage collector, whose passes then
        #: rescan every buffered record).
        self.columns: list[list[Any]] = [[] for _ in user]
        self.row_type: pa.StructType | None = None  # the head schema as a struct, once used
        self.row_stamps: list[int] = []
        #: The file this head was recovered from (its frames are re-checked before sealing).
        self.recovered: HeadFile | None = None
        #: Heads of one bulk append share its first offset here: they are sealed together,
        #: by one commit (None: a head of its own).
        self.group: int | None = None

    @classmethod
    def adopt(cls, file: HeadFile, epoch: int) -> Head:
        """A head continuing from a recovered file (already renamed to `epoch`'s name)."""
        head = cls(file.path.parent, file.start_offset, file.user_schema, file.generation, epoch)
        head.batches = list(file.batches)
        head.records = head.written_records = head.durable_records = file.records
        head.written_batches = len(head.batches)
        head.nbytes = sum(b.nbytes for b in head.batches)
        head.file_bytes = file.valid_bytes
        head.recovered = file
        return head

    @property
    def next_offset(self) -> int:
        return self.start_offset + self.records

    @property
    def path(self) -> Path:
        return self.folder / head_name(self.start_offset, self.epoch)

    def add(self, batch: pa.RecordBatch) -> None:
        self.materialize()
        self.batches.append(batch)
        self.records += batch.num_rows
        self.nbytes += batch.nbytes

    def add_row(self, values: tuple[Any, ...], stamp_ns: int, nbytes: int) -> None:
        """Buffer one record whose values were checked against the user schema's types,
        appended at `stamp_ns` (`time.time_ns()`)."""
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.row_stamps.append(stamp_ns)
        self.records += 1
        self.nbytes += nbytes

    def materialize(self) -> None:
        """Turn buffered rows into one Arrow batch at the end of `batches`."""
        n = len(self.row_stamps)
        if not n:
            return
        start = self.next_offset - n
        if n < _SMALL_ROWS:
            # A group commit's few records: one conversion of transient row tuples to a struct
            # of every head column costs less than one conversion per column.
            if self.row_type is None:
                self.row_type = pa.struct(list(self.schema))
            rows = zip(
                range(start, start + n),
                [s // 1000 for s in self.row_stamps],
                [None] * n,
                *self.columns,
                strict=True,
            )
            struct: Any = pa.array(list(rows), type=self.row_type)  # a StructArray
            batch = pa.RecordBatch.from_struct_array(struct)
        else:
            stamps = pa.array(np.array(self.row_stamps, np.int64) // 1000, TIMESTAMP_TYPE)
            values = [
                pa.array(c, f.type) for c, f in zip(self.columns, self.user_schema, strict=True)
            ]
            arrays = [
                pa.array(np.arange(start, start + n, dtype=np.int64)),
                stamps,
                pa.nulls(n, HEADERS_TYPE),
                *values,
            ]
            batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.batches.append(batch)
        self.columns = [[] for _ in self.columns]
        self.row_stamps = []

    def all_batches(self) -> list[pa.RecordBatch]:
        """Every record of the head as batches (materializing buffered rows)."""
        self.materialize()
        return list(self.batches)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.all_batches(), schema=self.schema)

    # --- writing: prepare (under the writer's lock), write and sync (under its sync lock) ---

    def prepare(self) -> tuple[list[pa.RecordBatch], int, int] | None:
        """The unwritten batches, with the written-batch and record counts they bring the head
        to; None if everything is written and durable. No I/O (called under the writer's
        lock; the batches are immutable)."""
        self.materialize()
        if self.written_batches == len(self.batches):
            if self.durable_records == self.written_records:
                return None
            return [], self.written_batches, self.written_records  # written, sync failed
        batches = self.batches[self.written_batches :]
        return batches, len(self.batches), self.written_records + sum(b.num_rows for b in batches)

    def _info(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "start_offset": self.start_offset,
            "generation": self.generation,
            "epoch": self.epoch,
        }

    def write(self, job: tuple[list[pa.RecordBatch], int, int], spare: Path | None = None) -> bool:
        """Append one frame of the job's batches, creating the file (with its header frame)
        on first use: by renaming `spare` (an empty spare head file whose folder entry is
        durable already, so the first sync needs no sync of the folder) when given. Returns
        whether it used `spare`.

        Small frames are encoded in memory and written with one `writev`; large ones stream
        from Arrow's IPC writer into the file, hashed on the way (one copy, like writing the
        IPC stream without a checksum). On failure the file is cut back to its last complete
        frame and nothing counts as written, so a later write starts from a clean end.
        """
        batches, count, records = job
        used = False
        if not batches:
            return used
        if self.codec is None:
            self.codec = FrameCodec(self.schema, self._info())
        codec = self.codec
        base = self.file_bytes
        try:
            if self.fd is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                if spare is not None:
                    # If a crash undoes the rename, the file is found by its spare name.
                    with contextlib.suppress(OSError):
                        os.rename(spare, self.path)
                        used = True
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self.new_file = not used
                header = codec.schema_message
                trailer = codec.trailer(0, [header])
                _write_all(self.fd, [header, trailer])
                base = header.size + len(trailer)
            size = sum(b.get_total_buffer_size() for b in batches)
            if codec.dictionaries or size > _STREAM_BYTES:
                sink = _FrameSink(self.fd, codec.schema_message.size)
                sink_file = pa.PythonFile(sink, mode="w")  # type: ignore[arg-type]
                writer = pa.ipc.new_stream(sink_file, codec.schema, options=_IPC_OPTIONS)
                for batch in batches:
                    writer.write_batch(batch)
                sink.finish()
                digest = f"{_WRITTEN}:{sink.hasher.hexdigest()}"
                trailer = codec.trailer_for(base, sink.length, digest)
                _write_all(self.fd, [trailer])
                end = base + sink.length + len(trailer)
            else:
                parts = codec.encode(batches)
                trailer = codec.trailer(base, parts)
                _write_all(self.fd, [*parts, trailer])
                end = base + sum(len(memoryview(c)) for c in parts) + len(trailer)
        except OSError:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.file_bytes)
            raise
        self.file_bytes = end
        self.written_batches = count
        self.written_records = records
        return used

    def sync(self, records: int) -> None:
        """fdatasync the file (and its folder, the first time): `records` are now durable."""
        assert self.fd is not None
        os.fdatasync(self.fd)
        if self.new_file:
            fsync_dir(self.folder)
            self.new_file = False
        self.durable_records = max(self.durable_records, records)

    def close_file(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def recycle(self, spare: Path) -> Path:
        """Empty the head's file (its records are committed) and rename it to `spare`, to be
        the next head's file: a new head then renames it instead of creating a file, so its
        first sync needs no sync of the folder. No sync here: after a crash the file is found
        under one of the names it had, holding the frames of the last head that synced it
        (its header frame says which), or nothing. Returns `spare`."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        self.close_file()
        os.rename(self.path, spare)
        return spare

    def discard_files(self) -> None:
        """Remove the head's file (after its records are committed in a segment)."""
        self.close_file()
        self.path.unlink(missing_ok=True)
        if self.recovered is not None:
            self.recovered.path.unlink(missing_ok=True)
            if self.recovered.legacy_marker is not None:
                self.recovered.legacy_marker.unlink(missing_ok=True)


def _write_all(fd: int, chunks: list[Any]) -> None:
    views = [memoryview(c).cast("B") for c in chunks]
    while views:
        written = os.writev(fd, views[:512])
        while written:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


# --- compatibility: format-1 style recovery of a folder --------------------------------------


@dataclass
class RecoveredHead:
    """A head found on disk: its durable records and where they came from."""

    start_offset: int
    generation: int
    user_schema: pa.Schema
    table: pa.Table
    arrow_path: Path
    marker_path: Path | None


def recover_heads(folder: Path, *, truncate: bool) -> list[RecoveredHead]:
    """Load every head in `folder`, oldest first, keeping exactly their valid records.

    With `truncate=True` torn tails are cut off the files and files that acknowledge nothing
    are removed; without it (a reader) nothing changes.

    Raises:
        IntegrityError: a head is damaged, or a format-1 marker disagrees with its file.
    """
    out = []
    for _, epoch, path in list_head_files(folder):
        head = read_head(path, epoch, repair=truncate)
        if head is None:
            continue
        if head.status == "damaged":
            raise IntegrityError(f"head {path} is damaged: {head.detail}")
        out.append(
            RecoveredHead(
                head.start_offset,
                head.generation,
                head.user_schema,
                head.table(),
                path,
                head.legacy_marker,
            )
        )
    return out


# --- set-aside heads ---------------------------------------------------------------------------


def set_aside(path: Path, folder: Path, info: dict[str, Any], *, copy: bool = False) -> Path:
    """Move (or `copy`) head file `path` into `folder` with a sidecar describing why; returns
    the new path. The sidecar (`<name>.orphan.json`) is written before the file arrives, and
    the file is never rewritten, so a crash leaves either the head in place or both."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists() or target.with_name(target.name + _ORPHAN_SUFFIX).exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    record = {**info, "file": target.name, "set_aside_at": now_rfc3339(), "source": str(path)}
    write_file_atomic(target.with_name(target.name + _ORPHAN_SUFFIX), canonical(record))
    if copy:
        tmp = folder / f".tmp-{target.name}"
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    else:
        os.replace(path, target)
        marker = path.with_suffix(".json")
        if parse_head_name(path.name) == (int(path.name[:20]), None) and marker.exists():
            os.replace(marker, target.with_suffix(".json"))
        fsync_dir(path.parent)
    fsync_dir(folder)
    return target


def read_set_aside(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every set-aside head file in `folder` with its sidecar (a minimal one for files set
    aside by earlier versions)."""
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if not name.endswith(".arrow"):
            continue
        path = folder / name
        try:
            info = json.loads((folder / (name + _ORPHAN_SUFFIX)).read_bytes())
        except FileNotFoundError:
            info = {"reason": "set aside by an earlier version of transit-arrow", "kind": "gap"}
        except ValueError:
            info = {"reason": "its description is unreadable", "kind": "unknown"}
        out.append((path, info))
    return out


def orphan_records(path: Path) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The user schema and every record a set-aside head file still holds: its valid frames,
    those after damage too (format 2), or its complete batches (format 1)."""
    data = _read(path)
    if data.find(_FRAME_KEY) >= 0:
        head = load_head(path, salvage=True)
        return head.user_schema, head.batches
    user, _, good = _complete_prefix(data)
    plain = head_schema(user)
    if not good:
        return user, []
    return user, [_retag(b, plain) for b in pa.ipc.open_stream(data[:good]).read_all().to_batches()]


def update_set_aside(path: Path, changes: dict[str, Any]) -> None:
    """Durably update the sidecar of set-aside head `path` with `changes`."""
    sidecar = path.with_name(path.name + _ORPHAN_SUFFIX)
    try:
        info = json.loads(sidecar.read_bytes())
    except (FileNotFoundError, ValueError):
        info = {}
    write_file_atomic(sidecar, canonical({**info, **changes}))


# --- for readers that follow a head file as it grows (`segments.head_reader`) -----------------

__all__ += ["FRAME_MARKER", "frame_matches", "frame_trailer", "head_header"]

#: The bytes every frame trailer's value starts with (whatever its checksum).
FRAME_MARKER = _PREFIX


def frame_trailer(message: pa.ipc.Message) -> tuple[int, int, str, int] | bool:
    """A frame trailer's value: (first byte of the frame's data, its length, its checksum as
    `<algorithm>:<hex>`, the trailer's own length); False for a data message; True for a
    trailer that does not read."""
    return _frame_value(message)


def frame_matches(data: Any, digest: str) -> bool:
    """Whether a frame's data bytes hash to the checksum its trailer records (`digest`, as
    `frame_trailer` returns it: XXH3-64 for head format 3, BLAKE3-64 for format 2)."""
    return _check(data, digest)


def head_header(schema: pa.Schema) -> tuple[pa.Schema, dict[str, Any]]:
    """The user schema and the head info (`start_offset`, `generation`, `epoch`) of the schema
    message a head file starts with.

    Raises:
        KeyError, ValueError: it is not a head's schema.
    """
    info = json.loads((schema.metadata or {})[_HEAD_KEY])
    if not isinstance(info, dict):
        raise ValueError("the head info is not an object")
    return _user_of(schema), info
