"""`memory://` backend: a real, thread-safe in-memory store (the unit-test double)."""

from __future__ import annotations

import threading
import time

from .base import Bytes, ObjectInfo, ObjectStore

__all__ = ["MemoryStore"]

_REGISTRY: dict[str, MemoryStore] = {}
_REGISTRY_LOCK = threading.Lock()


class MemoryStore(ObjectStore):
    """Objects held in a dict; `MemoryStore.named(n)` returns one shared store per name."""

    remote = False
    copies_puts = True

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        self._objects: dict[str, bytes] = {}
        self._modified: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryStore:
        """The process-wide store for `memory://name` (so a log can be reopened in-process)."""
        with _REGISTRY_LOCK:
            store = _REGISTRY.get(name)
            if store is None:
                store = _REGISTRY[name] = cls(f"memory://{name}")
            return store

    def get(self, path: str) -> bytes:
        with self._lock:
            try:
                return self._objects[path]
            except KeyError:
                raise FileNotFoundError(path) from None

    def get_range(self, path: str, start: int, end: int) -> bytes:
        return self.get(path)[start:end]

    def put(self, path: str, data: Bytes) -> None:
        with self._lock:
            self._objects[path] = bytes(data)
            self._modified[path] = time.time()

    def put_if_absent(self, path: str, data: Bytes) -> None:
        with self._lock:
            if path in self._objects:
                raise FileExistsError(path)
            self._objects[path] = bytes(data)
            self._modified[path] = time.time()

    def list(self, prefix: str) -> list[str]:
        base = prefix.strip("/")
        base = base + "/" if base else ""
        out: set[str] = set()
        with self._lock:
            for key in self._objects:
                if key.startswith(base):
                    rest = key[len(base) :]
                    head, sep, _ = rest.partition("/")
                    out.add(head + "/" if sep else head)
        return sorted(out)

    def head(self, path: str) -> ObjectInfo:
        with self._lock:
            try:
                return ObjectInfo(path, len(self._objects[path]), self._modified.get(path))
            except KeyError:
                raise FileNotFoundError(path) from None

    def delete(self, path: str) -> None:
        with self._lock:
            try:
                del self._objects[path]
                self._modified.pop(path, None)
            except KeyError:
                raise FileNotFoundError(path) from None
