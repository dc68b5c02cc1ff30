"""Streams: the facade of one named, append-only stream (DESIGN §4, §8).

`Stream` validates, delegates to the engine (`engine.writer` for appends, `engine.read` for
reads, the feature modules for lineage and checkpoints) and wraps results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from .compaction import AutoCompactor, CompactReport, RetainReport, compact, retain
from .engine.catalog import Catalog
from .engine.read import ReplayPlan, live_plan
from .engine.tail import Tail, check_tail_args
from .engine.writer import Ack, Writer, close_writer, writer_for
from .errors import InvalidInputError, LogClosedError, TransitError
from .integrity import (
    Checkpoint,
    checkpoint_kind,
    load_private_key,
    save_checkpoint,
    sign_checkpoint,
)
from .lifecycle import check_existing_branch
from .lineage import ancestry_table, create_branch, metadata_of
from .names import validate_stream_name
from .producers import append_once, check_producer, screen_headers
from .query.connection import past_plan
from .record import check_appendable
from .typing import DURABILITY_LEVELS, Durability
from .view import Readable, StreamView

__all__ = ["Ack", "Stream"]


class Owner(Protocol):
    """What a `Stream` needs of the `Log` it belongs to (kept structural: the log module
    imports this one, not the other way round)."""

    @property
    def uri(self) -> str:
        """The log's root URI."""
        ...

    def stream(self, name: str, *, take_over: bool = False) -> Stream:
        """The handle of stream `name`."""
        ...


class Stream(Readable):
    """A named, append-only stream of records. Get one from `Log.stream` or `Log.create_stream`.

    All public methods are thread-safe. Writing takes the stream's writer lease on first use.
    After `close()` (or the log's), every method raises `LogClosedError`; `Log.stream(name)`
    then hands out a new handle.
    """

    def __init__(self, log: Owner, catalog: Catalog, name: str, *, take_over: bool = False) -> None:
        self.log = log
        self.catalog = catalog
        self.name = name
        self.take_over = take_over
        self.closed = False

    def __repr__(self) -> str:
        if self.closed:
            return f"<Stream {self.name!r} of {self.catalog.uri} (closed)>"
        try:
            return self._summary("Stream")
        except TransitError as e:  # a repr never raises: say why the stream cannot be read
            return f"<Stream {self.name!r} of {self.catalog.uri} (unreadable: {e})>"

    def check_open(self) -> None:
        """Raise `LogClosedError` once this handle or its log is closed."""
        if self.closed:
            raise LogClosedError(
                f"stream handle {self.name!r} is closed; get a new one with log.stream("
                f"{self.name!r})"
            )
        self.catalog.check_open()

    def _replay(self) -> ReplayPlan:
        self.check_open()
        return live_plan(self.catalog, self.name)

    # --- writing --------------------------------------------------------------------------

    def append(
        self,
        data: Any,
        *,
        durability: Durability | None = None,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> Ack:
        """Append one call's records atomically and return an `Ack`.

        Args:
            data: a dict (one record), bytes/str (a `payload` column), a list of dicts, or any
                Arrow producer (pyarrow Table/RecordBatch/RecordBatchReader, polars, pandas, a
                DuckDB result). Columns starting with '_' are reserved, except `_timestamp` and
                `_headers`, which a caller may supply.
            durability: "memory", "local" or "tiered"; defaults to the log's setting.
            producer: with `sequence`, makes the call idempotent: `producer` names a source of
                appends that numbers its calls 0, 1, 2, ... A retried `(producer, sequence)`
                is appended once; a retry returns the original call's offsets (at the
                durability asked). The pair is kept in the last record's `_headers` (keys
                `transit.producer`, `transit.sequence`, `transit.records`, reserved).
            sequence: the call's number for `producer`: the last acknowledged one + 1.

        Returns:
            The offsets assigned and the durability level actually reached.

        Raises:
            InvalidInputError: the data is not acceptable, or `sequence` skips ahead of the
                producer's last acknowledged + 1 (nothing is appended).
            SchemaMismatchError: a column changes type incompatibly (nothing is appended).
            FencedError: another writer took over this stream.
        """
        catalog = self.catalog
        if (
            type(data) is dict
            and producer is None
            and sequence is None
            and not self.closed
            and not catalog.closed
        ):
            # The per-record hot path: a plain record to this process's writer, appended by
            # the function it generated for its schema. That refuses (None, nothing changed)
            # what it cannot take: reserved columns, other types, a level that is no level.
            writer = catalog.writers.get(self.name)
            if type(writer) is Writer:
                fast = writer.fast_ok
                if fast is not None:
                    ack = fast.append(
                        data, catalog.options.durability if durability is None else durability
                    )
                    if ack is not None:
                        return ack
        self.check_open()
        level = catalog.options.durability if durability is None else durability
        if level not in DURABILITY_LEVELS:
            raise InvalidInputError(
                f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {level!r}"
            )
        once = None if producer is None and sequence is None else check_producer(producer, sequence)
        if type(data) is pa.Table or type(data) is pa.RecordBatch:
            if "_headers" in data.schema.names:  # else no reserved header to screen
                data = screen_headers(data)
        elif type(data) is not dict or "_headers" in data:  # plain dicts: the per-record path
            data = screen_headers(data)
        if not catalog.has_writer(self.name):
            # The first append of this process takes the writer lease (files in the store and
            # the local dir): refuse bad data before that, so a refusal leaves no trace.
            data = check_appendable(data, catalog.manifest(self.name, refresh=True).schema)
        if once is not None:
            return append_once(catalog, self.name, data, level, *once, take_over=self.take_over)
        return writer_for(catalog, self.name, take_over=self.take_over).append(data, level)

    def tail(self, start: int | None = None, *, timeout: float | None = None) -> Tail:
        """Record batches from offset `start` (default 0) on, as they are appended.

        Yields what `read(start)` returns, then every new record once it is visible (in this
        process: once appended; from other processes on this machine: once durable), in
        offset order with no gap and no duplicate, whether records sit in a head or were
        sealed meanwhile. A branch's tail starts in its ancestors' history. Waiting uses no
        busy polling (see `docs/format.md`, "Tails").

        Args:
            start: the first offset to yield.
            timeout: stop after this many seconds without a new record (None: never; 0: stop
                at the current end).

        Returns:
            A `Tail`: an iterator of `pyarrow.RecordBatch` whose `position` is the offset of
            the next record; `close()` (from any thread) ends it, as closing the log does.
        """
        self.check_open()
        first, idle = check_tail_args(start, timeout)
        return Tail(self.catalog, self.name, first, timeout=idle)

    def flush(self) -> int:
        """Seal the head into a segment and wait until it is committed; returns the generation."""
        self.check_open()
        return self.catalog.flush(self.name).generation

    def close(self) -> None:
        """Seal what is unsealed, commit it, and release the writer lease. The handle is
        closed for good: its methods then raise `LogClosedError` (closing twice is fine)."""
        if self.closed:
            return
        self.closed = True
        if not self.catalog.closed:
            close_writer(self.catalog, self.name)

    # --- lineage and time travel ---------------------------------------------------------

    def branch(
        self,
        name: str,
        at: int | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Stream:
        """Fork this stream at offset `at` (default: its last record); see `Log.branch`."""
        self.check_open()
        position: object = self.name if at is None else at
        if exist_ok and self.catalog.exists(validate_stream_name(name)):
            metadata = metadata_of(actor, reason, labels)
            check_existing_branch(self.catalog, name, position, self.name, metadata)
            return self.log.stream(name)
        manifest = create_branch(
            self.catalog,
            name,
            position,
            actor=actor,
            reason=reason,
            labels=labels,
            default_parent=self.name,
        )
        return self.log.stream(manifest.stream)

    def ancestry(self) -> pa.Table:
        """Every position this stream's history depends on (parents, bases, merge parents,
        recursively), nearest first, with the generation and root each was pinned at."""
        return ancestry_table(self.catalog, self._replay().manifest)

    def at(
        self, checkpoint: Checkpoint | None = None, *, generation: int | None = None
    ) -> StreamView:
        """A read-only view at a generation, or at a checkpoint (whose root must match).

        Raises:
            NotFoundError: no such generation.
            IntegrityError: the stream's commit at the checkpoint's generation has another root.
        """
        self.check_open()
        if (checkpoint is None) == (generation is None):
            raise InvalidInputError("pass exactly one of a checkpoint or generation=")
        plan = past_plan(self.catalog, self.name, generation=generation, checkpoint=checkpoint)
        return StreamView(self.catalog, self.name, plan.manifest)

    def as_of(self, timestamp: datetime | str) -> StreamView:
        """A read-only view of the latest generation committed at or before `timestamp`
        (a datetime, naive meaning UTC, or an ISO 8601 string)."""
        self.check_open()
        return StreamView(
            self.catalog, self.name, self.catalog.manifest_as_of(self.name, timestamp)
        )

    # --- compaction and retention (DESIGN §10) ---------------------------------------------

    def compact(
        self,
        *,
        small_bytes: int = 16 * 1024 * 1024,
        target_bytes: int = 128 * 1024 * 1024,
        min_segments: int = 2,
        dry_run: bool = False,
    ) -> CompactReport:
        """Rewrite runs of adjacent segments smaller than `small_bytes` into one segment each
        (up to about `target_bytes`), by one commit that lists what it replaced. Each new file
        is compared record by record with the files it replaces before the commit; earlier
        generations, branches and checkpoints keep reading the replaced files. Takes the
        stream's writer lease (`WriterBusyError` if another process writes it)."""
        self.check_open()
        return compact(
            self.catalog,
            self.name,
            small_bytes=small_bytes,
            target_bytes=target_bytes,
            min_segments=min_segments,
            dry_run=dry_run,
        )

    def retain(
        self,
        *,
        before_offset: int | None = None,
        older_than: float | None = None,
        keep_records: int | None = None,
        dry_run: bool = False,
    ) -> RetainReport:
        """Drop the oldest whole segments from the stream's replay, by a commit: those whose
        records are all below `before_offset`, or older than `older_than` seconds, or beyond
        the newest `keep_records` records (give exactly one). Offsets never move; earlier
        generations, branches and checkpoints keep reading the dropped records until `gc`."""
        self.check_open()
        return retain(
            self.catalog,
            self.name,
            before_offset=before_offset,
            older_than=older_than,
            keep_records=keep_records,
            dry_run=dry_run,
        )

    def auto_compact(
        self, *, threshold: int = 8, small_bytes: int = 16 * 1024 * 1024
    ) -> AutoCompactor:
        """Compact this stream in the background whenever it has `threshold` segments smaller
        than `small_bytes` (off unless called; `stop()` the returned object to end it)."""
        self.check_open()
        return AutoCompactor(self.catalog, self.name, threshold=threshold, small_bytes=small_bytes)

    def checkpoint(self, kind: str = "manual", *, sign_with: Any = None) -> Checkpoint:
        """Seal and commit what this process wrote, then record and return a checkpoint of the
        latest generation (it verifies forever, whatever is committed later).

        Args:
            kind: a label (letters, digits, '.', '_', '-').
            sign_with: an Ed25519 private key (a `cryptography` key object, PEM, or the 32
                raw bytes / 64 hex digits of its seed; needs the `sign` extra): the returned
                checkpoint carries the signer's public key and a signature over its canonical
                bytes, which `Log.verify(cp, trusted_keys=...)` checks. The recorded copy in
                the log is unsigned; keep the returned one (`to_json()`).
        """
        self.check_open()
        checkpoint_kind(kind)
        key = load_private_key(sign_with) if sign_with is not None else None
        cp = save_checkpoint(self.catalog, self.catalog.flush(self.name), kind)
        return sign_checkpoint(cp, key) if key is not None else cp
