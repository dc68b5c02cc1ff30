"""The writer of one stream: group-committed appends, heads and background sealing (DESIGN §4).

One `Writer` per stream per process, registered in the catalog by `writer_for`. Appends go to
the active Arrow IPC head; group commit makes them durable with shared fsyncs; a sealer thread
turns rolled heads into Parquet segments and commits them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import operator
import threading
import time
import uuid
from typing import Any, NamedTuple

import pyarrow as pa

from ..commit import CommitLog, writer_identity
from ..errors import (
    CommitConflictError,
    FencedError,
    LogClosedError,
    StorageError,
    TransitError,
)
from ..layout import segment_path, set_aside_dir
from ..lease import Lease, LocalLock
from ..manifest import Manifest, SegmentRef
from ..record import (
    coerce_input,
    conform,
    evolve_schema,
    head_schema,
    schema_to_json,
    system_columns,
    user_part,
)
from ..segments.head import Head, HeadBatches, RecoveredHead, recover_heads
from ..segments.parquet import encode_segment
from ..typing import Durability
from .catalog import Catalog

__all__ = ["Ack", "FastPath", "Writer", "writer_for"]


_log = logging.getLogger("transit_arrow")


class Ack(NamedTuple):
    """Acknowledgement of one `append` call.

    Attributes:
        first_offset: offset of the first appended record.
        last_offset: offset of the last appended record.
        durability: the level actually reached ("memory", "local" or "tiered").
    """

    first_offset: int
    last_offset: int
    durability: Durability

    @property
    def records(self) -> int:
        """How many records the call appended."""
        return self.last_offset - self.first_offset + 1


# Python types accepted without conversion by the per-record fast path, per Arrow type.
_FAST_TYPES: dict[pa.DataType, tuple[type, ...]] = {
    pa.int64(): (int,),
    pa.float64(): (float, int),
    pa.string(): (str,),
    pa.large_string(): (str,),
    pa.bool_(): (bool,),
    pa.binary(): (bytes,),
    pa.large_binary(): (bytes,),
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class FastPath:
    """Per-record `append(dict)` without Arrow conversion, for schemas of plain scalar columns.

    The checks are exactly what conversion needs to succeed later, so a buffered record can
    always become an Arrow batch; anything else takes the general path. Checked combinations of
    value types are cached, so the common case costs one tuple lookup.
    """

    def __init__(self, user: pa.Schema) -> None:
        self.schema = user
        self.names = tuple(user.names)
        self.keys = frozenset(self.names)
        self.getter = operator.itemgetter(*self.names)
        self.allowed = tuple(_FAST_TYPES[f.type] for f in user)
        self.int64 = tuple(i for i, f in enumerate(user) if f.type == pa.int64())
        self.sized = tuple(i for i, f in enumerate(user) if _FAST_TYPES[f.type][0] in (str, bytes))
        self.signatures: set[tuple[type, ...]] = set()

    @classmethod
    def for_schema(cls, user: pa.Schema) -> FastPath | None:
        if len(user) > 1 and all(f.type in _FAST_TYPES for f in user):
            return cls(user)
        return None

    def values(self, row: dict[str, Any]) -> tuple[Any, ...] | None:
        """The row's values in schema order, or None if the row needs the general path."""
        if row.keys() != self.keys:
            return None
        values: tuple[Any, ...] = self.getter(row)
        signature = tuple(map(type, values))
        if signature not in self.signatures:
            for kind, allowed in zip(signature, self.allowed, strict=True):
                if kind is not type(None) and kind not in allowed:
                    return None
            self.signatures.add(signature)
        for i in self.int64:
            value = values[i]
            if value is not None and not _INT64_MIN <= value <= _INT64_MAX:
                return None
        return values

    def size(self, values: tuple[Any, ...]) -> int:
        """An estimate of the record's Arrow size, for `segment_max_bytes`."""
        total = 8 * len(values)
        for i in self.sized:
            value = values[i]
            if value is not None:
                total += len(value)
        return total


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals(b, check_metadata=False)


class Writer:
    """The single writer of one stream in this process: heads, group commit and the sealer."""

    def __init__(self, catalog: Catalog, name: str, *, take_over: bool) -> None:
        self.name = name
        self.catalog = catalog
        self.folder = catalog.stream_folder(self.name)
        self.local = catalog.local_stream_dir(self.name)
        self.heads_dir = self.local / "heads"
        self.writer_id = uuid.uuid4().hex
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.sync_lock = threading.Lock()
        self.error: TransitError | None = None
        self.closed = False
        self.pending: collections.deque[Head] = collections.deque()
        self.durable_next = 0
        self.fast: FastPath | None = None
        self._appended_since_check = False
        self._max_records = catalog.options.segment_max_records
        self._max_bytes = catalog.options.segment_max_bytes
        self.local_lock = LocalLock(self.local, self.name)
        try:
            self._open(take_over)
        except OSError as e:
            self.local_lock.release()
            raise StorageError(f"cannot open stream {self.name!r} for writing: {e}") from e
        except BaseException:
            self.local_lock.release()
            raise
        self.sealer = threading.Thread(
            target=self._seal_loop, name=f"transit-sealer-{self.name}", daemon=True
        )
        self.sealer.start()

    def _open(self, take_over: bool) -> None:
        catalog = self.catalog
        self.lease = Lease.acquire(
            catalog.store,
            self.folder,
            self.name,
            self.writer_id,
            str(self.local),
            take_over=take_over,
            local_lock_held=True,
        )
        self.commit_log = CommitLog(catalog.store, self.name, self.folder)
        self.manifest = catalog.manifest(self.name, refresh=True)
        if self.lease.fenced_previous is not None:
            self._write_fence()
        self._recover()

    # --- setup ----------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return writer_identity(self.writer_id, self.lease.epoch)

    def _write_fence(self) -> None:
        action = {
            "type": "fence",
            "epoch": self.lease.epoch,
            "previous": self.lease.fenced_previous,
        }
        while True:
            try:
                commit = self.commit_log.create(
                    self.manifest.generation + 1, self.manifest.root, [action], self._identity()
                )
            except CommitConflictError:
                self.manifest = self.catalog.manifest(self.name, refresh=True)
                continue
            self.manifest = self.catalog.remember(self.name, commit)
            return

    def _remove_orphans(self) -> None:
        """Delete this stream's segment files that no commit references (an interrupted seal
        left them). Only the lease holder seals into this folder, so none is in flight."""
        prefix = f"{self.folder}/segments"
        referenced = self.catalog.referenced_segments(self.name)
        for entry in self.catalog.store.list(prefix):
            path = f"{prefix}/{entry}"
            if not entry.endswith("/") and path not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    self.catalog.store.delete(path)

    def _recover(self) -> None:
        self._remove_orphans()
        expected = self.manifest.next_offset
        schema = self.manifest.schema
        for rec in recover_heads(self.heads_dir, truncate=True):
            end = rec.start_offset + rec.table.num_rows
            if end <= self.manifest.next_offset:
                rec.arrow_path.unlink(missing_ok=True)
                rec.marker_path.unlink(missing_ok=True)
                continue
            if rec.start_offset != expected:
                self._set_aside(rec, expected)
                continue
            head = Head(self.heads_dir, rec.start_offset, rec.user_schema, rec.generation)
            head.batches = rec.table.to_batches()
            head.records = head.written_records = head.durable_records = rec.table.num_rows
            head.written_batches = len(head.batches)
            head.nbytes = rec.table.nbytes
            self.pending.append(head)
            expected = end
            schema = rec.user_schema
        self.durable_next = expected
        self.active = self._new_head(expected, schema)

    def _set_aside(self, rec: RecoveredHead, expected: int) -> None:
        aside = set_aside_dir(self.catalog.local_dir, self.name)
        aside.mkdir(exist_ok=True)
        for path in (rec.arrow_path, rec.marker_path):
            path.rename(aside / path.name)
        _log.error(
            "stream %r: head starting at offset %d does not continue the committed stream "
            "(next offset %d); its files were moved to %s",
            self.name,
            rec.start_offset,
            expected,
            aside,
        )

    def _new_head(self, start: int, schema: pa.Schema | None) -> Head:
        user = schema or pa.schema([])
        if self.fast is None or not _same_schema(self.fast.schema, user):
            self.fast = FastPath.for_schema(user)
        return Head(self.heads_dir, start, user, self.manifest.generation)

    # --- appending ------------------------------------------------------------------------

    def check_usable(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise LogClosedError(f"stream {self.name!r} was closed; reopen the log to write")

    @property
    def next_offset(self) -> int:
        """The offset the next append gets."""
        with self.lock:
            return self.active.next_offset

    @property
    def user_schema(self) -> pa.Schema | None:
        schema = self.active.user_schema
        return schema if len(schema) else None

    def append(self, data: Any, durability: Durability) -> Ack:
        if self.error is not None or self.closed:
            self.check_usable()
        fast = self.fast
        if fast is not None and type(data) is dict:
            values = fast.values(data)
            if values is not None:
                with self.lock:
                    added = self.fast is fast and self.error is None
                    if added:
                        head = self.active
                        first = head.next_offset
                        head.add_row(values, time.time_ns() // 1000, fast.size(values))
                        if (
                            head.records >= self._max_records
                            or head.nbytes >= self._max_bytes
                            or durability == "tiered"
                            or self.pending
                        ):
                            self._after_add(durability)
                        self._appended_since_check = True
                if added:
                    self.catalog.notify_changed(self.name)
                    if durability == "memory":
                        return Ack(first, first, "memory")
                    return self._finish(first, first, durability)
        table = coerce_input(data, self.user_schema)
        with self.lock:
            self.check_usable()
            current = self.user_schema
            evolved = evolve_schema(current, user_part(table))
            user = conform(table, evolved)
            if not _same_schema(current, evolved):
                if self.active.records:
                    self._roll()
                self.active = self._new_head(self.active.start_offset, evolved)
            first = self.active.next_offset
            columns = [*system_columns(table, first), *user.columns]
            batch = pa.Table.from_arrays(columns, schema=head_schema(evolved)).combine_chunks()
            for b in batch.to_batches():
                self.active.add(b)
            last = first + table.num_rows - 1
            self._after_add(durability)
        self.catalog.notify_changed(self.name)
        return self._finish(first, last, durability)

    def _after_add(self, durability: Durability) -> None:
        """Roll when a limit is reached and apply backpressure (caller holds `lock`)."""
        self._appended_since_check = True
        limits = self.catalog.options
        if (
            self.active.records >= limits.segment_max_records
            or self.active.nbytes >= limits.segment_max_bytes
            or durability == "tiered"
        ):
            self._roll()
        while len(self.pending) > limits.max_pending_heads and self.error is None:
            self.cond.wait(0.5)

    def _finish(self, first: int, last: int, durability: Durability) -> Ack:
        """Wait for the durability asked for, then acknowledge."""
        if durability == "memory":
            return Ack(first, last, "memory")
        if durability == "local":
            self.sync_through(last)
            return Ack(first, last, "local")
        self.wait_committed(last + 1)
        return Ack(first, last, "tiered")

    def _roll(self) -> None:
        """Move the active head to the sealing queue (caller holds `lock`)."""
        if not self.active.records:
            return
        # A rolled head is immutable: turn its buffered rows into a batch now, under the lock,
        # so the sealer and group commit never materialize it concurrently.
        self.active.materialize()
        self.pending.append(self.active)
        self.active = self._new_head(self.active.next_offset, self.active.user_schema)
        self.cond.notify_all()

    def sync_through(self, last: int) -> None:
        """Group commit: make every record up to `last` durable with as few fsyncs as possible."""
        with self.sync_lock:
            if self.durable_next > last:
                return
            with self.lock:
                heads = [*self.pending, self.active]
                work = [(h, h.write_pending()) for h in heads]
                upto = self.active.next_offset
            for head, pending in work:
                if pending is not None:
                    head.make_durable(*pending)
            self.durable_next = upto

    def wait_committed(self, target: int) -> None:
        with self.lock:
            while self.manifest.next_offset < target:
                self.check_usable()
                self.cond.wait(0.5)

    def flush(self) -> Manifest:
        with self.lock:
            self.check_usable()
            self._roll()
            target = self.active.start_offset
        self.wait_committed(target)
        return self.manifest

    # --- sealing --------------------------------------------------------------------------

    def _seal_loop(self) -> None:
        options = self.catalog.options
        next_lease_check = time.monotonic() + options.lease_check_interval
        while True:
            with self.lock:
                while not self.pending and not self.closed and self.error is None:
                    now = time.monotonic()
                    if self.active.records and now - self.active.created >= options.segment_max_age:
                        self._roll()
                        break
                    if now >= next_lease_check:
                        break
                    wait = min(options.segment_max_age, options.lease_check_interval)
                    self.cond.wait(max(0.01, min(wait, next_lease_check - now)))
                if self.error is not None or (self.closed and not self.pending):
                    return
                head = self.pending[0] if self.pending else None
                check_lease = self._appended_since_check and time.monotonic() >= next_lease_check
            if check_lease:
                next_lease_check = time.monotonic() + options.lease_check_interval
                self._appended_since_check = False
                self._check_lease()
            elif head is None:
                next_lease_check = time.monotonic() + options.lease_check_interval
            if head is not None:
                self._seal_with_retry(head)

    def _check_lease(self) -> None:
        try:
            current = self.lease.is_current()
        except TransitError:
            return  # a flaky store must not fence us; the commit protocol stays the guard
        if not current:
            self._fail(self._fenced_error())

    def _fenced_error(self) -> FencedError:
        files = sorted(str(p) for p in self.heads_dir.glob("*.arrow"))
        return FencedError(
            f"the writer of stream {self.name!r} (epoch {self.lease.epoch}) was fenced by a newer "
            f"writer; its unsealed records are kept in {', '.join(files) or self.heads_dir}"
        )

    def _fail(self, error: TransitError) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
            self.cond.notify_all()

    def _seal_with_retry(self, head: Head) -> None:
        delay = 0.05
        for attempt in range(self.catalog.options.seal_retries + 1):
            try:
                self._seal(head)
                return
            except FencedError as e:
                self._fail(e)
                return
            except (StorageError, OSError) as e:
                if attempt == self.catalog.options.seal_retries:
                    self._fail(
                        StorageError(
                            f"sealing stream {self.name!r} offsets {head.start_offset}.."
                            f"{head.next_offset - 1} failed after {attempt + 1} attempts: {e}; "
                            f"records acknowledged as 'local' are kept in {self.heads_dir} and "
                            "are sealed when the log is reopened; a failed 'tiered' append was "
                            "not acknowledged"
                        )
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as e:  # surface anything else rather than dying silently
                self._fail(TransitError(f"sealing stream {self.name!r} failed: {e!r}"))
                return

    def _seal(self, head: Head) -> None:
        data, meta = encode_segment(head.table(), self.name, self.catalog.options.row_group_size)
        path = segment_path(self.folder, meta["first_offset"], meta["last_offset"], meta["blake3"])
        seg = SegmentRef(path=path, **meta)
        # Always put (the name is content-addressed, so overwriting is harmless): skipping an
        # existing object would commit a partial upload left by an interrupted attempt.
        self.catalog.put_segment(path, data)
        actions: list[dict[str, Any]] = []
        if not _same_schema(head.user_schema, self.manifest.schema):
            actions.append({"type": "evolve_schema", "schema": schema_to_json(head.user_schema)})
        actions.append(seg.to_action())
        generation = self.manifest.generation + 1
        try:
            commit = self.commit_log.create(
                generation, self.manifest.root, actions, self._identity()
            )
        except CommitConflictError:
            commit = self._resolve_conflict(generation, seg)
        with self.sync_lock, self.lock:
            self.manifest = self.catalog.remember(self.name, commit)
            self.pending.popleft()
            head.discard_files()
            self.cond.notify_all()
        self.catalog.notify_changed(self.name)

    def _resolve_conflict(self, generation: int, seg: SegmentRef) -> dict[str, Any]:
        """Our commit slot was taken: by ourselves (a retried request), or by a fencing writer."""
        existing = self.commit_log.read(generation, self.manifest.root)
        if (
            existing["writer"].get("id") == self.writer_id
            and seg.to_action() in existing["actions"]
        ):
            return existing
        if any(a.get("type") == "fence" for a in existing["actions"]):
            raise self._fenced_error()
        raise FencedError(
            f"stream {self.name!r}: commit {generation} was created by writer "
            f"{existing['writer'].get('id')}; this writer's records are kept in {self.heads_dir}"
        )

    # --- reads ----------------------------------------------------------------------------

    def snapshot(self) -> tuple[Manifest, HeadBatches]:
        with self.lock:
            heads = [
                (h.start_offset, h.user_schema, h.all_batches())
                for h in [*self.pending, self.active]
                if h.records
            ]
            return self.manifest, heads

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            if self.error is None:
                self._roll()
            self.closed = True
            self.cond.notify_all()
        self.sealer.join()
        with self.sync_lock, self.lock:
            for head in [*self.pending, self.active]:
                head.close_file()
        if self.error is None:
            self.lease.release()
        self.local_lock.release()
        if self.error is not None and not isinstance(self.error, FencedError):
            raise self.error


def writer_for(catalog: Catalog, name: str, *, take_over: bool = False) -> Writer:
    """This process's writer of `name`, created (taking the lease) on first use."""
    catalog.check_open()
    writer = catalog.writers.get(name)
    if isinstance(writer, Writer):
        return writer
    with catalog.lock:
        catalog.check_open()
        writer = catalog.writers.get(name)
        if not isinstance(writer, Writer):
            writer = Writer(catalog, name, take_over=take_over)
            catalog.writers[name] = writer
        return writer


def close_writer(catalog: Catalog, name: str) -> Writer | None:
    """Close and unregister this process's writer of `name` (None when there is none)."""
    with catalog.lock:
        writer = catalog.writers.pop(name, None)
    if not isinstance(writer, Writer):
        return None
    writer.close()
    return writer
