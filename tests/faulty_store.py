"""A fault-injecting `ObjectStore` wrapper for the fault tests and the S3 benchmark.

Not a test module (no `test_` prefix). `FaultyStore` wraps a real store (memory, file or S3:
never a mock, STYLE 8), records every request it forwards, and fails the requests its armed
`Fault`s match. Pass it to `transit_arrow.open(store, local_dir=...)`.

Fault kinds model what a network or a server does to one request:

- `timeout`: the request never reaches the store; the call raises `TimeoutError`.
- `error`: the server answers "500 Internal Server Error"; nothing changes; `OSError`.
- `drop`: the connection drops mid-request. A `put` leaves a *partial* object (the first half
  of the bytes) behind; a `put_if_absent` creates nothing (a conditional create is atomic on
  S3 and on the local backend); reads return nothing. The call raises `ConnectionResetError`.
- `lost_ack`: the request is carried out in full, but its answer is lost, so the call raises
  `TimeoutError` (the ambiguous case: a commit *was* created although the caller saw a failure).

A request is described by its operation and path; `Fault.match` selects requests and `skip`
/ `times` pick which of the matching ones fail (`times=None`: every one from then on, i.e. an
outage).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from transit_arrow.storage import ObjectInfo, ObjectStore
from transit_arrow.storage.base import Bytes

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "FaultyStore",
    "InjectedFault",
    "Request",
    "key_is",
    "path_contains",
]

FaultKind = Literal["timeout", "error", "drop", "lost_ack"]
FAULT_KINDS: tuple[FaultKind, ...] = ("timeout", "error", "drop", "lost_ack")
WRITES = frozenset({"put", "put_if_absent", "delete"})

T = TypeVar("T")

_DIGEST_RE = re.compile(r"-[0-9a-f]{16}\.parquet$")


@dataclass(frozen=True)
class Request:
    """One call made on the store."""

    op: str  # get, get_range, put, put_if_absent, list, head, delete
    path: str

    @property
    def key(self) -> tuple[str, str]:
        """The request with the digest part of segment names blanked, so that the same step
        of a scenario has the same key in every run even if its bytes differ."""
        return self.op, _DIGEST_RE.sub("-*.parquet", self.path)

    def __str__(self) -> str:
        return f"{self.op} {self.path}"


class InjectedFault:
    """Marker mixin of every exception the wrapper raises (they stay `OSError`s)."""


class InjectedTimeout(InjectedFault, TimeoutError):
    """A request that timed out (or whose answer was lost)."""


class InjectedServerError(InjectedFault, OSError):
    """A 500 answer."""


class InjectedDrop(InjectedFault, ConnectionResetError):
    """A connection dropped mid-request."""


@dataclass
class Fault:
    """Fail requests matching `match`: the `skip`-th one (0-based) and the next `times - 1`."""

    kind: FaultKind
    match: Callable[[Request], bool] = lambda request: True
    skip: int = 0
    times: int | None = 1
    seen: int = 0
    fired: list[Request] = field(default_factory=list)

    def fires(self, request: Request) -> bool:
        """Count `request` if it matches; True when this one must fail."""
        if not self.match(request):
            return False
        index = self.seen
        self.seen += 1
        if index < self.skip or (self.times is not None and index >= self.skip + self.times):
            return False
        self.fired.append(request)
        return True


def key_is(key: tuple[str, str]) -> Callable[[Request], bool]:
    """A matcher for requests with this `Request.key` (pick one of them with `Fault.skip`)."""
    return lambda request: request.key == key


def path_contains(op: str, fragment: str) -> Callable[[Request], bool]:
    """A matcher for `op` requests whose path contains `fragment` (e.g. '/commits/')."""
    return lambda request: request.op == op and fragment in request.path


class FaultyStore(ObjectStore):
    """Forward every call to `inner`, recording it, and fail the ones armed faults select."""

    def __init__(self, inner: ObjectStore, faults: list[Fault] | None = None) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.remote = inner.remote
        self.copies_puts = inner.copies_puts
        self.faults: list[Fault] = list(faults or [])
        self.requests: list[Request] = []
        self.injected: list[tuple[Request, FaultKind]] = []
        self._lock = threading.Lock()

    def arm(self, fault: Fault) -> Fault:
        """Add a fault (it counts requests from now on) and return it."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def disarm(self) -> None:
        """Remove every fault: the store behaves like `inner` again."""
        with self._lock:
            self.faults.clear()

    def reset_log(self) -> list[Request]:
        """Return the requests recorded so far and start a new record."""
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def counts(self) -> Counter[str]:
        """How many requests of each operation were recorded."""
        with self._lock:
            return Counter(r.op for r in self.requests)

    def _fault_for(self, request: Request) -> FaultKind | None:
        with self._lock:
            self.requests.append(request)
            for fault in self.faults:
                if fault.fires(request):
                    self.injected.append((request, fault.kind))
                    return fault.kind
        return None

    def _call(self, request: Request, run: Callable[[], T], partial: Callable[[], None]) -> T:
        kind = self._fault_for(request)
        if kind is None:
            return run()
        if kind == "timeout":
            raise InjectedTimeout(f"injected timeout: {request}")
        if kind == "error":
            raise InjectedServerError(f"injected 500 Internal Server Error: {request}")
        if kind == "drop":
            partial()
            raise InjectedDrop(f"injected connection reset mid-request: {request}")
        with contextlib.suppress(OSError):  # the answer, success or failure, is lost anyway
            run()
        raise InjectedTimeout(f"injected timeout after the request was carried out: {request}")

    @staticmethod
    def _nothing() -> None:
        return None

    # --- the contract ---------------------------------------------------------------------

    def get(self, path: str) -> bytes:
        return self._call(Request("get", path), lambda: self.inner.get(path), self._nothing)

    def get_range(self, path: str, start: int, end: int) -> bytes:
        return self._call(
            Request("get_range", path),
            lambda: self.inner.get_range(path, start, end),
            self._nothing,
        )

    def put(self, path: str, data: Bytes) -> None:
        view = memoryview(data)
        self._call(
            Request("put", path),
            lambda: self.inner.put(path, view),
            lambda: self.inner.put(path, view[: len(view) // 2]),
        )

    def put_if_absent(self, path: str, data: Bytes) -> None:
        self._call(
            Request("put_if_absent", path),
            lambda: self.inner.put_if_absent(path, data),
            self._nothing,
        )

    def list(self, prefix: str) -> list[str]:
        return self._call(Request("list", prefix), lambda: self.inner.list(prefix), self._nothing)

    def head(self, path: str) -> ObjectInfo:
        return self._call(Request("head", path), lambda: self.inner.head(path), self._nothing)

    def delete(self, path: str) -> None:
        self._call(Request("delete", path), lambda: self.inner.delete(path), self._nothing)

    def local_path(self, path: str) -> str | None:
        # A faithful wrapper: a file store's readers still read its files directly.
        return self.inner.local_path(path)
