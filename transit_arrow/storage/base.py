"""The object store contract every backend implements (STYLE 8).

Paths are '/'-separated keys relative to the store's root, never starting with '/'. Backends
raise the builtin `FileNotFoundError` / `FileExistsError`; only the log layer raises
`TransitError`s.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

__all__ = ["Bytes", "ObjectInfo", "ObjectStore"]

Bytes = bytes | bytearray | memoryview
"""What `put` accepts: any contiguous bytes-like object."""


@dataclass(frozen=True)
class ObjectInfo:
    """What `ObjectStore.head` reports about one object."""

    path: str
    size: int
    modified: float | None = None  # POSIX seconds of the last write, when the backend knows


class ObjectStore(abc.ABC):
    """A narrow, flat key/value store of immutable-ish byte objects."""

    #: URI of the store's root, for messages.
    uri: str
    #: Whether each call is a request over a network (S3, or a store this package does not
    #: know): worth running several at once. False for local folders and `memory://`.
    remote: bool = True
    #: Whether `put` keeps a copy of the buffer it is given (the memory store does). When it
    #: does not (a local file is written from it, an S3 body is read from it in place), a large
    #: segment is encoded into a reused buffer, which saves faulting in fresh memory.
    copies_puts: bool = False

    @abc.abstractmethod
    def get(self, path: str) -> bytes:
        """Return the whole object; `FileNotFoundError` if absent."""

    @abc.abstractmethod
    def get_range(self, path: str, start: int, end: int) -> bytes:
        """Return bytes `[start, end)` of the object (shorter if the object is shorter)."""

    @abc.abstractmethod
    def put(self, path: str, data: Bytes) -> None:
        """Create or replace the object atomically: readers see the old or the new bytes."""

    @abc.abstractmethod
    def put_if_absent(self, path: str, data: Bytes) -> None:
        """Create the object atomically; `FileExistsError` if it exists (nothing is changed)."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted child names directly under the folder `prefix` ('' for the root).

        Objects are returned by name, sub-folders as 'name/'. A missing folder lists as empty.
        """

    @abc.abstractmethod
    def head(self, path: str) -> ObjectInfo:
        """Return the object's size; `FileNotFoundError` if absent."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove the object; `FileNotFoundError` if absent."""

    def exists(self, path: str) -> bool:
        """True when the object exists."""
        try:
            self.head(path)
        except FileNotFoundError:
            return False
        return True

    def local_path(self, path: str) -> str | None:
        """A filesystem path holding the object's bytes, when the backend has one."""
        return None

    def is_empty(self) -> bool:
        """True when the store's root holds nothing."""
        return not self.list("")
