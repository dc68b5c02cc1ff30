"""The one place where backend failures become `StorageError` (ARCHITECTURE rule 3).

`GuardedStore` wraps any `ObjectStore`: `FileNotFoundError` / `FileExistsError` keep their
meaning (callers rely on them), a `TransitError` passes through, and anything else a backend
raises (an `OSError`, a botocore or aiohttp exception, ...) becomes a `StorageError` naming the
operation and the object, with the backend's exception as `__cause__`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import StorageError, TransitError
from .base import Bytes, Durable, ObjectInfo, ObjectStore

__all__ = ["GuardedStore", "guarded"]

T = TypeVar("T")


class GuardedStore(ObjectStore):
    """An `ObjectStore` whose every failure is a `StorageError` (or a missing/existing key)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.remote = inner.remote
        self.copies_puts = inner.copies_puts

    def _call(self, what: str, path: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (FileNotFoundError, FileExistsError, TransitError):
            raise
        except Exception as e:
            where = f"{self.uri}/{path}" if path else self.uri
            raise StorageError(f"cannot {what} {where}: {type(e).__name__}: {e}") from e

    def get(self, path: str) -> bytes:
        """See `ObjectStore.get`."""
        return self._call("read", path, lambda: self.inner.get(path))

    def get_range(self, path: str, start: int, end: int) -> bytes:
        """See `ObjectStore.get_range`."""
        return self._call("read", path, lambda: self.inner.get_range(path, start, end))

    def put(self, path: str, data: Bytes) -> None:
        """See `ObjectStore.put`."""
        self._call("write", path, lambda: self.inner.put(path, data))

    def put_if_absent(self, path: str, data: Bytes) -> None:
        """See `ObjectStore.put_if_absent`."""
        self._call("create", path, lambda: self.inner.put_if_absent(path, data))

    def put_unreferenced(self, path: str, data: Bytes) -> Durable:
        """See `ObjectStore.put_unreferenced` (its `Durable` raises `StorageError` too)."""
        durable = self._call("write", path, lambda: self.inner.put_unreferenced(path, data))
        return lambda: self._call("write", path, durable)

    def put_if_absent_after(self, path: str, data: Bytes, after: Sequence[Durable]) -> None:
        """See `ObjectStore.put_if_absent_after`."""
        self._call("create", path, lambda: self.inner.put_if_absent_after(path, data, after))

    def list(self, prefix: str) -> list[str]:
        """See `ObjectStore.list`."""
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def head(self, path: str) -> ObjectInfo:
        """See `ObjectStore.head`."""
        return self._call("look up", path, lambda: self.inner.head(path))

    def delete(self, path: str) -> None:
        """See `ObjectStore.delete`."""
        self._call("delete", path, lambda: self.inner.delete(path))

    def exists(self, path: str) -> bool:
        """See `ObjectStore.exists`."""
        return self._call("look up", path, lambda: self.inner.exists(path))

    def local_path(self, path: str) -> str | None:
        """See `ObjectStore.local_path`."""
        return self.inner.local_path(path)

    def is_empty(self) -> bool:
        """See `ObjectStore.is_empty`."""
        return self._call("list", "", self.inner.is_empty)


def guarded(store: ObjectStore) -> GuardedStore:
    """`store` wrapped in a `GuardedStore` (once)."""
    return store if isinstance(store, GuardedStore) else GuardedStore(store)
