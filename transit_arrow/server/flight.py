"""The Arrow Flight server of `transit serve`: one log's engine behind Flight RPCs (DESIGN §11).

- **DoPut** appends: each record batch of an upload is one atomic `Stream.append`. A worker
  thread appends while the call keeps receiving, folding the small batches that arrived
  meanwhile into one engine call; a `local` upload appends at `memory` while a syncer thread
  group-commits what was appended (see `_Upload`). The call answers with one `ack` message per
  group, `{"first_offset", "last_offset", "durability", "batches"}`, covering the next
  `batches` batches in order, sent once they reached that durability. A failure is sent as
  `{"error": {...}}` on the same channel and ends the call with that error; the batches
  acknowledged before it stay appended.
- **DoGet** reads a range of a stream's replay as record batches, or follows the stream live
  (`follow`).
- **DoAction** runs the log operations named in `protocol.ACTIONS`.
- **ListFlights / GetFlightInfo / GetSchema** describe streams with their schemas.

Every call is authenticated by a bearer token before it reaches a handler, and every failure
maps to a stable code (`protocol.ERROR_CODES`).

Backpressure: the batches a DoPut has received but not yet appended are bounded in bytes, so
gRPC flow control slows a fast uploader down; a connection has at most
`max_inflight_appends` uploads in progress (others wait, then are refused `unavailable`);
DoGet streams are pulled by gRPC one batch at a time, so a slow reader holds at most about one
row group in server memory.

Shutdown: `drain()` refuses new uploads, appends and acknowledges what in-flight uploads have
already received, refuses the rest (`unavailable`), and ends live tails; the caller then closes
the log, which seals the heads.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import importlib.metadata
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any, ParamSpec, TypeVar, cast

import pyarrow as pa
import pyarrow.flight as flight

from ..client.protocol import (
    ACTIONS,
    AUTH_HEADER,
    PROTOCOL_VERSION,
    TABLE_ACTIONS,
    AppendCommand,
    Body,
    ReadTicket,
    UnauthorizedError,
    UnavailableError,
    code_for,
    encode_error,
    json_bytes,
    schema_from_text,
    schema_to_text,
    stream_of_path,
    table_to_bytes,
)
from ..engine.tail import Tail
from ..engine.writer import writer_for
from ..errors import (
    AlreadyExistsError,
    CommitConflictError,
    InvalidInputError,
    StreamNotFoundError,
    TransitError,
)
from ..integrity import Checkpoint
from ..log import Log
from ..query import QueryError
from ..segments.decoded import DecodedCache
from ..stream import Ack, Stream
from ..typing import Durability
from ..view import StreamView

__all__ = [
    "READ_CACHE_BYTES",
    "TransitFlightServer",
    "default_read_cache_bytes",
    "retain_freed_memory",
]

_log = logging.getLogger("transit_arrow.server")

P = ParamSpec("P")
R = TypeVar("R")

_GROUP_RECORDS = 1 << 16  # at most this many records ...
_GROUP_BYTES = 8 << 20  # ... or bytes per engine append of folded upload batches
_LARGE_BATCH = 1 << 20  # bytes from which a batch is appended as received, not folded
_INBOX_BYTES = 64 << 20  # received-but-not-appended bytes per upload (backpressure)
_UNSYNCED_BYTES = 64 << 20  # a `local` upload's appender waits for its syncer beyond this
_TAIL_SLICE = 1.0  # a live tail checks for a cancelled call at least this often, seconds
_DRAIN_POLL = 0.05
_READ_AHEAD = 2  # batches a DoGet decodes ahead of the one being sent
_EAGER_READ_AHEAD = 1 << 20  # a first batch of this many bytes starts the read-ahead at once


def retain_freed_memory() -> bool:
    """Make pyarrow's jemalloc pool keep the memory it frees for reuse rather than hand it
    back to the kernel within a second; for a server process, called before it starts
    threads (`transit serve` does).

    Otherwise every call faults its buffers in again, and the kernel zeroes each page: a
    DoGet of 1 M records (273 MB decoded) took about 100,000 page faults and 0.1-0.3 s of
    kernel time, a sixth to a third of the server's CPU for it. This sets the decay of the
    jemalloc arenas created from now on (those of the threads that serve calls) to "never":
    the process keeps the memory of its busiest moment (bounded by the server's limits on
    uploads and read-ahead) and reuses it; it does not shrink again while the process runs
    (`MemoryPool.release_unused` does not return these pages). Returns False, changing
    nothing, when the pool is not jemalloc.
    """
    if pa.default_memory_pool().backend_name != "jemalloc":
        return False
    pa.jemalloc_set_decay_ms(-1)
    return True


def _wire(exc: BaseException) -> flight.FlightError:
    """The Flight error (with its stable code) that reports `exc` to the client."""
    if isinstance(exc, flight.FlightError):
        return exc
    code = "invalid_request" if isinstance(exc, QueryError) else code_for(exc)
    message = str(exc) or type(exc).__name__
    if code == "internal":
        message = f"internal error: {type(exc).__name__}: {message}"
    return encode_error(code, type(exc).__name__, message)


def _reported(exc: BaseException) -> flight.FlightError:
    """`_wire(exc)`, logging the traceback of unexpected errors (code `internal`)."""
    error = _wire(exc)
    if isinstance(error, flight.FlightInternalError) and error is not exc:
        _log.error("internal error", exc_info=exc)
    return error


def _mapped(method: Callable[P, R]) -> Callable[P, R]:
    """Run a handler with every exception mapped to its Flight error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as e:
            raise _reported(e) from e

    return wrapper


def _guarded(batches: Iterator[Any]) -> Iterator[Any]:
    """A DoGet generator whose exceptions reach the client with their stable code."""
    try:
        yield from batches
    except Exception as e:
        raise _reported(e) from e


class _BearerAuth(flight.ServerMiddlewareFactory):
    """Refuses every call whose `authorization` header is not `Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def start_call(
        self, info: flight.CallInfo, headers: dict[str, list[str] | list[bytes]]
    ) -> flight.ServerMiddleware | None:
        values = headers.get(AUTH_HEADER) or []
        if not values:
            raise _wire(
                UnauthorizedError(
                    f"no bearer token: send the header '{AUTH_HEADER}: Bearer <token>'"
                )
            )
        given = values[0]
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        # Constant time whatever the content; only the length can leak.
        if len(values) != 1 or not hmac.compare_digest(given_bytes, self._expected):
            raise _wire(UnauthorizedError("wrong bearer token"))
        return None


class _Admission:
    """At most `limit` uploads in progress per connection (gRPC peer)."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self._cond = threading.Condition()
        self._count: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, peer: str) -> Iterator[None]:
        deadline = time.monotonic() + self.wait
        with self._cond:
            while self._count.get(peer, 0) >= self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UnavailableError(
                        f"{self.limit} uploads are already in progress on this connection; "
                        "wait for their acks (or open another connection) and retry"
                    )
                self._cond.wait(left)
            self._count[peer] = self._count.get(peer, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._count[peer] -= 1
                if not self._count[peer]:
                    del self._count[peer]
                self._cond.notify_all()


class _Inbox:
    """Batches an upload received and has not appended yet, bounded in bytes.

    One receiver puts, one appender takes. The handoff is a C-level queue and two byte
    counters with one writer each, so a batch costs no lock round trip.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._queue: queue.SimpleQueue[tuple[pa.RecordBatch, int] | None] = queue.SimpleQueue()
        self._put_bytes = 0  # written by the receiver only
        self._taken_bytes = 0  # written by the appender only
        self._room = threading.Event()  # the appender took some: the receiver may go on
        self._carry: tuple[pa.RecordBatch, int] | None = None  # taken, beyond a group's limits
        self.done = False  # the appender saw the end of the upload
        self.stopped = False  # the appender stopped: refuse further batches

    def put(self, batch: pa.RecordBatch) -> bool:
        """Queue a batch (waiting while the inbox is full); False once the appender stopped."""
        while self._put_bytes - self._taken_bytes >= self._max_bytes and not self.stopped:
            self._room.clear()
            if self._put_bytes - self._taken_bytes < self._max_bytes:
                break
            self._room.wait(_DRAIN_POLL)
        if self.stopped:
            return False
        # Not `nbytes`, which walks every buffer's referenced range (tens of microseconds a
        # batch): a received batch owns its buffers, so their sizes are what it holds.
        size = batch.get_total_buffer_size()
        self._put_bytes += size
        self._queue.put((batch, size))
        return True

    def end(self) -> None:
        """No more batches will come."""
        self._queue.put(None)

    def stop(self) -> None:
        """Refuse further batches (the upload failed or the appender finished)."""
        self.stopped = True
        self._room.set()

    def take(self, wait: float | None) -> tuple[list[pa.RecordBatch], int]:
        """The queued batches, up to one group's limits (waiting up to `wait` for one), and
        their size in bytes."""
        if self.done:
            return [], 0
        first = self._carry
        self._carry = None
        if first is None:
            try:
                first = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                return [], 0
            if first is None:
                self.done = True
                return [], 0
        group, records, size = [first[0]], first[0].num_rows, first[1]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.done = True
                break
            batch, nbytes = item
            if records + batch.num_rows > _GROUP_RECORDS or size + nbytes > _GROUP_BYTES:
                self._carry = item
                break
            group.append(batch)
            records += batch.num_rows
            size += nbytes
        self._taken_bytes += size
        self._room.set()
        return group, size

    def empty(self) -> bool:
        """Nothing is queued (the end of the upload may be)."""
        return self._carry is None and self._queue.empty()


class _Job:
    """A function running on one of `_Workers`' threads; `join()` waits until it returned."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)

    def is_alive(self) -> bool:
        return not self.done.is_set()


class _Workers:
    """Threads kept for reuse by uploads and read-aheads, one job at a time each.

    A thread that allocates gets a jemalloc arena of its own (pyarrow's pool), and a server
    keeps the memory its arenas free (`retain_freed_memory`). A new thread per upload spread
    what one upload holds over every arena in turn: `transit serve` grew by about 330 MB of
    resident memory with each of its first uploads of 1 M records (273 MB), towards the sum
    of every arena's peak. Reused threads allocate from the arenas that already hold that
    memory. Threads are made when every one is busy, and stay (as many as ever ran at once).
    Not a `ThreadPoolExecutor`: its threads are joined at interpreter exit, and a read-ahead
    whose call was never finished would then hold the exit; these are daemon threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job]] = []
        self._pid = os.getpid()

    def start(self, fn: Callable[[], None], name: str) -> _Job:
        """Run `fn` on an idle thread (a new one when none is idle)."""
        job = _Job(fn)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are not here
                self._idle, self._pid = [], os.getpid()
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put(job)
        return job

    def _serve(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = inbox.get()
            try:
                job.fn()
            except BaseException:  # the jobs report their own errors; never lose the thread
                _log.exception("a server worker's job failed")
            finally:
                job.done.set()
            with self._lock:
                self._idle.append(inbox)


_WORKERS = _Workers()


class _Upload:
    """One DoPut: the appender thread and what it has acknowledged.

    A `local` upload (not an idempotent producer's) appends at `memory`, and a syncer thread
    makes what was appended durable with one group commit (`Writer.sync_through`) after
    another, each covering everything appended until it starts, and acknowledges those
    batches as `local` only then: appending the next batches overlaps writing and syncing
    the previous ones, and a stream of batches costs a few `fdatasync` calls, not one each.
    """

    def __init__(
        self,
        server: TransitFlightServer,
        stream: Stream,
        command: AppendCommand,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        self.server = server
        self.stream = stream
        self.command = command
        self.writer = writer
        self.inbox = _Inbox(_INBOX_BYTES)
        self.error: BaseException | None = None
        self.sequence = command.sequence
        durability = command.durability or stream.catalog.options.durability
        self.deferred = durability == "local" and command.sequence is None
        self.level: Durability = "memory" if self.deferred else durability
        self.pending: dict[str, Any] | None = None  # an ack not sent yet
        # Deferred (`local`) uploads: appended at `memory`, not yet being synced.
        self.thread: _Job | None = None  # the appender, from the second batch on
        self.syncer: _Job | None = None
        self.sync_cond = threading.Condition()
        self.unsynced: list[int] = []  # [first offset, last offset, batches]
        self.unsynced_bytes = 0
        self.appended_all = False  # the appender has stopped appending
        self.sync_error: BaseException | None = None

    def _ack(self, ack: Ack, batches: int) -> None:
        """Acknowledge `batches` batches, folded into the pending ack when they continue it."""
        pending = self.pending
        if (
            pending is not None
            and pending["last_offset"] + 1 == ack.first_offset
            and pending["durability"] == ack.durability
        ):
            pending["last_offset"] = ack.last_offset
            pending["batches"] += batches
            return
        self.send_ack()
        self.pending = {**ack._asdict(), "batches": batches}

    def send_ack(self) -> None:
        """Send the pending ack (acks are held back only while more batches are queued)."""
        if self.pending is not None:
            message, self.pending = self.pending, None
            self.writer.write(pa.py_buffer(json_bytes(message)))

    def _sync_pending(self) -> bool:
        """Make what was appended at `memory` for a `local` upload durable (one group commit),
        then acknowledge it as `local`; False when there was nothing to sync."""
        with self.sync_cond:
            if not self.unsynced:
                return False
            first, last, batches = self.unsynced
            self.unsynced, self.unsynced_bytes = [], 0
            self.sync_cond.notify_all()  # the appender may go on
        with self.server.appending():
            writer_for(self.stream.catalog, self.stream.name).sync_through(last)
        self._ack(Ack(first, last, "local"), batches)
        self.send_ack()
        return True

    def _sync_loop(self) -> None:
        """The syncer thread: sync and acknowledge until the appender is done."""
        try:
            while True:
                with self.sync_cond:
                    while not self.unsynced and not self.appended_all:
                        self.sync_cond.wait()
                if not self._sync_pending():
                    return  # nothing appended and the appender is done
        except BaseException as e:
            self.sync_error = e
            self.inbox.stop()  # append nothing more
            with self.sync_cond:
                self.sync_cond.notify_all()

    def _finish_syncs(self) -> None:
        """Sync and acknowledge every batch appended so far (the syncer's last round)."""
        if self.syncer is None:
            self._sync_pending()
            return
        with self.sync_cond:
            self.appended_all = True
            self.sync_cond.notify_all()
        self.syncer.join()

    def _append(self, batches: list[pa.RecordBatch], size: int) -> None:
        # Folded small batches: one copy into contiguous columns, in one call that releases
        # the GIL (the engine would otherwise combine each column of a many-chunk table).
        data: Any = batches[0]
        if len(batches) > 1:
            data = pa.Table.from_batches(batches).combine_chunks()
        if self.command.input == "rows":
            rows = data.to_pylist()
            data = rows[0] if len(rows) == 1 else rows  # one dict: the engine's fast path
        extra: dict[str, Any] = {}
        if self.sequence is not None:
            extra = {"producer": self.command.producer, "sequence": self.sequence}
        with self.server.appending():
            ack: Ack = self.stream.append(data, durability=self.level, **extra)
        if self.sequence is not None:
            self.sequence += len(batches)
        if not self.deferred:
            self._ack(ack, len(batches))
            return
        with self.sync_cond:
            if self.unsynced:
                self.unsynced[1:] = [ack.last_offset, self.unsynced[2] + len(batches)]
            else:
                self.unsynced = [ack.first_offset, ack.last_offset, len(batches)]
            self.unsynced_bytes += size
            self.sync_cond.notify_all()
            while (
                self.syncer is not None
                and self.unsynced_bytes >= _UNSYNCED_BYTES
                and self.sync_error is None
            ):
                self.sync_cond.wait()  # the syncer is behind: do not run further ahead

    def _append_group(self, group: list[pa.RecordBatch], size: int) -> None:
        # Batches of one idempotent producer are appended one by one (a sequence number
        # names one batch), and so are large batches (folding them would only copy them).
        if len(group) == 1 or self.sequence is not None or size >= _LARGE_BATCH * len(group):
            for batch in group:
                self._append([batch], size // len(group))
            return
        try:
            self._append(group, size)
        except TransitError:
            # Each batch is atomic on its own: find out which ones are acceptable.
            for batch in group:
                self._append([batch], size // len(group))

    def _send_error(self, exc: BaseException) -> None:
        """Tell the client on the ack channel (before the call's status) that it failed,
        after acknowledging the batches appended before the failure once they are durable."""
        with contextlib.suppress(Exception):
            self._finish_syncs()
        with contextlib.suppress(Exception):
            self.send_ack()
            detail = _wire(exc).extra_info or json_bytes(
                {"code": "unavailable", "error": type(exc).__name__, "message": str(exc)}
            )
            self.writer.write(pa.py_buffer(b'{"error":' + detail + b"}"))

    def _run(self) -> None:
        try:
            while not self.inbox.done and not self.inbox.stopped:
                draining = self.server.draining.is_set()
                group, size = self.inbox.take(None if draining else _DRAIN_POLL)
                if group:
                    self._append_group(group, size)
                    if not self.deferred and self.inbox.empty():
                        self.send_ack()  # acks wait only while more batches are queued
                elif draining and not self.inbox.done:
                    raise UnavailableError(
                        "the server is shutting down: the batches acknowledged so far are "
                        "appended, later ones were not (resend them after the restart)"
                    )
            self._finish_syncs()
            if self.sync_error is not None:
                raise self.sync_error
            self.send_ack()
        except BaseException as e:
            self.error = e
            self._send_error(e)
        finally:
            self.inbox.stop()

    def receive(self, reader: flight.MetadataRecordBatchReader) -> None:
        """Append what the client uploads, acknowledging as it goes.

        The first batch is appended on the call's thread (a one-batch upload, which is what
        an `append` call sends, needs no other thread); from the second one on, an appender
        thread appends while this thread keeps receiving.
        """
        batches = (chunk.data for chunk in reader if chunk.data is not None)
        first = next(batches, None)
        if first is None:
            return
        try:
            self._append_group([first], 0)
            self._sync_pending()
            self.send_ack()
        except BaseException as e:
            self._send_error(e)
            raise
        batch = next(batches, None)
        if batch is None:
            return
        # While the rest streams in, the log's sealer leaves the heads it fills unsealed (up
        # to a bound), sealing them once the upload ends: see `Writer.defer_seals`.
        deferring = writer_for(self.stream.catalog, self.stream.name).defer_seals()
        if self.deferred:
            self.syncer = _WORKERS.start(self._sync_loop, "transit-append-sync")
        with deferring:
            appender = self.thread = _WORKERS.start(self._run, "transit-append")
            try:
                while batch is not None and self.inbox.put(batch):
                    batch = next(batches, None)
                self.inbox.end()
            except BaseException:
                self.inbox.stop()  # the upload broke: append nothing more of it
                raise
            finally:
                appender.join()
        if self.error is not None:
            raise self.error


#: The read cache of a server that is not told its size: at most this many bytes ...
READ_CACHE_BYTES = 512_000_000
#: ... and at most this fraction of the machine's memory.
READ_CACHE_SHARE = 8


def default_read_cache_bytes() -> int:
    """The read cache a server has unless told otherwise: 512 MB, or an eighth of the
    machine's physical memory when that is less (docs/flight.md, "Read cache")."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the fixed size
        return READ_CACHE_BYTES
    return max(0, min(READ_CACHE_BYTES, physical // READ_CACHE_SHARE))


class TransitFlightServer(flight.FlightServerBase):
    """Serves one open `Log` over Arrow Flight (see the module docstring and docs/flight.md).

    It starts listening when constructed; `port` is the bound port (useful with port 0).

    Args:
        log: the open log to serve (the caller closes it after `drain()`).
        location: `grpc://host:port` (or `grpc+tls://host:port` with `tls_certificates`).
        token: the bearer token every call must carry.
        tls_certificates: `[(cert_pem, key_pem)]` to serve TLS.
        max_inflight_appends: uploads in progress per connection; more wait up to
            `admission_wait` seconds, then are refused `unavailable`.
        read_cache_bytes: reads (DoGet) keep the row groups they decode, up to this many
            bytes, and later reads of the same segments reuse them (`segments.decoded`; set
            on `log`, whose own streaming reads use it too); None (default):
            `default_read_cache_bytes()`; 0: every read decodes.
    """

    def __init__(
        self,
        log: Log,
        location: str,
        *,
        token: str,
        tls_certificates: list[tuple[str, str]] | None = None,
        max_inflight_appends: int = 8,
        admission_wait: float = 30.0,
        read_cache_bytes: int | None = None,
    ) -> None:
        if not token:
            raise InvalidInputError("the server needs a non-empty token")
        if max_inflight_appends < 1:
            raise InvalidInputError("max_inflight_appends must be >= 1")
        if read_cache_bytes is None:
            read_cache_bytes = default_read_cache_bytes()
        if read_cache_bytes < 0:
            raise InvalidInputError("read_cache_bytes must be >= 0")
        self.log = log
        if read_cache_bytes:
            log.catalog.decoded = DecodedCache(read_cache_bytes)
        self.draining = threading.Event()
        self._appends = threading.Condition()  # engine appends in progress, and closing
        self._active_appends = 0
        self._closing = False
        self._admission = _Admission(max_inflight_appends, admission_wait)
        self._uploads: set[_Upload] = set()
        self._uploads_lock = threading.Lock()
        self._query_lock = threading.Lock()  # Log.sql's connection is one thread at a time
        # Each handler reads (and checks) its body's fields and returns what to run, so a
        # request with a bad or unknown field is refused before it changes anything.
        self._actions: dict[str, Callable[[Body], Callable[[], Any]]] = {
            "ping": lambda body: self._ping,
            "create_stream": self._create_stream,
            "stream_info": self._stream_info,
            "streams": lambda body: self.log.streams,
            "branch": self._branch,
            "merge": self._merge,
            "lineage": lambda body: self.log.lineage,
            "children": lambda body: functools.partial(self.log.children, body.string("name")),
            "ancestry": lambda body: self._on_stream(body, Stream.ancestry),
            "commits": self._commits,
            "checkpoint": self._checkpoint,
            "checkpoints": lambda body: functools.partial(
                self.log.checkpoints, body.opt_str("name")
            ),
            "verify": self._verify,
            "flush": lambda body: self._on_stream(body, lambda s: {"generation": s.flush()}),
            "sql": self._sql,
            "materialize": self._materialize,
            "materialization": lambda body: functools.partial(self._mv_info, body.string("name")),
            "materializations": lambda body: self.log.materializations,
            "refresh": self._refresh,
            "materialization_read": self._mv_read,
            "cursor": lambda body: functools.partial(
                self._cursor_info, body.string("name"), body.string("stream")
            ),
            "commit_cursor": self._commit_cursor,
            "cursors": lambda body: self.log.cursors,
        }
        assert set(self._actions) == set(ACTIONS), "protocol.ACTIONS and handlers disagree"
        super().__init__(
            location,
            tls_certificates=tls_certificates,
            middleware={"auth": _BearerAuth(token)},
        )

    # --- lifecycle -------------------------------------------------------------------------

    def _check_serving(self) -> None:
        if self.draining.is_set():
            raise UnavailableError("the server is shutting down; retry after it restarts")

    @contextlib.contextmanager
    def appending(self) -> Iterator[None]:
        """Around each engine append: refused once `drain()` has finished (the log closes)."""
        with self._appends:
            if self._closing:
                raise UnavailableError("the server is shutting down: not appended; resend it")
            self._active_appends += 1
        try:
            yield
        finally:
            with self._appends:
                self._active_appends -= 1
                self._appends.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Refuse new calls, finish in-flight appends, end live tails.

        Uploads append and acknowledge the batches they have received, then end with
        `unavailable`; once this returns, every append is refused, so the caller can close
        the log. Returns False when some append was still running after `timeout` seconds.
        """
        self.draining.set()
        deadline = time.monotonic() + timeout
        while True:
            with self._uploads_lock:
                busy = [u.thread for u in self._uploads if u.thread and u.thread.is_alive()]
            left = deadline - time.monotonic()
            if not busy or left <= 0:
                break
            busy[0].join(min(_DRAIN_POLL, left))
        with self._appends:
            while self._active_appends and time.monotonic() < deadline:
                self._appends.wait(max(0.0, deadline - time.monotonic()))
            self._closing = True
            return not busy and not self._active_appends

    # --- helpers ---------------------------------------------------------------------------

    def _view(self, ticket: ReadTicket) -> Stream | StreamView:
        stream = self.log.stream(ticket.stream)
        if ticket.generation is not None:
            return stream.at(generation=ticket.generation)
        if ticket.checkpoint is not None:
            return stream.at(Checkpoint.from_dict(ticket.checkpoint))
        if ticket.as_of is not None:
            return stream.as_of(ticket.as_of)
        return stream

    @staticmethod
    def _info(readable: Stream | StreamView) -> dict[str, Any]:
        return {
            "name": readable.name,
            "next_offset": readable.next_offset,
            "generation": readable.generation,
            "root": readable.root,
            "schema": schema_to_text(readable.schema),
        }

    @staticmethod
    def _project(schema: pa.Schema, columns: list[str] | None) -> pa.Schema:
        if columns is None:
            return schema
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise InvalidInputError(f"no column(s) {unknown}; the columns are {schema.names}")
        return pa.schema([schema.field(c) for c in columns])

    def _flight_info(self, ticket: ReadTicket, descriptor: flight.FlightDescriptor) -> Any:
        view = self._view(ticket)
        schema = self._project(view.schema, ticket.columns)
        start = ticket.start or 0
        end = view.next_offset if ticket.end is None else min(ticket.end, view.next_offset)
        records = -1 if ticket.follow else max(0, end - start)
        endpoint = flight.FlightEndpoint(ticket.to_ticket(), [])
        return flight.FlightInfo(schema, descriptor, [endpoint], records, -1)

    @staticmethod
    def _ticket_of(descriptor: flight.FlightDescriptor) -> ReadTicket:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            return ReadTicket(stream=stream_of_path(descriptor.path))
        body = Body(descriptor.command, "descriptor")
        ticket = ReadTicket.from_body(body)
        body.done()
        return ticket

    # --- Flight RPCs -----------------------------------------------------------------------

    @_mapped
    def list_flights(
        self, context: flight.ServerCallContext, criteria: str | bytes | None
    ) -> Iterator[Any]:
        """One FlightInfo per stream (whose name starts with `criteria`, when given)."""
        prefix = criteria.decode() if isinstance(criteria, bytes) else criteria or ""
        names = [str(n) for n in self.log.streams().column("name").to_pylist()]
        return iter(
            [
                self._flight_info(ReadTicket(stream=name), flight.FlightDescriptor.for_path(name))
                for name in names
                if name.startswith(prefix)
            ]
        )

    @_mapped
    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> Any:
        """The schema, size and ticket of a stream (a path) or of a read (a ticket command)."""
        return self._flight_info(self._ticket_of(descriptor), descriptor)

    @_mapped
    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> Any:
        """The schema a DoGet of this descriptor's ticket returns."""
        ticket = self._ticket_of(descriptor)
        return flight.SchemaResult(self._project(self._view(ticket).schema, ticket.columns))

    @_mapped
    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        """Append each uploaded batch atomically; acknowledge on the metadata channel."""
        command = AppendCommand.from_descriptor(descriptor)
        self._check_serving()
        with self._admission.slot(context.peer()):
            try:
                stream = self.log.stream(command.stream)
            except StreamNotFoundError:
                if not command.create:
                    raise
                try:
                    stream = self.log.create_stream(command.stream)
                except AlreadyExistsError:
                    stream = self.log.stream(command.stream)
            upload = _Upload(self, stream, command, writer)
            with self._uploads_lock:
                self._check_serving()
                self._uploads.add(upload)
            try:
                upload.receive(reader)
            finally:
                with self._uploads_lock:
                    self._uploads.discard(upload)

    @_mapped
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> Any:
        """A range of a stream's replay, or (`follow`) its records as they are appended."""
        request = ReadTicket.from_ticket(ticket)
        self._check_serving()
        view = self._view(request)
        if request.follow:
            assert isinstance(view, Stream)
            schema = self._project(view.schema, request.columns)
            follow = self._follow(context, view, request, schema)
            return flight.GeneratorStream(schema, _guarded(follow))
        reader = view.reader(request.start, request.end, request.columns)
        return flight.GeneratorStream(reader.schema, _guarded(self._read(reader)))

    def _read(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in _read_ahead(iter(reader)):
            if self.draining.is_set():
                raise UnavailableError(
                    "the server is shutting down; read the rest after it restarts"
                )
            yield batch

    def _follow(
        self,
        context: flight.ServerCallContext,
        stream: Stream,
        request: ReadTicket,
        schema: pa.Schema,
    ) -> Iterator[tuple[pa.RecordBatch, pa.Buffer]]:
        """Batches with `{"next": offset}`, then an empty batch saying why the tail ended."""
        position, end, columns = request.start or 0, request.end, request.columns

        def stop() -> bool:
            return self.draining.is_set() or context.is_cancelled()

        read_columns = None if columns is None else list(dict.fromkeys([*columns, "_offset"]))
        reason = "end"
        if end is None or position < end:
            reason = "timeout"
            durability = request.durability or self.log.catalog.options.durability
            tail = _tail(stream, position, read_columns, (request.timeout, durability), stop)
            for batch in tail:
                if stop():
                    break
                first = batch.column("_offset")[0].as_py()  # offsets are dense in a replay
                if end is not None:
                    batch = batch.slice(0, max(0, end - first))
                if columns is not None:
                    batch = batch.select(columns)
                if not batch.schema.equals(schema):
                    reason = "schema"  # the stream gained a column: the client asks again
                    break
                if batch.num_rows:
                    position = first + batch.num_rows
                    yield batch, pa.py_buffer(json_bytes({"next": position}))
                if end is not None and position >= end:
                    reason = "end"
                    break
        if self.draining.is_set():
            raise UnavailableError(
                f"the server is shutting down; resume the tail from offset {position}"
            )
        marker = {"next": position, "end": reason}
        yield pa.RecordBatch.from_pylist([], schema=schema), pa.py_buffer(json_bytes(marker))

    @_mapped
    def list_actions(self, context: flight.ServerCallContext) -> Iterable[Any]:
        """The action types and what their bodies and results hold."""
        return [flight.ActionType(kind, about) for kind, about in ACTIONS.items()]

    @_mapped
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> list[Any]:
        """Run one log operation; one result: JSON, or an Arrow IPC stream for tables."""
        kind = action.type
        handler = self._actions.get(kind)
        if handler is None:
            raise InvalidInputError(f"unknown action {kind!r}; the actions are {sorted(ACTIONS)}")
        self._check_serving()
        body = Body(action.body, f"action {kind!r}")
        run = handler(body)
        body.done()
        result = run()
        data = table_to_bytes(result) if kind in TABLE_ACTIONS else json_bytes(result)
        return [flight.Result(pa.py_buffer(data))]

    # --- actions: each reads its fields, then returns what to run ---------------------------

    def _ping(self) -> dict[str, Any]:
        return {
            "ok": True,
            "uri": self.log.uri,
            "protocol": PROTOCOL_VERSION,
            "server": importlib.metadata.version("transit-arrow"),
        }

    def _on_stream(self, body: Body, fn: Callable[[Stream], Any]) -> Callable[[], Any]:
        name = body.string("stream")
        return lambda: fn(self.log.stream(name))

    def _create_stream(self, body: Body) -> Callable[[], Any]:
        name, text = body.string("name"), body.opt_str("schema")
        schema = schema_from_text(text) if text is not None else None
        metadata = body.opt_dict("metadata")
        return lambda: self._info(self.log.create_stream(name, schema=schema, metadata=metadata))

    def _stream_info(self, body: Body) -> Callable[[], Any]:
        take_over = body.bool("take_over")
        ticket = ReadTicket.from_body(body)

        def run() -> dict[str, Any]:
            if take_over:
                self.log.stream(ticket.stream, take_over=True)
            return self._info(self._view(ticket))

        return run

    def _commits(self, body: Body) -> Callable[[], Any]:
        ticket = ReadTicket.from_body(body)
        return lambda: self._view(ticket).commits()

    @staticmethod
    def _lineage_args(body: Body) -> dict[str, Any]:
        return {
            "actor": body.opt_str("actor"),
            "reason": body.opt_str("reason"),
            "labels": body.opt_str_map("labels"),
        }

    def _branch(self, body: Body) -> Callable[[], Any]:
        name, at, extra = body.string("name"), body.string("at"), self._lineage_args(body)
        return lambda: self._info(self.log.branch(name, at, **extra))

    def _merge(self, body: Body) -> Callable[[], Any]:
        name, parents = body.string("name"), body.opt_str_list("parents")
        if parents is None:
            raise InvalidInputError("action 'merge': 'parents' is required")
        args = {
            "base": body.opt_str("base"),
            "policy": body.opt_str("policy") or "pin",
            "policy_params": body.opt_dict("policy_params"),
            **self._lineage_args(body),
        }
        return lambda: self._info(self.log.merge(name, parents, **args))

    def _checkpoint(self, body: Body) -> Callable[[], Any]:
        kind = body.opt_str("kind") or "manual"
        return self._on_stream(body, lambda s: s.checkpoint(kind).to_dict())

    def _verify(self, body: Body) -> Callable[[], Any]:
        name, checkpoint = body.opt_str("stream"), body.opt_dict("checkpoint")
        deep = body.bool("deep")
        if (name is None) == (checkpoint is None):
            raise InvalidInputError("action 'verify': give exactly one of 'stream', 'checkpoint'")
        target = name if name is not None else Checkpoint.from_dict(checkpoint or {})
        return lambda: self.log.verify(target, deep=deep).to_dict()

    def _sql(self, body: Body) -> Callable[[], Any]:
        query, params = body.string("query"), body.opt_dict("params") or {}

        def run() -> pa.Table:
            with self._query_lock:
                table: pa.Table = self.log.sql(query, **params).to_arrow_table()
            return table

        return run

    def _mv_info(self, name: str) -> dict[str, Any]:
        with self._query_lock:
            mv = self.log.materialization(name)
        return {
            "name": mv.name,
            "source": mv.source,
            "mode": mv.mode,
            "definition_hash": mv.definition_hash,
        }

    def _materialize(self, body: Body) -> Callable[[], Any]:
        name, source, query = body.string("name"), body.string("source"), body.string("query")
        key, version = body.opt_str_list("key"), body.opt_str("version") or "1"

        def run() -> dict[str, Any]:
            with self._query_lock:
                self.log.materialize(name, source, query=query, key=key, version=version)
            return self._mv_info(name)

        return run

    def _refresh(self, body: Body) -> Callable[[], Any]:
        name, branch = body.string("name"), body.opt_str("branch")

        def run() -> dict[str, Any]:
            with self._query_lock:
                return asdict(self.log.materialization(name).refresh(branch))

        return run

    def _mv_read(self, body: Body) -> Callable[[], Any]:
        name, branch = body.string("name"), body.opt_str("branch")

        def run() -> pa.Table:
            with self._query_lock:
                table: pa.Table = self.log.materialization(name).read(branch)
            return table

        return run

    def _cursor_info(self, name: str, stream: str) -> dict[str, Any]:
        return self._describe(self.log.cursor(name, stream))

    @staticmethod
    def _describe(cursor: Any) -> dict[str, Any]:  # a `Log.cursor`
        return {
            "name": cursor.name,
            "stream": cursor.stream,
            "position": cursor.position,
            "generation": cursor.generation,
            "committed_at": cursor.committed_at,
        }

    def _commit_cursor(self, body: Body) -> Callable[[], Any]:
        name, stream = body.string("name"), body.string("stream")
        offset, seen = body.opt_int("offset", 0), body.opt_int("generation", 0)
        if offset is None:
            raise InvalidInputError("action 'commit_cursor': 'offset' is required")

        def run() -> dict[str, Any]:
            cursor = self.log.cursor(name, stream)  # a fresh handle: the latest commit
            if cursor.generation != seen:
                raise CommitConflictError(
                    f"cursor {name!r} on {stream!r} was committed by another handle (generation "
                    f"{cursor.generation}, this one saw {seen}); refresh() and decide again"
                )
            cursor.commit(offset)
            return self._describe(cursor)

        return run


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def _read_ahead(
    batches: Iterator[pa.RecordBatch], depth: int = _READ_AHEAD
) -> Iterator[pa.RecordBatch]:
    """`batches`, decoded by a thread up to `depth` ahead of the consumer (the next batches
    decode while gRPC sends this one). The first batch comes directly; the thread starts
    before it is sent when it is large (a long read: the second batch decodes while the first
    goes out), after it otherwise (a small read, often one batch, starts no thread)."""
    first = next(batches, None)
    if first is None:
        return
    ready: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_DRAIN_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as e:
            offer(_Failed(e))

    producer: _Job | None = None
    try:
        if first.get_total_buffer_size() >= _EAGER_READ_AHEAD:
            producer = _WORKERS.start(produce, "transit-read-ahead")
        yield first
        if producer is None:
            producer = _WORKERS.start(produce, "transit-read-ahead")
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(pa.RecordBatch, item)
    finally:
        stop.set()
        if producer is not None:
            producer.join()


def _tail(
    stream: Stream,
    start: int,
    columns: list[str] | None,
    limits: tuple[float | None, Durability],
    stop: Callable[[], bool],
) -> Iterator[pa.RecordBatch]:
    """`stream.tail(start)` of the records that reached `durability`, in slices of at most
    `_TAIL_SLICE` seconds without a record, so that `stop()` (a cancelled call, a shutdown)
    is checked at least that often; it ends after `idle_timeout` seconds without a new
    record, or when the log closes."""
    idle_timeout, durability = limits
    position, idle_since = start, time.monotonic()
    while not stop():
        left = None if idle_timeout is None else idle_since + idle_timeout - time.monotonic()
        if left is not None and left <= 0:
            return
        stream.check_open()
        with Tail(
            stream.catalog,
            stream.name,
            position,
            timeout=_TAIL_SLICE if left is None else min(left, _TAIL_SLICE),
            durability=durability,
        ) as tail:
            for batch in tail:
                yield batch if columns is None else batch.select(columns)
                idle_since = time.monotonic()
                if stop():
                    return
            position = tail.position
