"""The object store contract every backend implements (STYLE 8).

Paths are '/'-separated keys relative to the store's root, never starting with '/'. Backends
raise the builtin `FileNotFoundError` / `FileExistsError`; only the log layer raises
`TransitError`s.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bytes", "Durable", "ObjectInfo", "ObjectStore", "already_durable"]

Bytes = bytes | bytearray | memoryview
"""What `put` accepts: any contiguous bytes-like object."""

Durable = Callable[[], None]
"""What `ObjectStore.put_unreferenced` returns: call it to wait until the object is durable
(it raises if the object could not be made durable)."""


def already_durable() -> None:
    """The `Durable` of an object that was durable when its put returned."""


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

    def put_unreferenced(self, path: str, data: Bytes) -> Durable:
        """Store an object nothing refers to yet (a segment before the commit that adds it)
        and return a `Durable`: it returns once the object is durable, or raises.

        Until then the object may be missing or torn after a crash, and a reader may see it
        torn meanwhile: nothing may refer to it before the `Durable` returned (pass it to
        `put_if_absent_after`). Every writer of a given path writes the same bytes (the paths
        of segments name their BLAKE3). The default is `put`, durable when it returns."""
        self.put(path, data)
        return already_durable

    def put_if_absent_after(self, path: str, data: Bytes, after: Sequence[Durable]) -> None:
        """`put_if_absent`, the object appearing only once every `Durable` of `after`
        returned (the objects it refers to are durable); the store may prepare the object
        meanwhile. If one of them raises, nothing is created and the error propagates."""
        for durable in after:
            durable()
        self.put_if_absent(path, data)

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
