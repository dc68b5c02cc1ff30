"""The writer of one stream: group-committed appends, heads, sealing, recovery and fencing
(DESIGN §4, §5; `docs/format.md`, "Heads" and "Writer lease").

One `Writer` per stream per process, registered in the catalog by `writer_for`.

- **Appends are all or nothing.** Everything that can fail (conversion, schema evolution,
  Parquet compatibility, system columns) runs before the writer's state changes; then the
  records join the active head. A refused append leaves schema, offsets and files as they were.
- **Group commit.** A `local` append writes every unwritten batch of every head as one frame
  and makes it durable with one `fdatasync`; appenders that arrive meanwhile queue on the sync
  lock and are covered by the next leader's single sync.
- **Sealing** runs in a background thread: rolled heads become Parquet segments and commits.
  A failed seal is retried with backoff for as long as the writer lives, so an outage is
  survived, not remembered: `memory`/`local` appends go on (until `max_pending_heads` heads
  wait, then a clear `StorageError`), `tiered` appends and `flush()` raise `StorageError` while
  the store fails and succeed once it is back.
- **Deferred sealing under ingest.** While an upload streams batches in (`defer_seals`, which
  the Flight server's multi-batch DoPut holds), the sealer leaves up to `DEFERRED_HEADS` rolled
  heads unsealed, so that Parquet encoding does not compete with the upload for CPU; it seals
  them once the upload ends, once no record arrived for `DEFER_IDLE` seconds, once the oldest
  is `segment_max_age` old, or once more heads wait (then the oldest, as usual). Deferred heads
  are pending heads like any other: readable, durable per their appends' level, recovered on
  reopen; `flush()` and `tiered` appends seal them at once.
- **Recovery** (on open) adopts the heads a dead writer of this local dir left, deletes those
  already committed, and sets aside (never deletes) heads that cannot continue the stream: a
  fenced writer's, damaged ones, ones that leave a gap. `heads.orphaned_heads` lists them.
- **Fencing.** A writer that learns it was fenced sets its own heads aside and fails every
  later call with `FencedError` naming them.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import operator
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from ..commit import Commit, CommitLog, writer_identity
from ..errors import (
    CommitConflictError,
    FencedError,
    IntegrityError,
    LogClosedError,
    StorageError,
    TransitError,
    WriterBusyError,
)
from ..layout import segment_path, set_aside_dir
from ..lease import EpochLock, Lease, LocalLock, epoch_lock_path
from ..manifest import Manifest, SegmentRef
from ..record import (
    caller_columns,
    check_parquet,
    coerce_input,
    conform,
    evolve_schema,
    head_schema,
    parquet_exact,
    schema_to_json,
    user_part,
)
from ..segments.head import (
    Head,
    HeadBatches,
    HeadFile,
    by_priority,
    continues,
    fenced_epoch,
    head_name,
    list_head_files,
    list_spare_files,
    load_head,
    read_head,
    set_aside,
    spare_name,
)
from ..storage.base import Durable
from ..storage.local import fsync_dir
from ..typing import Durability
from .catalog import Catalog

__all__ = ["Ack", "FastPath", "Writer", "close_writer", "writer_for"]


_log = logging.getLogger("transit_arrow")

#: Longest pause between two attempts to seal a head while the store fails (seconds).
MAX_SEAL_BACKOFF = 2.0
#: Rolled heads the sealer leaves unsealed while an upload holds `Writer.defer_seals`.
DEFERRED_HEADS = 2
#: ... as long as a record arrived within this many seconds.
DEFER_IDLE = 0.5


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


# Per Arrow type of the per-record fast path: the test a Python value must pass to be
# converted exactly (`{v}` is the value's variable), and whether its size counts its length.
_FAST_TYPES: dict[pa.DataType, tuple[str, bool]] = {
    pa.int64(): ("(type({v}) is int and -0x8000000000000000 <= {v} <= 0x7FFFFFFFFFFFFFFF)", False),
    # ints stored into a double column must be exact there (|x| <= 2**53)
    pa.float64(): (
        "(type({v}) is float"
        " or (type({v}) is int and -0x20000000000000 <= {v} <= 0x20000000000000))",
        False,
    ),
    pa.string(): ("type({v}) is str", True),
    pa.large_string(): ("type({v}) is str", True),
    pa.bool_(): ("type({v}) is bool", False),
    pa.binary(): ("type({v}) is bytes", True),
    pa.large_binary(): ("type({v}) is bytes", True),
}


class FastPath:
    """Per-record `append(dict)` without Arrow conversion, for schemas of plain scalar columns.

    The checks are exactly what conversion needs to succeed later (and what a Parquet segment
    stores exactly), so a buffered record can always become an Arrow batch and a segment;
    anything else takes the general path. The whole append is one function generated for the
    writer and its schema (as `dataclasses` does): a few type tests per row, the record's
    values stored in the active head's column lists under the writer's lock, no loop, no
    lookup, no further call on the way to a `memory` ack.
    """

    def __init__(self, user: pa.Schema, writer: Writer) -> None:
        self.schema = user
        self.names = tuple(user.names)
        names = [f"v{i}" for i in range(len(user))]
        tests = []
        sized = []
        for name, field in zip(names, user, strict=True):
            test, counts = _FAST_TYPES[field.type]
            tests.append(f"({test.format(v=name)} or {name} is None)")
            if counts:
                sized.append(f"len({name} or b'')")
        size = " + ".join([str(8 * len(user)), *sized])
        columns = [f"c{i}" for i in range(len(user))]
        source = "\n".join(
            [
                "def append(row, durability):",
                f"    if len(row) != {len(user)}:",
                "        return None",
                "    try:",  # as many keys, none missing: the same keys
                f"        {', '.join(names)}, = getter(row)",
                "    except KeyError:",
                "        return None",
                f"    if not ({' and '.join(tests)}):",
                "        return None",
                "    if durability != 'memory' and durability != 'local'"
                " and durability != 'tiered':",
                "        return None",
                "    acquire()",
                "    try:",
                "        if writer.fast_ok is not fast:",
                "            return None",
                "        head = writer.active",
                f"        {', '.join(columns)}, = head.columns",
                *(f"        {c}.append({v})" for c, v in zip(columns, names, strict=True)),
                "        head.row_stamps.append(time_ns())",
                f"        head.nbytes = nbytes = head.nbytes + {size}",
                "        head.records = records = head.records + 1",
                "        if records >= max_records or nbytes >= max_bytes"
                " or durability == 'tiered':",
                "            writer._roll()",
                "        writer._appended_since_check = True",
                "    finally:",
                "        release()",
                "    first = head.start_offset + records - 1",
                "    if catalog.watched:",
                "        catalog.notify_changed(name)",
                "    if durability == 'memory':",
                "        return new_ack(Ack, (first, first, 'memory'))",  # Ack(...) minus a frame
                "    return writer._finish(first, first, durability)",
            ]
        )
        namespace: dict[str, Any] = {
            "getter": operator.itemgetter(*self.names),
            "writer": writer,
            "fast": self,
            "acquire": writer.lock.acquire,
            "release": writer.lock.release,
            "time_ns": time.time_ns,
            "max_records": writer.max_records,
            "max_bytes": writer.max_bytes,
            "catalog": writer.catalog,
            "name": writer.name,
            "new_ack": tuple.__new__,
            "Ack": Ack,
        }
        exec(source, namespace)  # the column names are data in `namespace`, not code
        #: `append(row, durability)`: append the record `row` to the writer's active head (see
        #: `Head.columns`) and return its `Ack` at `durability`; or return None, changing
        #: nothing, if it needs the general path (or `durability` is no level).
        self.append: Callable[[dict[str, Any], Durability], Ack | None] = namespace["append"]

    @classmethod
    def for_schema(cls, user: pa.Schema, writer: Writer) -> FastPath | None:
        if len(user) > 1 and all(f.type in _FAST_TYPES for f in user):
            return cls(user, writer)
        return None


class _Waiter:
    """An appender waiting in group commit (`Writer.sync_through`)."""

    __slots__ = ("last", "lead", "lock")

    def __init__(self, last: int) -> None:
        self.last = last  # the offset it needs durable
        self.lead = False  # woken to lead the next round, not served
        self.lock = threading.Lock()  # held until it is woken
        self.lock.acquire()


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals(b, check_metadata=False)


def _single(column: Any) -> Any:
    """A column (Array or ChunkedArray) as one Array."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _sealed_ranges(commits: list[Commit]) -> dict[int, list[tuple[int, int | None]]]:
    """first offset -> [(last offset, writer epoch)] of every segment a commit added."""
    out: dict[int, list[tuple[int, int | None]]] = {}
    for commit in commits:
        epoch = commit["writer"].get("epoch")
        for action in commit["actions"]:
            if action.get("type") == "add_segment":
                out.setdefault(action["first_offset"], []).append((action["last_offset"], epoch))
    return out


class Writer:
    """The single writer of one stream in this process: heads, group commit and the sealer."""

    lease: Lease
    epoch: int

    def __init__(self, catalog: Catalog, name: str, *, take_over: bool) -> None:
        self.name = name
        self.catalog = catalog
        self.folder = catalog.stream_folder(self.name)
        self.local = catalog.local_stream_dir(self.name)
        self.heads_dir = self.local / "heads"
        self.aside_dir = set_aside_dir(catalog.local_dir, self.name)
        self.writer_id = uuid.uuid4().hex
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.sync_lock = threading.Lock()
        # Group commit (`sync_through`): the state below is guarded by `sync_mutex`.
        self.sync_mutex = threading.Lock()
        self.syncing = False  # a leader holds the round: collecting, writing or syncing
        self.sync_waiting: list[_Waiter] = []  # appenders waiting for a round, oldest first
        #: While the leader waits for its group to fill: released by the arrival that fills it.
        self.collector: Any = None
        self.collect_need = 0  # how many appenders (the leader too) fill the group
        self.group = self.last_group = 1  # appenders the current / previous round serves
        self.sync_seconds = 0.0  # how long a sync takes (a moving average)
        #: A permanent failure (fenced, or a bug): every later call raises it.
        self.error: TransitError | None = None
        self.closed = False
        self.pending: collections.deque[Head] = collections.deque()
        self.durable_next = 0
        self.fast: FastPath | None = None
        #: `fast` while the per-record path may add a record without further checks (no
        #: error, not closed, no backpressure); None otherwise. Kept by `_refresh_fast`.
        self.fast_ok: FastPath | None = None
        self._appended_since_check = False
        options = catalog.options
        self.max_records = options.segment_max_records
        self.max_bytes = options.segment_max_bytes
        self._max_pending = options.max_pending_heads
        # The sealer's state: consecutive failed attempts on the oldest pending head, the error
        # once they exceed `seal_retries`, attempts made so far, and a request to retry now.
        self.seal_failures = 0
        self.seal_error: StorageError | None = None
        self.seal_attempts = 0
        self._attempts_at_close = 0
        self._poked = False
        self.sealing = False  # a thread is sealing the oldest pending head
        #: The file of a sealed head, emptied and kept for the next head (see `Head.recycle`).
        self.spare: Path | None = None
        self._spares = 0
        self.retry_at = 0.0  # no seal attempt before this time (backoff after a failure)
        self.deferrals = 0  # uploads holding `defer_seals`
        self.last_append = 0.0  # when records last joined a head (monotonic seconds)
        self.local_lock: LocalLock | None = None
        try:
            self.local_lock = LocalLock(self.local, self.name)
        except WriterBusyError:
            # Another writer of this local dir lives: only a take-over may proceed (it fences
            # that writer through the lease; their head files never share a name).
            if not take_over:
                raise
        try:
            self._open(take_over)
        except OSError as e:
            self._release_locks()
            raise StorageError(f"cannot open stream {self.name!r} for writing: {e}") from e
        except BaseException:
            self._release_locks()
            raise
        self.sealer = threading.Thread(
            target=self._seal_loop, name=f"transit-sealer-{self.name}", daemon=True
        )
        self.sealer.start()

    def _release_locks(self) -> None:
        """Drop the liveness and local locks. When the lease was refused, nothing of this
        writer's is left in the local dir (a refusal changes nothing)."""
        lease: Lease | None = getattr(self, "lease", None)
        if lease is not None:
            lease.release_lock()
        if self.local_lock is not None:
            if lease is None:
                self.local_lock.discard()
            else:
                self.local_lock.release()

    def _open(self, take_over: bool) -> None:
        catalog = self.catalog
        self.lease = Lease.acquire(
            catalog.store,
            self.folder,
            self.name,
            self.writer_id,
            str(self.local),
            take_over=take_over,
            local_lock_held=self.local_lock is not None,
        )
        self.epoch = self.lease.epoch
        self.commit_log = CommitLog(catalog.store, self.name, self.folder)
        self.manifest = catalog.manifest(self.name, refresh=True)
        if self.lease.fenced_previous is not None:
            self._write_fence()
        self._recover()

    # --- setup ----------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return writer_identity(self.writer_id, self.epoch)

    def _write_fence(self) -> None:
        action = {
            "type": "fence",
            "epoch": self.epoch,
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
        """Adopt, delete or set aside every head this local dir holds (see the module doc).

        The rule for which heads continue the stream is the readers' (`head.chain_heads`):
        starting at the committed next offset, each head starts where the previous one ends,
        its owner's epoch was never fenced, and of heads starting at one offset the newest
        owner's wins.
        """
        self._remove_orphans()
        for owner, spare in list_spare_files(self.heads_dir):
            if owner != self.epoch and not EpochLock.probe(epoch_lock_path(self.heads_dir, owner)):
                with contextlib.suppress(OSError):
                    if spare.stat().st_size == 0:  # one with data is a head (a lost rename)
                        spare.unlink()
        EpochLock.clean(self.heads_dir, below=self.epoch)
        commits = self.catalog.commits(self.name)
        fenced = fenced_epoch(commits)
        sealed = _sealed_ranges(commits)
        expected = self.manifest.next_offset
        schema = self.manifest.schema
        renamed = False
        files = []
        for _, epoch, path in list_head_files(self.heads_dir):
            live = epoch is not None and EpochLock.probe(epoch_lock_path(self.heads_dir, epoch))
            if live:
                continue  # a live writer's (fenced, it has not noticed): it sets it aside
            try:
                file = read_head(path, epoch, repair=True)
            except IntegrityError as e:  # a format-1 marker that disagrees with its file
                self._set_aside(path, epoch, "damaged", str(e))
                continue
            if file is not None:
                files.append(file)
        # By the start offsets the files say (a recycled file's name may be older, see
        # `Head.recycle`), the newest owner first at one offset.
        for file in by_priority(files):
            path, epoch = file.path, file.epoch
            if self._was_sealed(file, sealed):
                path.unlink(missing_ok=True)
                if file.legacy_marker is not None:
                    file.legacy_marker.unlink(missing_ok=True)
                continue
            if not continues(file, expected, fenced):
                kind = (
                    "fenced"
                    if epoch is not None and epoch <= fenced
                    else "superseded"
                    if file.start_offset < expected
                    else "gap"
                )
                self._set_aside(path, epoch, kind, self._why(kind, file, expected), file)
                continue
            if file.status == "damaged":
                file = self._split_damaged(file)
                if file is None:
                    continue
            if not file.records:
                path.unlink(missing_ok=True)
                continue
            if epoch is not None and epoch != self.epoch:
                target = self.heads_dir / head_name(file.start_offset, self.epoch)
                os.replace(path, target)
                file.path = target
                renamed = True
            head = Head.adopt(file, self.epoch)
            self.pending.append(head)
            expected = file.end_offset
            schema = file.user_schema
        if renamed:
            fsync_dir(self.heads_dir)
        self.durable_next = expected
        self.active = self._new_head(expected, schema)

    @staticmethod
    def _was_sealed(file: HeadFile, sealed: dict[int, list[tuple[int, int | None]]]) -> bool:
        """Whether a commit holds the head's records, sealed from this very file: a segment
        starting at its first offset, covering its records, by its owner's epoch (any writer
        for a head of format 1, which names no owner)."""
        for last, epoch in sealed.get(file.start_offset, []):
            if last >= file.end_offset - 1 and (file.epoch is None or epoch == file.epoch):
                return True
        return False

    def _why(self, kind: str, file: HeadFile, expected: int) -> str:
        if kind == "fenced":
            return (
                f"its writer (epoch {file.epoch}) was fenced by a newer writer, which committed "
                f"the stream up to offset {expected - 1}"
            )
        if kind == "superseded":
            return (
                f"another writer committed offsets {file.start_offset}..{expected - 1} first "
                f"(this head's writer, epoch {file.epoch}, was presumed gone)"
            )
        return (
            f"it starts at offset {file.start_offset} but the stream continues at {expected}, "
            "after an earlier head was set aside"
        )

    def _split_damaged(self, file: HeadFile) -> HeadFile | None:
        """Set aside a copy of a damaged head and keep its valid frames before the damage as
        the head (None if there are none)."""
        keep = file.records
        detail = (
            f"{file.detail}; the {keep} records before the damage (offsets "
            f"{file.start_offset}..{file.end_offset - 1}) stay in the stream"
            if keep
            else file.detail
        )
        self._set_aside(file.path, file.epoch, "damaged", detail, file, copy=bool(keep))
        if not keep:
            return None
        with open(file.path, "rb+") as f:
            f.truncate(file.valid_bytes)
            os.fsync(f.fileno())
        return read_head(file.path, file.epoch)

    def _set_aside(
        self,
        path: Path,
        epoch: int | None,
        kind: str,
        reason: str,
        file: HeadFile | None = None,
        *,
        copy: bool = False,
    ) -> Path:
        """Keep a head file out of the stream, in the set-aside folder, saying why."""
        info: dict[str, Any] = {
            "stream": self.name,
            "kind": kind,
            "reason": reason,
            "epoch": epoch,
            "set_aside_by_epoch": self.epoch,
        }
        try:
            salvage = load_head(path, salvage=True) if epoch is not None else file
        except OSError:
            salvage = file
        if salvage is not None and salvage.batches:
            offsets = np.concatenate([b.column(0).to_numpy() for b in salvage.batches])
            if file is not None and kind == "damaged":
                offsets = offsets[offsets >= file.end_offset]  # the rest stays in the stream
            if len(offsets):
                # Where the orphan's records would continue the stream as its writer saw it.
                after = file.end_offset if file is not None and kind == "damaged" else None
                info |= {
                    "start_offset": salvage.start_offset,
                    "first_offset": int(offsets.min()),
                    "last_offset": int(offsets.max()),
                    "records": len(offsets),
                    "branch_at": (salvage.start_offset if after is None else after) - 1,
                }
        target = set_aside(path, self.aside_dir, info, copy=copy)
        _log.error(
            "stream %r: head %s was set aside as %s (%s): %s; see Log.orphaned_heads()",
            self.name,
            path.name,
            target,
            kind,
            reason,
        )
        return target

    def _new_head(self, start: int, schema: pa.Schema | None) -> Head:
        user = schema or pa.schema([])
        if self.fast is None or not _same_schema(self.fast.schema, user):
            self.fast = FastPath.for_schema(user, self)
        self._refresh_fast()
        return Head(self.heads_dir, start, user, self.manifest.generation, self.epoch)

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
        """Append one call's records, all or nothing, and wait for `durability`."""
        fast = self.fast_ok
        if fast is not None and type(data) is dict:
            ack = fast.append(data, durability)  # the per-record hot path
            if ack is not None:
                return ack
        self.check_usable()
        span = None
        if (type(data) is pa.RecordBatch or type(data) is pa.Table) and durability != "tiered":
            span = self._append_plain(data)
        if span is None:
            span = self._append_table(coerce_input(data, self.user_schema), durability)
        self.catalog.notify_changed(self.name)
        return self._finish(*span, durability)

    def _append_plain(self, data: pa.RecordBatch | pa.Table) -> tuple[int, int] | None:
        """Append Arrow data that is in the stream's schema exactly, with values Parquet
        stores exactly and no caller system column: it needs no conversion and no check
        (the general path would find nothing to change). None, changing nothing, for any
        other data: it takes the general path."""
        current = self.user_schema
        n = data.num_rows
        if (
            current is None
            or not n
            or not data.schema.equals(current, check_metadata=True)
            or not parquet_exact(current)
        ):
            return None
        stamps, headers = caller_columns(data)
        columns = list(map(_single, data.columns))
        with self.lock:
            self.check_usable()
            self._admit()
            head = self.active
            if head.user_schema is not current:
                return None  # another append evolved the schema meanwhile
            first = head.next_offset
            offsets = pa.array(np.arange(first, first + n, dtype=np.int64))
            # Nothing below can fail.
            head.add(
                pa.RecordBatch.from_arrays([offsets, stamps, headers, *columns], schema=head.schema)
            )
            self._appended_since_check = True
            self.last_append = time.monotonic()
            if head.records >= self.max_records or head.nbytes >= self.max_bytes:
                self._roll()
            return first, first + n - 1

    def _refresh_fast(self) -> None:
        """Recompute `fast_ok` (caller holds `lock`, or is the constructor)."""
        usable = self.error is None and not self.closed and len(self.pending) <= self._max_pending
        self.fast_ok = self.fast if usable else None

    def _append_table(self, table: pa.Table, durability: Durability) -> tuple[int, int]:
        """Add a coerced input table to the active head: every check and conversion first,
        outside the lock; the state changes only once nothing can fail any more."""
        n = table.num_rows
        while True:
            current = self.user_schema
            evolved = evolve_schema(current, user_part(table))
            user = conform(table, evolved)
            check_parquet(user)
            stamps, headers = caller_columns(table)
            pieces = self._bulk_pieces(n, user.nbytes) if durability == "tiered" else 1
            columns = [stamps, headers, *user.columns]
            if pieces == 1:
                columns = list(map(_single, columns))
            schema = head_schema(evolved)
            with self.lock:
                self.check_usable()
                self._admit()
                if not _same_schema(self.user_schema, current):
                    continue  # another append evolved the schema meanwhile: convert again
                first = self.active.next_offset
                offsets = pa.array(np.arange(first, first + n, dtype=np.int64))
                if pieces > 1:
                    whole = pa.Table.from_arrays([offsets, *columns], schema=schema)
                    self._add_bulk(whole, evolved, pieces)  # nothing in it can fail
                    return first, first + n - 1
                batch = pa.RecordBatch.from_arrays([offsets, *columns], schema=schema)
                # Nothing below can fail.
                if not _same_schema(current, evolved):
                    if self.active.records:
                        self._roll()
                    self.active = self._new_head(self.active.start_offset, evolved)
                self.active.add(batch)
                self._appended_since_check = True
                self.last_append = time.monotonic()
                if (
                    self.active.records >= self.max_records
                    or self.active.nbytes >= self.max_bytes
                    or durability == "tiered"
                ):
                    self._roll()
                return first, first + n - 1

    def _bulk_pieces(self, records: int, nbytes: int) -> int:
        """Into how many segments a `tiered` append of this size goes straight (1: it joins
        the active head as usual). An append that fills a segment by itself is sealed as
        segments of at most `segment_max_records` / `segment_max_bytes` each, encoded in
        parallel and committed by one commit; it never goes through an IPC head."""
        if records < self.max_records and nbytes < self.max_bytes:
            return 1
        return max(-(-records // self.max_records), -(-nbytes // self.max_bytes), 2)

    def _add_bulk(self, table: pa.Table, user: pa.Schema, pieces: int) -> None:
        """Queue a bulk append as `pieces` heads of one seal group, after the active head
        (caller holds `lock`). They live in memory only (readers of this process see them);
        `tiered` waits for their one commit, which makes them durable."""
        if self.active.records:
            self._roll()
        first = self.active.start_offset
        size = -(-table.num_rows // pieces)
        for at in range(0, table.num_rows, size):
            head = Head(self.heads_dir, first + at, user, self.manifest.generation, self.epoch)
            for batch in table.slice(at, size).to_batches():
                head.add(batch)
            head.group = first
            self.pending.append(head)
        self.active = self._new_head(first + table.num_rows, user)
        self._appended_since_check = True
        self.cond.notify_all()

    def _admit(self) -> None:
        """Backpressure (caller holds `lock`): wait while too many heads wait to be sealed;
        refuse while they wait because the store fails (after one fresh attempt)."""
        if len(self.pending) <= self._max_pending:
            return
        seen = self.seal_attempts
        self._poke()
        while len(self.pending) > self._max_pending:
            self.check_usable()
            if self.seal_error is not None and self.seal_attempts > seen:
                raise StorageError(
                    f"stream {self.name!r}: {len(self.pending)} heads wait to be sealed and the "
                    f"object store fails ({self.seal_error}); nothing was appended; appends "
                    "resume once the store is back"
                ) from self.seal_error
            self.cond.wait(0.5)

    def _poke(self) -> None:
        """Ask the sealer to try now rather than after its backoff (caller holds `lock`)."""
        self._poked = True
        self.cond.notify_all()

    def _finish(self, first: int, last: int, durability: Durability) -> Ack:
        """Wait for the durability asked for, then acknowledge."""
        if durability == "memory":
            return Ack(first, last, "memory")
        if durability == "local":
            self.sync_through(last)
            return Ack(first, last, "local")
        self.wait_committed(last + 1, (first, last))
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
        """Group commit: make every record up to `last` durable in the head files.

        One appender at a time is the *leader*: it writes what every head holds unwritten (one
        frame per head, usually one head) and syncs it once. Appenders arriving meanwhile queue
        and block, each on a lock of its own. When the round is done the leader wakes exactly
        the appenders it covered, and hands the lead to the oldest of the others (if any),
        whose round then covers all of them with one sync: no thread wakes to find it has
        nothing to do, and none competes for a lock on waking.

        Before writing, a leader waits (at most half a sync, measured) until as many appenders
        as its predecessor served have queued: appenders it just served are about to append
        again, and a sync they miss by microseconds would cost them a whole extra sync. The
        arrival that completes the group wakes it (the others do not).
        """
        mutex = self.sync_mutex
        mutex.acquire()
        if self.durable_next > last:
            mutex.release()
            return
        if self.syncing:
            waiter = _Waiter(last)
            self.sync_waiting.append(waiter)
            collector = self.collector
            if collector is not None and len(self.sync_waiting) + 1 >= self.collect_need:
                self.collector = None
                collector.release()
            mutex.release()
            waiter.lock.acquire()  # released once served, or handed the lead
            if not waiter.lead:
                return
        else:
            self.syncing = True
            mutex.release()
        self._lead(last)

    def _lead(self, last: int) -> None:
        """Run one group commit round as its leader (`syncing` is set for this thread), then
        wake the appenders it covered and hand the lead to the next waiting one."""
        self._collect()
        upto = -1
        try:
            upto = self._sync_round(last)
        finally:
            mutex = self.sync_mutex
            mutex.acquire()
            if upto > self.durable_next:
                self.durable_next = upto
            durable = self.durable_next
            self.last_group, self.group = self.group, 1
            served: list[_Waiter] = []
            rest: list[_Waiter] = []
            for waiter in self.sync_waiting:
                (served if waiter.last < durable else rest).append(waiter)
            successor = None
            if rest:  # they queued after this round started (or it failed): the next round
                successor = rest.pop(0)
                successor.lead = True  # `syncing` stays set: the lead passes to it
            else:
                self.syncing = False
            self.sync_waiting = rest
            mutex.release()
            for waiter in served:
                waiter.lock.release()
            if successor is not None:
                successor.lock.release()
        # Tails that wait for `local` durability see the newly durable records at once.
        self.catalog.notify_changed(self.name)

    def _collect(self) -> None:
        """The leader's short wait for the appenders of the previous group; sets `group` to
        how many appenders this round serves."""
        mutex = self.sync_mutex
        need = self.last_group
        mutex.acquire()
        queued = len(self.sync_waiting) + 1
        if queued < need and self.sync_seconds:
            collector = threading.Lock()
            collector.acquire()
            self.collector, self.collect_need = collector, need
            mutex.release()
            collector.acquire(timeout=min(self.sync_seconds / 2, 0.002))
            mutex.acquire()
            self.collector = None
            queued = len(self.sync_waiting) + 1
        self.group = queued
        mutex.release()

    def _sync_round(self, last: int) -> int:
        """Write and sync every unwritten batch; returns the offset everything below is
        durable up to. The sync lock keeps the sealer from removing a head meanwhile."""
        with self.sync_lock:
            with self.lock:
                if self.error is not None:
                    raise self.error
                work = []
                for head in [*self.pending, self.active]:
                    job = head.prepare()
                    if job is not None:
                        work.append((head, job))
                upto = self.active.next_offset
            started = time.monotonic()
            try:
                for head, job in work:
                    spare = self.spare if head.fd is None else None
                    if head.write(job, spare):
                        with self.lock:
                            self.spare = None
                for head, job in work:
                    head.sync(job[2])
            except OSError as e:
                raise StorageError(
                    f"writing the head of stream {self.name!r} in {self.heads_dir} failed: {e}; "
                    f"records up to offset {last} were not acknowledged as 'local' (they stay "
                    "appended in memory)"
                ) from e
            elapsed = time.monotonic() - started
            self.sync_seconds = (
                elapsed if not self.sync_seconds else 0.8 * self.sync_seconds + 0.2 * elapsed
            )
            return upto

    def wait_committed(self, target: int, offsets: tuple[int, int] | None = None) -> None:
        """Wait until every record below `target` is committed; raise `StorageError` if the
        store fails meanwhile (after the sealer's retries, or one fresh attempt when it was
        failing already). `offsets` are those of a `tiered` append, for the message.

        While the sealer is idle, the waiting thread seals the oldest pending head itself
        ("caller runs"): a flush or a `tiered` append then costs no thread hand-off.
        """
        with self.lock:
            if self.manifest.next_offset >= target:
                return
            seen = self.seal_attempts
            self._poke()
            while self.manifest.next_offset < target:
                self.check_usable()
                if self.seal_error is not None and self.seal_attempts > seen:
                    raise self._not_committed(offsets) from self.seal_error
                now = time.monotonic()
                if self.pending and not self.sealing and (now >= self.retry_at or self._poked):
                    self._seal_next()
                    continue
                self.cond.wait(0.5 if self.sealing else max(0.005, self.retry_at - now))

    def _seal_next(self) -> None:
        """Seal the oldest pending head in this thread (caller holds `lock`, released while
        sealing). `sealing` keeps every other thread from sealing meanwhile."""
        self._poked = False
        self.sealing = True
        head = self.pending[0]
        heads = [head]
        if head.group is not None:
            heads = list(itertools.takewhile(lambda h: h.group == head.group, self.pending))
        self.lock.release()
        try:
            ok = self._attempt(heads)
        finally:
            self.lock.acquire()
            self.sealing = False
            self.cond.notify_all()
        if ok:
            self.retry_at = 0.0
        else:
            delay = min(0.05 * 2 ** (self.seal_failures - 1), MAX_SEAL_BACKOFF)
            self.retry_at = time.monotonic() + delay

    def _not_committed(self, offsets: tuple[int, int] | None) -> StorageError:
        kept = (
            f"records acknowledged as 'local' are kept in {self.heads_dir} and are sealed "
            "once the store is back, or when the log is reopened"
        )
        if offsets is None:
            return StorageError(f"{self.seal_error}; flush() did not complete: {kept}")
        first, last = offsets
        return StorageError(
            f"{self.seal_error}; the 'tiered' append of offsets {first}..{last} was not "
            "acknowledged: its records stay appended in memory only, and are committed once "
            f"the store is back unless the log is closed first; {kept}"
        )

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
        interval = options.lease_check_interval
        next_check = time.monotonic() + interval
        while True:
            check = False
            with self.lock:
                while True:
                    if self.error is not None:
                        return
                    now = time.monotonic()
                    if self.closed and (not self.pending or self._gave_up()):
                        return
                    idle = not self.sealing
                    deferred_until = self._deferred_until(now)
                    if (
                        self.pending
                        and idle
                        and deferred_until is None
                        and (now >= self.retry_at or self._poked)
                    ):
                        self._seal_next()
                        continue
                    if idle:
                        self._poked = False
                    age = now - self.active.created
                    if not self.closed and self.active.records and age >= options.segment_max_age:
                        self._roll()
                        continue
                    if self._appended_since_check and now >= next_check:
                        check = True
                        break
                    deadlines = [next_check if self._appended_since_check else now + interval]
                    if deferred_until is not None:
                        deadlines.append(deferred_until)
                    elif self.pending:
                        deadlines.append(self.retry_at if idle else now + 0.5)
                    if self.active.records:
                        deadlines.append(self.active.created + options.segment_max_age)
                    self.cond.wait(max(0.005, min(deadlines) - now))
            if check:
                next_check = time.monotonic() + interval
                self._appended_since_check = False
                self._check_lease()

    @contextlib.contextmanager
    def defer_seals(self) -> Iterator[None]:
        """While held (by an upload streaming batches in): the sealer leaves up to
        `DEFERRED_HEADS` rolled heads unsealed (see the module doc); on exit, when no other
        upload holds it, the sealer seals what waits."""
        with self.lock:
            self.deferrals += 1
        try:
            yield
        finally:
            with self.lock:
                self.deferrals -= 1
                if not self.deferrals:
                    self.cond.notify_all()

    def _deferred_until(self, now: float) -> float | None:
        """Until when the sealer leaves the pending heads unsealed (caller holds `lock`); None
        when it seals now: no upload defers, the writer is closing, too many heads wait,
        the oldest is `segment_max_age` old, or no record arrived for `DEFER_IDLE` s."""
        if not self.deferrals or self.closed or not self.pending:
            return None
        if len(self.pending) > DEFERRED_HEADS or self.pending[0].group is not None:
            return None
        until = min(
            self.last_append + DEFER_IDLE,
            self.pending[0].created + self.catalog.options.segment_max_age,
        )
        return until if until > now else None

    def _gave_up(self) -> bool:
        """After close: the store kept failing for a fresh round of attempts (holds `lock`)."""
        return self.seal_error is not None and self.seal_attempts > self._attempts_at_close

    def _attempt(self, heads: list[Head]) -> bool:
        """One attempt to seal the oldest pending `heads` (one, or one bulk append's) by one
        commit; False if it failed (they stay pending)."""
        first, last = heads[0].start_offset, heads[-1].next_offset - 1
        try:
            self._seal(heads)
        except FencedError as e:
            self._fenced(str(e))
            return True
        except Exception as e:  # the store failed (or anything else): keep the head, retry
            with self.lock:
                self.seal_failures += 1
                self.seal_attempts += 1
                attempts = self.seal_failures
                if attempts > self.catalog.options.seal_retries:
                    error = StorageError(
                        f"sealing stream {self.name!r} offsets {first}..{last} failed after "
                        f"{attempts} attempts: {e}"
                    )
                    error.__cause__ = e
                    self.seal_error = error
                self.cond.notify_all()
            _log.warning(
                "stream %r: sealing offsets %d..%d failed (attempt %d, retrying): %s",
                self.name,
                first,
                last,
                attempts,
                e,
            )
            return False
        with self.lock:
            self.seal_failures = 0
            self.seal_error = None
            self.seal_attempts += 1
            self.cond.notify_all()
        return True

    def _check_lease(self) -> None:
        try:
            current = self.lease.is_current()
        except TransitError:
            return  # a flaky store must not fence us; the commit protocol stays the guard
        if not current:
            self._fenced(f"a newer writer took the lease over from epoch {self.epoch}")

    def _fenced(self, detail: str) -> None:
        """This writer lost the stream: set its head files aside and fail from now on."""
        with self.sync_lock, self.lock:
            if isinstance(self.error, FencedError):
                return
            for head in [*self.pending, self.active]:
                head.close_file()
            if self.spare is not None:
                self.spare.unlink(missing_ok=True)
                self.spare = None
            kept = []
            for _, epoch, path in list_head_files(self.heads_dir):
                if epoch == self.epoch:
                    reason = f"its writer was fenced: {detail}"
                    kept.append(str(self._set_aside(path, epoch, "fenced", reason)))
            where = (
                f"they are kept in {', '.join(kept)}"
                if kept
                else "it had no acknowledged records on disk that were not committed"
            )
            self.error = FencedError(
                f"the writer of stream {self.name!r} (epoch {self.epoch}) was fenced by a newer "
                f"writer ({detail}); its acknowledged, uncommitted records are set aside (see "
                f"Log.orphaned_heads(); Log.reappend_orphaned() re-appends them to a branch): "
                f"{where}"
            )
            self._refresh_fast()
            self.cond.notify_all()

    def _seal(self, heads: list[Head]) -> None:
        """Seal `heads` (the oldest pending ones) into one segment each and commit them by
        one commit; several are encoded in parallel (Parquet encoding releases the GIL)."""
        tables = [self._checked_table(head) for head in heads]
        if len(tables) == 1:
            written = [self._write_segment(tables[0])]
        else:
            with ThreadPoolExecutor(min(len(tables), os.cpu_count() or 1)) as pool:
                written = list(pool.map(self._write_segment, tables))
        segs = [seg for seg, _ in written]
        durables = [durable for _, durable in written]
        actions: list[dict[str, Any]] = []
        user = heads[0].user_schema
        if not _same_schema(user, self.manifest.schema):
            actions.append({"type": "evolve_schema", "schema": schema_to_json(user)})
        actions.extend(seg.to_action() for seg in segs)
        generation = self.manifest.generation + 1
        try:
            commit = self.commit_log.create(
                generation, self.manifest.root, actions, self._identity(), after=durables
            )
        except CommitConflictError:
            commit = self._resolve_conflict(generation, segs)
            for durable in durables:  # our own earlier attempt: its segments are ours too
                durable()
        with self.sync_lock, self.lock:
            self.manifest = self.catalog.remember(self.name, commit)
            for head in heads:
                self.pending.popleft()
                if self.spare is None and head.fd is not None and not self.closed:
                    spare = self.heads_dir / spare_name(self.epoch, self._spares)
                    self.spare = head.recycle(spare)
                    self._spares += 1
                else:
                    head.discard_files()
            self._refresh_fast()
            self.cond.notify_all()
        self.catalog.notify_changed(self.name)

    def _checked_table(self, head: Head) -> pa.Table:
        """The head's records as a table, after re-checking a recovered head's frames and that
        the offsets are the head's, without a gap."""
        if head.recovered is not None:
            head.recovered.recheck()
        table = head.table()
        offsets = table.column("_offset")
        if table.num_rows != head.records or (
            table.num_rows
            and (offsets[0].as_py(), offsets[-1].as_py())
            != (head.start_offset, head.next_offset - 1)
        ):
            raise IntegrityError(f"head of stream {self.name!r} at {head.start_offset} is torn")
        return table

    def _write_segment(self, table: pa.Table) -> tuple[SegmentRef, Durable]:
        """Encode a head table as a Parquet segment and store it; return its reference and
        the `Durable` the commit adding it waits for."""
        data, meta = self.catalog.encode_segment(table, self.name)
        path = segment_path(self.folder, meta["first_offset"], meta["last_offset"], meta["blake3"])
        # Always put (the name is content-addressed, so overwriting is harmless): skipping an
        # existing object would commit a partial upload left by an interrupted attempt.
        durable = self.catalog.put_new_segment(path, data, meta["blake3"])
        return SegmentRef(path=path, **meta), durable

    def _resolve_conflict(self, generation: int, segs: list[SegmentRef]) -> dict[str, Any]:
        """Our commit slot was taken: by ourselves (a retried request), or by a fencing writer."""
        existing = self.commit_log.read(generation, self.manifest.root)
        if existing["writer"].get("id") == self.writer_id and all(
            seg.to_action() in existing["actions"] for seg in segs
        ):
            return existing
        if any(a.get("type") == "fence" for a in existing["actions"]):
            raise FencedError(f"a fence commit took generation {generation}")
        raise FencedError(
            f"commit {generation} was created by writer {existing['writer'].get('id')}"
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
        """Seal and commit everything, release the lease. If the store keeps failing, the
        heads stay on disk (records acknowledged `local` are sealed on reopen) and the
        failure is raised."""
        with self.lock:
            if self.closed:
                return
            if self.error is None:
                self._roll()
            self.closed = True
            self._refresh_fast()
            self._attempts_at_close = self.seal_attempts
            self._poke()
        self.sealer.join()
        with self.lock:
            while self.sealing:  # a flush or `tiered` append of another thread seals
                self.cond.wait(0.5)
        with self.sync_lock, self.lock:
            for head in [*self.pending, self.active]:
                head.close_file()
            unsealed = list(self.pending)
            error = self.error
            if self.spare is not None:
                self.spare.unlink(missing_ok=True)
                self.spare = None
        if error is None and not unsealed:
            self.lease.release()
        self._release_locks()
        if error is not None and not isinstance(error, FencedError):
            raise error
        if unsealed and error is None:
            first, last = unsealed[0].start_offset, unsealed[-1].next_offset - 1
            raise StorageError(
                f"closing stream {self.name!r}: offsets {first}..{last} could not be sealed "
                f"({self.seal_error}); records acknowledged as 'local' are kept in "
                f"{self.heads_dir} and are sealed when the log is reopened"
            ) from self.seal_error


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
