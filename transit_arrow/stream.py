"""Streams: the facade of one named, append-only stream (DESIGN §4, §8).

`Stream` validates, delegates to the engine (`engine.writer` for appends, `engine.read` for
reads, the feature modules for lineage and checkpoints) and wraps results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from .engine.catalog import Catalog
from .engine.read import ReplayPlan, live_plan
from .engine.writer import Ack, close_writer, writer_for
from .errors import InvalidInputError, TransitError
from .integrity import Checkpoint, save_checkpoint
from .lineage import ancestry_table, create_branch
from .query.connection import past_plan
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
    """

    def __init__(self, log: Owner, catalog: Catalog, name: str, *, take_over: bool = False) -> None:
        self.log = log
        self.catalog = catalog
        self.name = name
        self.take_over = take_over

    def __repr__(self) -> str:
        if self.catalog.closed:
            return f"<Stream {self.name!r} of {self.catalog.uri} (closed)>"
        try:
            return self._summary("Stream")
        except TransitError as e:  # a repr never raises: say why the stream cannot be read
            return f"<Stream {self.name!r} of {self.catalog.uri} (unreadable: {e})>"

    def _replay(self) -> ReplayPlan:
        return live_plan(self.catalog, self.name)

    # --- writing --------------------------------------------------------------------------

    def append(self, data: Any, *, durability: Durability | None = None) -> Ack:
        """Append one call's records atomically and return an `Ack`.

        Args:
            data: a dict (one record), bytes/str (a `payload` column), a list of dicts, or any
                Arrow producer (pyarrow Table/RecordBatch/RecordBatchReader, polars, pandas, a
                DuckDB result). Columns starting with '_' are reserved, except `_timestamp` and
                `_headers`, which a caller may supply.
            durability: "memory", "local" or "tiered"; defaults to the log's setting.

        Returns:
            The offsets assigned and the durability level actually reached.

        Raises:
            InvalidInputError: the data is not acceptable (nothing is appended).
            SchemaMismatchError: a column changes type incompatibly (nothing is appended).
            FencedError: another writer took over this stream.
        """
        catalog = self.catalog
        level = catalog.options.durability if durability is None else durability
        if level not in DURABILITY_LEVELS:
            raise InvalidInputError(
                f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {level!r}"
            )
        return writer_for(catalog, self.name, take_over=self.take_over).append(data, level)

    def flush(self) -> int:
        """Seal the head into a segment and wait until it is committed; returns the generation."""
        return self.catalog.flush(self.name).generation

    def close(self) -> None:
        """Seal what is unsealed, commit it, and release the writer lease."""
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
    ) -> Stream:
        """Fork this stream at offset `at` (default: its last record); see `Log.branch`."""
        self.catalog.check_open()
        position: object = self.name if at is None else at
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
        self.catalog.check_open()
        if (checkpoint is None) == (generation is None):
            raise InvalidInputError("pass exactly one of a checkpoint or generation=")
        plan = past_plan(self.catalog, self.name, generation=generation, checkpoint=checkpoint)
        return StreamView(self.catalog, self.name, plan.manifest)

    def as_of(self, timestamp: datetime | str) -> StreamView:
        """A read-only view of the latest generation committed at or before `timestamp`
        (a datetime, naive meaning UTC, or an ISO 8601 string)."""
        self.catalog.check_open()
        return StreamView(
            self.catalog, self.name, self.catalog.manifest_as_of(self.name, timestamp)
        )

    def checkpoint(self, kind: str = "manual") -> Checkpoint:
        """Seal and commit what this process wrote, then record and return a checkpoint of the
        latest generation (it verifies forever, whatever is committed later)."""
        return save_checkpoint(self.catalog, self.catalog.flush(self.name), kind)
