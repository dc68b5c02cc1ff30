"""Segments of remote logs, served to DuckDB through an fsspec filesystem (DESIGN §8).

A log whose store has no local files (`memory://`, `s3://`) names its segments in SQL as
`transit://<log key>/<segment path>`. DuckDB resolves these through `SegmentFileSystem`,
registered on the connection: sizes and modification times come from the commits (no request),
and opening a segment serves the log's verified local cache, fetching and checking the whole
file first when it is not cached yet. So DuckDB never reads an unverified byte, only touches
the segments a query's spans need, and a segment evicted from the cache is fetched again rather
than failing the query.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import blake3
from fsspec import AbstractFileSystem

from ..manifest import SegmentRef

if TYPE_CHECKING:
    import duckdb

    from ..engine.catalog import Catalog

__all__ = ["PROTOCOL", "SegmentFileSystem", "ensure_registered", "segment_url"]

PROTOCOL = "transit"
# Segments are immutable: one fixed modification time keeps DuckDB's file cache valid.
_MODIFIED = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class _RemoteLog:
    log: weakref.ref[Catalog]
    segments: dict[str, SegmentRef] = field(default_factory=dict)


_LOGS: dict[str, _RemoteLog] = {}
_LOCK = threading.Lock()


def _log_key(log: Catalog) -> str:
    return blake3.blake3(log.uri.encode()).hexdigest()[:16]


def segment_url(log: Catalog, seg: SegmentRef) -> str:
    """The `transit://` URL DuckDB reads `seg` of `log` through (remembering the segment)."""
    key = _log_key(log)
    with _LOCK:
        entry = _LOGS.get(key)
        if entry is None or entry.log() is not log:
            # The newest Catalog object of a URI serves it: all of them see the same store.
            entry = _LOGS[key] = _RemoteLog(weakref.ref(log), dict(entry.segments) if entry else {})
        entry.segments[seg.path] = seg
    return f"{PROTOCOL}://{key}/{seg.path}"


def _resolve(path: str) -> tuple[Catalog, SegmentRef]:
    key, _, seg_path = path.removeprefix(f"{PROTOCOL}://").partition("/")
    with _LOCK:
        entry = _LOGS.get(key)
        log = entry.log() if entry is not None else None
        seg = entry.segments.get(seg_path) if entry is not None else None
    if log is None or seg is None:
        raise FileNotFoundError(
            f"{path} is not a segment of an open transit-arrow log; refresh the connection "
            "with log.duckdb(con)"
        )
    return log, seg


class _SegmentFile:
    """A read-only segment file that closes itself when dropped: DuckDB reads and seeks the
    file objects a filesystem opens but never closes them."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  # closed by close() or __del__

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        self._file.close()


class SegmentFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """Read-only fsspec filesystem over the segments of open remote logs."""

    protocol = PROTOCOL
    cachable = False

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> _SegmentFile:
        if mode != "rb":
            raise PermissionError(f"transit segments are read-only (mode {mode!r})")
        log, seg = _resolve(self.unstrip_protocol(path))
        return _SegmentFile(log.segment_file(seg))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        _, seg = _resolve(self.unstrip_protocol(path))
        return {"name": path, "size": seg.bytes, "type": "file"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        entry = self.info(path)
        return [entry] if detail else [entry["name"]]

    def glob(self, path: str, **kwargs: Any) -> list[str]:
        # Views name exact files, never patterns; a file no open log knows matches nothing.
        try:
            _resolve(self.unstrip_protocol(path))
        except FileNotFoundError:
            return []
        return [path]

    def modified(self, path: str) -> datetime:
        _resolve(self.unstrip_protocol(path))
        return _MODIFIED


def ensure_registered(con: duckdb.DuckDBPyConnection) -> None:
    """Register `SegmentFileSystem` on `con` unless it already is."""
    if PROTOCOL not in con.list_filesystems():
        con.register_filesystem(SegmentFileSystem())
