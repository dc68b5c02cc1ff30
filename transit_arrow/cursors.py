"""Durable cursors: a consumer's position in a stream, stored in the log itself.

A cursor is named (`indexer`, `eval-worker`) and belongs to one stream; the same name may
follow several streams. Its **position** is the offset of the next record to process: a
consumer tails from it, processes records, then commits the offset after the last one it
finished. After a crash, a restart or on another machine, `Log.cursor(name, stream)` reads the
last committed position back, so records are replayed at least once and never skipped.

Each commit is a new object `cursors/<enc(name)>/<enc(stream)>/<generation:020d>.json`
created put-if-absent (canonical JSON: cursor, stream, generation, position, time, writer).
Two handles committing the same cursor race for the same generation: one wins, the other gets
`CommitConflictError` and changes nothing. The newest generation is the position; older files
are pruned after each commit (the two newest are kept). A handle that commits a generation
pruned long ago finds a newer one when it lists the folder after its put, and gets the same
conflict (its file is ignored by every reader and pruned by the next commit).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import weakref
from typing import Any

import pyarrow as pa

from .commit import canonical, now_rfc3339, writer_identity
from .engine.catalog import Catalog
from .engine.read import live_plan
from .engine.tail import Tail, check_tail_args
from .errors import (
    CommitConflictError,
    IntegrityError,
    InvalidInputError,
    StorageError,
    TransitError,
)
from .layout import cursor_folder, cursor_path, cursors_folder
from .names import validate_stream_name

__all__ = ["CURSORS_SCHEMA", "Cursor", "cursors_table", "open_cursor"]

FORMAT = 1
_FILE = re.compile(r"(\d{20})\.json")
_KEEP = 2

CURSORS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("name", pa.string()),
        ("stream", pa.string()),
        ("position", pa.int64()),
        ("generation", pa.int64()),
        ("committed_at", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
        ("error", pa.string()),
    ]
)


def _check_name(name: object) -> str:
    try:
        return validate_stream_name(name)
    except InvalidInputError as e:
        raise InvalidInputError(str(e).replace("stream name", "cursor name")) from None


def _generations(catalog: Catalog, folder: str) -> list[int]:
    """The committed generations in a cursor's folder, oldest first."""
    out = []
    for entry in catalog.store.list(folder):
        match = _FILE.fullmatch(entry)
        if match:
            out.append(int(match.group(1)))
    return sorted(out)


def _load(catalog: Catalog, path: str, name: str | None, stream: str | None) -> dict[str, Any]:
    """One committed generation, checked: canonical JSON naming the expected cursor."""
    data = catalog.store.get(path)
    try:
        body = json.loads(data)
        ok = (
            isinstance(body, dict)
            and canonical(body) == data
            and body.get("format") == FORMAT
            and isinstance(body.get("position"), int)
            and body["position"] >= 0
            and isinstance(body.get("generation"), int)
            and path.endswith(f"/{body['generation']:020d}.json")
            and (name is None or body.get("cursor") == name)
            and (stream is None or body.get("stream") == stream)
        )
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise IntegrityError(f"cursor file {catalog.uri}/{path} is damaged (not a valid cursor)")
    return dict(body)


class Cursor:
    """A durable position of consumer `name` in `stream` (from `Log.cursor`).

    Attributes:
        name: the cursor's name.
        stream: the stream it follows.
    """

    def __init__(self, catalog: Catalog, name: str, stream: str) -> None:
        self.catalog = catalog
        self.name = name
        self.stream = stream
        self._folder = cursor_folder(name, stream)
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._tails: weakref.WeakSet[Tail] = weakref.WeakSet()
        self.refresh()

    def __repr__(self) -> str:
        return f"<Cursor {self.name!r} on {self.stream!r} at offset {self.position}>"

    @property
    def position(self) -> int:
        """The offset of the next record to process (0 before the first commit)."""
        return 0 if self._state is None else int(self._state["position"])

    @property
    def generation(self) -> int | None:
        """How many commits came before the last one this handle saw (None: never committed)."""
        return None if self._state is None else int(self._state["generation"])

    @property
    def committed_at(self) -> str | None:
        """When the position was committed (RFC 3339), None before the first commit."""
        return None if self._state is None else str(self._state["time"])

    def refresh(self) -> int:
        """Read the latest committed position from the log (another process may have moved
        it) and return it."""
        self.catalog.check_open()
        with self._lock:
            generations = _generations(self.catalog, self._folder)
            if generations:
                path = cursor_path(self.name, self.stream, generations[-1])
                self._state = _load(self.catalog, path, self.name, self.stream)
            else:
                self._state = None
            return self.position

    def tail(self, *, timeout: float | None = None) -> Tail:
        """The stream's records from `position` on, as they are appended (see `Stream.tail`).
        Commit `tail.position` (or a batch's last `_offset` + 1) once they are processed."""
        self.catalog.check_open()
        _, idle = check_tail_args(0, timeout)
        tail = Tail(self.catalog, self.stream, self.position, timeout=idle)
        self._tails.add(tail)
        return tail

    def commit(self, offset: int) -> int:
        """Record that every record before `offset` is processed; return the new generation.

        `offset` may move back (to replay) but not past the stream's end.

        Raises:
            CommitConflictError: another handle (any process, any machine) committed this
                cursor since this handle last read it; nothing was changed. `refresh()`, then
                decide again.
            InvalidInputError: `offset` is not an offset of the stream (or its end).
        """
        self.catalog.check_open()
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidInputError(f"a cursor position must be an offset >= 0, not {offset!r}")
        with self._lock:
            self._check_reachable(offset)
            generation = 0 if self._state is None else int(self._state["generation"]) + 1
            body = {
                "format": FORMAT,
                "cursor": self.name,
                "stream": self.stream,
                "generation": generation,
                "position": offset,
                "time": now_rfc3339(),
                "writer": writer_identity("cursor", 0),
            }
            path = cursor_path(self.name, self.stream, generation)
            try:
                self.catalog.store.put_if_absent(path, canonical(body))
            except FileExistsError:
                raise self._conflict(generation) from None
            generations = _generations(self.catalog, self._folder)
            if generations[-1] >= generation + _KEEP:  # our generation had been pruned
                raise self._conflict(generations[-1])
            self._state = body
            for old in generations[:-_KEEP]:
                # Pruning is best effort: the newest generation is what counts.
                with contextlib.suppress(FileNotFoundError, StorageError):
                    self.catalog.store.delete(cursor_path(self.name, self.stream, old))
            return generation

    def _check_reachable(self, offset: int) -> None:
        if offset <= self.position or any(offset <= t.position for t in list(self._tails)):
            return
        if offset <= self.catalog.next_offset(self.stream):
            return
        end = live_plan(self.catalog, self.stream).next_offset
        if offset > end:
            raise InvalidInputError(
                f"cannot commit cursor {self.name!r} at offset {offset}: stream "
                f"{self.stream!r} ends before it (its next offset is {end}); a cursor's "
                "position is the offset of the next record to process"
            )

    def _conflict(self, generation: int) -> CommitConflictError:
        mine = self.generation
        try:
            path = cursor_path(self.name, self.stream, generation)
            other = _load(self.catalog, path, self.name, self.stream)
            writer = other.get("writer") or {}
            who = (
                f" (position {other['position']}, committed at {other.get('time')} by "
                f"{writer.get('host')} pid {writer.get('pid')})"
            )
        except (FileNotFoundError, TransitError):
            who = ""
        seen = "never read a commit" if mine is None else f"was at generation {mine}"
        return CommitConflictError(
            f"cursor {self.name!r} on stream {self.stream!r} was committed by another handle: "
            f"generation {generation} exists{who}, and this handle {seen}; nothing was "
            "changed. Call cursor.refresh() to read the current position, then commit again"
        )


def open_cursor(catalog: Catalog, name: str, stream: str) -> Cursor:
    """Cursor `name` on `stream`, at its last committed position (see `Log.cursor`).

    Raises:
        InvalidInputError: a bad cursor or stream name.
        StreamNotFoundError: no such stream.
    """
    catalog.check_open()
    _check_name(name)
    validate_stream_name(stream)
    if not catalog.exists(stream):
        raise catalog.not_found(stream)
    return Cursor(catalog, name, stream)


def cursors_table(catalog: Catalog) -> pa.Table:
    """One row per cursor and stream: position, generation, when and by whom it was
    committed; `error` when its latest file cannot be read (the others are still listed)."""
    rows: list[dict[str, Any]] = []
    for name_entry in catalog.store.list(cursors_folder()):
        if not name_entry.endswith("/"):
            continue
        name_folder = f"{cursors_folder()}/{name_entry[:-1]}"
        for stream_entry in catalog.store.list(name_folder):
            if not stream_entry.endswith("/"):
                continue
            folder = f"{name_folder}/{stream_entry[:-1]}"
            generations = _generations(catalog, folder)
            if not generations:
                continue
            path = f"{folder}/{generations[-1]:020d}.json"
            try:
                body = _load(catalog, path, None, None)
            except (FileNotFoundError, TransitError) as e:
                rows.append({"name": name_entry[:-1], "stream": stream_entry[:-1], "error": str(e)})
                continue
            writer = body.get("writer") or {}
            rows.append(
                {
                    "name": body.get("cursor"),
                    "stream": body.get("stream"),
                    "position": body["position"],
                    "generation": body["generation"],
                    "committed_at": body.get("time"),
                    "host": writer.get("host"),
                    "pid": writer.get("pid"),
                    "error": None,
                }
            )
    rows.sort(key=lambda r: (str(r["name"]), str(r["stream"])))
    return pa.Table.from_pylist(rows, schema=CURSORS_SCHEMA)
