"""A bounded, verified local cache of segment files fetched from a remote store (DESIGN §3).

A segment is fetched whole, its BLAKE3 and size are checked against the commit that references
it, and only then is it written (temp + rename; no fsync, see `_path`) and served. A mismatch raises
`IntegrityError`: a corrupt object is never cached or read. A cached copy is checked again
(`verified.check`) the first time this process uses it and whenever the file changed since: a
damaged copy is discarded and fetched again. Least recently used files are evicted once the
cache exceeds its byte budget.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import IntegrityError, StorageError
from ..manifest import SegmentRef
from ..storage import ObjectStore
from ..storage.local import write_file_atomic
from .verified import hash_bytes, registry

__all__ = ["SegmentCache"]


class SegmentCache:
    """Segment files under `<local>/cache/`, keyed by their store path."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: dict[Path, int] | None = None
        self.fetched_bytes = 0
        self.fetches = 0
        # issue 15 (parallel fetches): one fetch of a file at a time, so a reader reaching a
        # segment that a background prefetch is fetching waits for it instead of fetching it
        # again.
        self._fetching: dict[Path, threading.Lock] = {}

    def _scan(self) -> dict[Path, int]:
        if self._sizes is None:
            self._sizes = {}
            if self.folder.is_dir():
                for path in self.folder.rglob("*.parquet"):
                    self._sizes[path] = path.stat().st_size
        return self._sizes

    def cached(self, seg: SegmentRef) -> bool:
        """Whether the segment is in the cache."""
        return (self.folder / seg.path).is_file()

    def path(self, store: ObjectStore, seg: SegmentRef) -> str:
        """A local path holding the segment's verified bytes, fetching it if needed (one
        thread fetches a given segment at a time; the others wait and use its copy)."""
        local = self.folder / seg.path
        with self._lock:
            fetching = self._fetching.setdefault(local, threading.Lock())
        with fetching:
            return self._path(store, seg, local)

    def _path(self, store: ObjectStore, seg: SegmentRef, local: Path) -> str:
        if local.exists():
            try:
                registry.check(
                    str(local), seg.blake3, seg.bytes, what=f"cached copy {local} of {seg.path}"
                )
            except IntegrityError:
                local.unlink(missing_ok=True)  # damaged here, not in the store: fetch again
            else:
                try:
                    os.utime(local)  # mark as recently used
                except FileNotFoundError:
                    pass  # evicted meanwhile: fetch again
                else:
                    registry.retouch(str(local), seg.blake3)
                    return str(local)
        try:
            data = store.get(seg.path)
        except FileNotFoundError as e:
            raise IntegrityError(
                f"segment {store.uri}/{seg.path} is referenced by a commit but missing"
            ) from e
        except OSError as e:
            raise StorageError(f"cannot fetch segment {store.uri}/{seg.path}: {e}") from e
        found = hash_bytes(data)
        if found != seg.blake3 or len(data) != seg.bytes:
            raise IntegrityError(
                f"segment {store.uri}/{seg.path} fetched from the store does not match its "
                f"commit: expected BLAKE3 {seg.blake3} ({seg.bytes} bytes), found {found} "
                f"({len(data)} bytes); it was not cached or served"
            )
        # No fsync: a copy torn by an OS crash fails its BLAKE3 check in the next process
        # (`verified.check` hashes every file a process has not written itself) and is
        # fetched again; the store keeps the durable original.
        write_file_atomic(local, data, durable=False)
        registry.remember(str(local), found)
        with self._lock:
            sizes = self._scan()
            sizes[local] = len(data)
            self.fetched_bytes += len(data)
            self.fetches += 1
            self._evict(keep=local)
        return str(local)

    def _evict(self, keep: Path) -> None:
        sizes = self._scan()
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        by_age = sorted(
            (p for p in sizes if p != keep), key=lambda p: p.stat().st_mtime if p.exists() else 0
        )
        for path in by_age:
            if total <= self.max_bytes:
                break
            total -= sizes.pop(path)
            path.unlink(missing_ok=True)
