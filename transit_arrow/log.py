"""The log: everything under one root URI, and `open()` (DESIGN §1, §3).

`Log` is the facade over the engine's `Catalog`: each method validates its arguments, calls one
function of the layer below, and wraps the result (a `Stream`, a `StreamView`, a table).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .cursors import Cursor, cursors_table, open_cursor
from .engine.catalog import Catalog, Options
from .engine.writer import Ack
from .errors import InvalidInputError, StorageError, TransitError
from .heads import orphaned_heads, reappend_orphaned
from .inspect import checkpoints_table, streams_table
from .integrity import Checkpoint, VerifyReport, verify
from .lifecycle import (
    check_existing_branch,
    check_existing_materialization,
    check_existing_root,
    delete_stream,
    drop_materialization,
)
from .lineage import children_table, create_branch, lineage_table, metadata_of
from .maintenance import GcReport, HydrateReport, collect_garbage, hydrate
from .manifest import check_metadata, create_action
from .materialize import Materialization, Reducer, define, list_definitions, load
from .merge import create_merge
from .names import validate_stream_name
from .query import distributed
from .query.connection import connect, create_view, run_sql, sql
from .query.frames import scan_all
from .record import check_names, evolve_schema
from .report import LINEAGE_METADATA, LineageGraph, Report, build_report, lineage_graph
from .report.display import log_html
from .report.model import MetricSpec
from .scanplan import Filters, LogScanPlan
from .segments.parquet import COMPRESSIONS, DEFAULT_COMPRESSION, ROW_GROUP_SIZE
from .storage import ObjectStore, store_from_uri
from .stream import Stream
from .typing import DURABILITY_LEVELS, Durability

if TYPE_CHECKING:
    import dask.dataframe as dd
    import polars as pl
    from duckdb import DuckDBPyConnection, DuckDBPyRelation

__all__ = ["Log", "open"]


def open(  # the entry point is deliberately named like the builtin, as in io.open
    uri: str | os.PathLike[str] | ObjectStore,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    durability: Durability = "local",
    segment_max_records: int = 1_000_000,
    segment_max_bytes: int = 128 * 1024 * 1024,
    segment_max_age: float = 60.0,
    row_group_size: int = ROW_GROUP_SIZE,
    segment_compression: str = DEFAULT_COMPRESSION,
    create: bool = True,
    storage_options: dict[str, Any] | None = None,
    cache_max_bytes: int = 8 * 1024**3,
) -> Log:
    """Open (or create) the log at `uri` and return a `Log`.

    Args:
        uri: a folder path, `file://...`, `memory://name`, `s3://bucket/prefix`, or an
            `ObjectStore` instance (e.g. a wrapper injecting faults, in tests).
        local_dir: where heads live; defaults to `<root>/_local` for a local root and to a
            per-URI folder otherwise.
        durability: default durability of appends ("memory", "local" or "tiered").
        segment_max_records: seal the head once it holds this many records.
        segment_max_bytes: ... or this many bytes of Arrow data.
        segment_max_age: ... or once its oldest record is this many seconds old.
        row_group_size: rows per Parquet row group in sealed segments.
        segment_compression: the Parquet codec of the segments this handle seals: "auto"
            (default: zstd, about half the bytes of snappy on text, except snappy for a
            segment of less than 1 MiB, which then decodes in about half the time), "zstd",
            "snappy" (about 0.8x zstd's encoding time), "lz4_raw" or "none". Only new
            segments use it; readers take each file's codec from the file.
        create: create the log when `uri` is empty or missing (else `NotALogError`).
        storage_options: backend settings for remote roots, e.g. for S3 `endpoint_url`,
            `key`, `secret`, `region` (deltalake-style `AWS_*` names are accepted too).
        cache_max_bytes: budget of the local cache of segments fetched from a remote root.

    Raises:
        NotALogError: `uri` holds something that is not a transit-arrow log.
        InvalidInputError: an option is out of range.
    """
    if durability not in DURABILITY_LEVELS:
        raise InvalidInputError(
            f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {durability!r}"
        )
    for name, value in (
        ("segment_max_records", segment_max_records),
        ("segment_max_bytes", segment_max_bytes),
        ("row_group_size", row_group_size),
        ("cache_max_bytes", cache_max_bytes),
    ):
        if not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, not {value!r}")
    if segment_compression not in COMPRESSIONS:
        raise InvalidInputError(
            f"segment_compression must be one of {', '.join(COMPRESSIONS)}, not "
            f"{segment_compression!r}"
        )
    if isinstance(segment_max_age, bool) or not isinstance(segment_max_age, int | float):
        raise InvalidInputError(
            f"segment_max_age must be a number of seconds, not {segment_max_age!r}"
        )
    if not segment_max_age > 0:
        raise InvalidInputError(f"segment_max_age must be > 0 seconds, not {segment_max_age!r}")
    try:
        store = uri if isinstance(uri, ObjectStore) else store_from_uri(uri, storage_options)
    except ValueError as e:
        raise InvalidInputError(str(e)) from None
    options = Options(
        durability=durability,
        segment_max_records=segment_max_records,
        segment_max_bytes=segment_max_bytes,
        segment_max_age=float(segment_max_age),
        row_group_size=row_group_size,
        segment_compression=segment_compression,
        max_pending_heads=4,
        seal_retries=5,
        lease_check_interval=1.0,
        cache_max_bytes=cache_max_bytes,
    )
    try:
        return Log(Catalog(store, options, local_dir=local_dir, create=create))
    except TransitError:
        raise
    except OSError as e:  # e.g. the URI names a file, or the local dir cannot be made
        raise StorageError(f"cannot open a log at {store.uri}: {e}") from e


class Log:
    """A transit-arrow log: streams, their commits and segments under one root.

    Open one with `transit_arrow.open(uri)`; use it as a context manager or call `close()`.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._handles: dict[str, Stream] = {}

    @property
    def uri(self) -> str:
        """The log's root URI."""
        return self.catalog.uri

    @property
    def store(self) -> ObjectStore:
        """The object store holding the log (every failure of it is a `StorageError`)."""
        return self.catalog.store

    @property
    def local_dir(self) -> Path:
        """This machine's folder for heads and the segment cache."""
        return self.catalog.local_dir

    def __repr__(self) -> str:
        return f"<Log {self.uri}>"

    def _repr_html_(self) -> str:
        return log_html(self)

    def __enter__(self) -> Log:
        self.catalog.check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Seal and commit every head this process writes, release leases, and close the log."""
        self.catalog.close()

    # --- streams --------------------------------------------------------------------------

    def create_stream(
        self,
        name: str,
        *,
        schema: pa.Schema | None = None,
        metadata: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Stream:
        """Create a root stream and return it.

        Args:
            name: 1-255 characters from letters, digits, '.', '_', '-', '/'.
            schema: optional user schema (else fixed by the first append).
            metadata: optional `actor`, `reason` (strings) and `labels` (str -> str).
            exist_ok: return the existing stream when it is what this call would create (a
                root with the same schema, if given, and metadata) instead of refusing.

        Raises:
            AlreadyExistsError: a stream with this name exists (with `exist_ok`: and differs,
                the message says how).
            InvalidInputError: bad name, schema or metadata.
        """
        self.catalog.check_open()
        validate_stream_name(name)
        create = create_action(
            "root",
            schema=_check_schema(schema) if schema is not None else None,
            metadata=check_metadata(metadata),
            start_offset=0,
        )
        if exist_ok and self.catalog.exists(name):
            check_existing_root(self.catalog, name, create["schema"], create["metadata"])
            return self.stream(name)
        return self.stream(self.catalog.create(name, create).stream)

    def stream(self, name: str, *, take_over: bool = False) -> Stream:
        """Return the stream called `name` (one handle per name per `Log`).

        Args:
            name: the stream's name.
            take_over: when writing, fence another live writer instead of failing.

        Raises:
            StreamNotFoundError: no such stream (the message lists near names).
        """
        self.catalog.check_open()
        validate_stream_name(name)
        with self.catalog.lock:
            handle = self._handles.get(name)
            if handle is None or handle.closed:  # a closed handle stays closed: a new one
                if not self.catalog.known(name) and self.store.local_path("") is not None:
                    # A local folder: two `stat`s (commit 0, no tombstone); the history is
                    # read when first needed, so a fresh handle's time travel to an early
                    # generation reads only the commits up to it.
                    if not self.catalog.exists(name):
                        raise self.catalog.not_found(name)
                elif self.catalog.manifest(name, refresh=True).deleted:
                    raise self.catalog.not_found(name)
                handle = self._handles[name] = Stream(self, self.catalog, name, take_over=take_over)
            elif take_over:
                handle.take_over = True
            return handle

    def streams(self) -> pa.Table:
        """One row per stream: name, kind, next_offset, committed_offset, generation, root,
        segments, created_at, and `error` (why a stream's history cannot be read, else null)."""
        self.catalog.check_open()
        return streams_table(self.catalog)

    # --- lineage --------------------------------------------------------------------------

    def branch(
        self,
        name: str,
        at: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Stream:
        """Fork `at` ("parent@N", or "parent" for its last record) into a new stream `name`.

        Creation writes one commit and copies no bytes, whatever the parent's size. The branch
        replays the parent through offset N, then its own records from N+1. If N is in the
        parent's unsealed head (written by this process), the head is sealed first. With
        `exist_ok`, an existing branch of the same parent (at the same offset, when `at` names
        one) with the same metadata is returned instead of refused.

        Raises:
            StreamNotFoundError: the parent does not exist.
            AlreadyExistsError: `name` exists (with `exist_ok`: and differs).
            InvalidInputError: bad name, or N is not an offset of the parent.
        """
        self.catalog.check_open()
        validate_stream_name(name)
        if exist_ok and self.catalog.exists(name):
            metadata = metadata_of(actor, reason, labels)
            check_existing_branch(self.catalog, name, at, None, metadata)
            return self.stream(name)
        manifest = create_branch(self.catalog, name, at, actor=actor, reason=reason, labels=labels)
        return self.stream(manifest.stream)

    def merge(
        self,
        name: str,
        parents: list[str],
        *,
        base: str | None = None,
        policy: str = "pin",
        policy_params: dict[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Stream:
        """Create merge stream `name` of >= 2 parent heads ("a", "b@17", ...).

        Args:
            name: the new stream.
            parents: distinct parent streams, each pinned at its last committed record or at
                an explicit offset.
            base: the shared prefix ("p@N"); defaults to the parents' nearest common ancestor.
            policy: "pin", "fast_forward", "concat", "interleave" or "custom:<name>" (DESIGN
                §7); recorded with `policy_params` and a version in the merge's commit.

        Raises:
            MergeConflictError: fewer than 2 or repeated parents, a base that is not an
                ancestor of every parent, a fast_forward of diverged parents.
            StreamNotFoundError: a parent does not exist. Nothing is written on any error.
        """
        self.catalog.check_open()
        manifest = create_merge(
            self.catalog,
            name,
            parents,
            base=base,
            policy=policy,
            policy_params=policy_params,
            metadata=metadata_of(actor, reason, labels),
        )
        return self.stream(manifest.stream)

    def lineage(self) -> pa.Table:
        """The lineage table: one row per stream with its kind, parent, merge parents, base,
        policy, actor, reason, labels, creation time, next offset, generation and root."""
        self.catalog.check_open()
        table = lineage_table(self.catalog)
        # Tagged so that Jupyter shows it as a picture (report.register_ipython_formatters).
        return table.replace_schema_metadata({**(table.schema.metadata or {}), **LINEAGE_METADATA})

    def children(self, name: str) -> pa.Table:
        """Streams whose descriptor references `name` (as parent, merge parent or base)."""
        self.catalog.check_open()
        return children_table(self.catalog, name)

    def lineage_graph(
        self, *, stream: str | None = None, prefix: str | None = None
    ) -> LineageGraph:
        """The lineage DAG: all of it, `stream`'s subtree, or the streams under `prefix`.

        Shown as SVG in Jupyter; `to_svg()`, `to_mermaid()`, `to_dot()`, `to_text()` and
        `to_json()` export it.
        """
        self.catalog.check_open()
        return lineage_graph(self, stream=stream, prefix=prefix)

    def report(
        self,
        *,
        streams: Sequence[str] | str | None = None,
        prefix: str | None = None,
        metrics: Mapping[str, MetricSpec] | None = None,
        metrics_scope: str = "own",
        deep: bool = False,
        verify: bool = True,
        title: str | None = None,
    ) -> Report:
        """The evaluation provenance report (DESIGN §11) of every stream, of `streams` and
        what derives from them, or of the streams under `prefix`.

        It shows the lineage drawn, per-branch records (own vs inherited) and `metrics` (SQL
        aggregates over each stream's records, or `("mean", "score")`-style pairs), what each
        merge did and why, and the verification of every stream and checkpoint with the
        `transit verify` commands that re-check them. Displayed inline in Jupyter;
        `report.save("report.html")` writes one self-contained HTML file. See
        `transit_arrow.report.build_report`.
        """
        self.catalog.check_open()
        return build_report(
            self,
            streams=streams,
            prefix=prefix,
            metrics=metrics,
            metrics_scope=metrics_scope,
            deep=deep,
            verify=verify,
            title=title,
            checkpoint_factory=Checkpoint.from_dict,
        )

    # --- maintenance ----------------------------------------------------------------------

    def gc(self, *, min_age: float = 3600.0, dry_run: bool = False) -> GcReport:
        """Remove segment files no commit references (orphans of interrupted seals/merges).

        Files younger than `min_age` seconds are kept (a writer may be about to commit them);
        nothing any generation of any stream references is ever removed.
        """
        self.catalog.check_open()
        if isinstance(min_age, bool) or not isinstance(min_age, int | float) or min_age < 0:
            raise InvalidInputError(f"min_age must be a number of seconds >= 0, not {min_age!r}")
        if not isinstance(dry_run, bool):
            raise InvalidInputError(f"dry_run must be True or False, not {dry_run!r}")
        return collect_garbage(self.catalog, min_age=min_age, dry_run=dry_run)

    def hydrate(self, *, progress: bool = False) -> HydrateReport:
        """Fetch and verify every segment every stream needs into the local cache now
        (a remote root otherwise fetches lazily, on first read)."""
        self.catalog.check_open()
        return hydrate(self.catalog, progress=progress)

    # --- materializations -----------------------------------------------------------------

    def materialize(
        self,
        name: str,
        source: str,
        *,
        query: str | None = None,
        reducer: Reducer | None = None,
        key: list[str] | None = None,
        version: str = "1",
        exist_ok: bool = False,
    ) -> Materialization:
        """Define (or redefine) a derived view of stream `source`; see DESIGN §9.

        Args:
            name: the view's name (stream-name rules).
            source: the stream it derives from (and the default branch of `refresh`).
            query: SQL over a relation named `records` (the replay, system columns included).
                Filters/projections and GROUP BY with count/sum/min/max/avg/bool_and/bool_or/
                arg_max(x, _offset) are maintained incrementally; other SQL is recomputed.
            reducer: instead of SQL, `f(state: pa.Table | None, batch: pa.Table) -> table`.
            key: for a filter query, keep only the last row per key (by `_offset`).
            version: bump it when a reducer's behaviour changes, to force rebuilds.

        The definition is stored in the log, so other processes can open it with
        `Log.materialization(name)`. A changed definition makes old checkpoints unusable:
        the next refresh rebuilds and its report says why. With `exist_ok=True` an existing
        definition is returned when it is the same and refused (`AlreadyExistsError`, saying
        what differs) when it is not, instead of being redefined.
        """
        self.catalog.check_open()
        if exist_ok:
            wanted = {
                "source": source,
                "query": query,
                "key": list(key) if key else None,
                "version": str(version),
            }
            if check_existing_materialization(self.catalog, name, wanted):
                return self.materialization(name, reducer=reducer)
        view = define(
            self.catalog, name, source, query=query, reducer=reducer, key=key, version=version
        )
        view.log = self
        return view

    def materialization(self, name: str, *, reducer: Reducer | None = None) -> Materialization:
        """Open the stored materialization `name` (pass the reducer again for Python ones)."""
        self.catalog.check_open()
        view = load(self.catalog, name, reducer)
        view.log = self
        return view

    def drop_materialization(self, name: str) -> int:
        """Remove materialization `name` (definition, checkpoints and state files on every
        branch); returns how many files were removed. Raises `NotFoundError` if absent."""
        self.catalog.check_open()
        return drop_materialization(self.catalog, name)

    def delete_stream(self, name: str, *, reason: str | None = None) -> None:
        """Delete stream `name`, which no branch or merge may depend on (refused, naming them,
        otherwise, and nothing changes). The deletion is a commit in the stream's history, the
        stream leaves every listing and query, and `gc()` frees its segment files. The name
        cannot be reused."""
        self.catalog.check_open()
        delete_stream(self.catalog, name, reason=reason)
        self._handles.pop(name, None)

    def materializations(self) -> pa.Table:
        """One row per materialization: name, source, kind, mode, query, version, branches."""
        self.catalog.check_open()
        return list_definitions(self.catalog)

    # --- queries --------------------------------------------------------------------------

    def duckdb(
        self, con: DuckDBPyConnection | None = None, *, at: datetime | str | None = None
    ) -> DuckDBPyConnection:
        """A DuckDB connection where every stream is a view of its replay (DESIGN §8).

        Also defines `transit_streams`, `transit_lineage`, `transit_commits`,
        `transit_segments`, `transit_checkpoints`, the cross-branch view
        `transit_records` (with `_branch`), and `mv_<name>` per materialization (its state
        on every refreshed branch, with `_branch`). Calling it again with the same `con` updates
        the views to the log's latest commits. `at` views every stream as of a time.
        """
        self.catalog.check_open()
        return connect(self.catalog, con, at=at)

    def sql(self, query: str, /, **params: Any) -> DuckDBPyRelation:
        """Run SQL over the log's views (refreshed first); `"name@g12"` addresses a stream as
        of generation 12. DuckDB errors are raised as `QueryError` (a `TransitError`)."""
        self.catalog.check_open()
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be SQL text, not {type(query).__name__}")
        return sql(self.catalog, query, **params)

    def create_view(
        self,
        con: DuckDBPyConnection,
        stream: str,
        *,
        generation: int | None = None,
        as_of: datetime | str | None = None,
        checkpoint: Checkpoint | None = None,
        name: str | None = None,
    ) -> str:
        """Create a view of `stream`'s past on `con` (a generation, a time or a checkpoint:
        exactly one) and return its name, `"<stream>@g<generation>"` unless `name` is given.
        Such views never change and survive `duckdb(con)` refreshes."""
        self.catalog.check_open()
        return create_view(
            con,
            self.catalog,
            stream,
            generation=generation,
            as_of=as_of,
            checkpoint=checkpoint,
            name=name,
        )

    def sql_on(
        self, con: DuckDBPyConnection, query: str, /, **params: Any
    ) -> DuckDBPyRelation | None:
        """Run `query` on `con` (a connection from `duckdb()`), with DuckDB errors raised as
        `QueryError`; None for a statement without a result."""
        self.catalog.check_open()
        return run_sql(con, query, **params)

    def scan_all(self, *, at: datetime | str | None = None) -> pl.LazyFrame:
        """Every stream's replay as one polars LazyFrame with a `_branch` column."""
        self.catalog.check_open()
        return scan_all(self.catalog, at=at)

    def scan_plan(self, *, at: datetime | str | None = None) -> LogScanPlan:
        """Every stream's scan plan (docs/scan_plan.md) with the schema of `scan_all()`
        (`_branch` first); streams whose history cannot be read are in its `errors`."""
        self.catalog.check_open()
        return distributed.log_plan(self.catalog, at=at)

    def to_dask(
        self,
        *,
        columns: list[str] | None = None,
        filters: Filters | None = None,
        at: datetime | str | None = None,
    ) -> dd.DataFrame:
        """Every stream's replay as one Dask DataFrame with `_branch` (what `scan_all()`
        holds), one partition per file span (`pip install "transit-arrow[dask]"`)."""
        self.catalog.check_open()
        return distributed.to_dask(
            distributed.log_plan(self.catalog, at=at),
            filesystem=distributed.plan_filesystem(self.catalog),
            columns=columns,
            filters=filters,
        )

    # --- cursors --------------------------------------------------------------------------

    def cursor(self, name: str, stream: str) -> Cursor:
        """The durable cursor `name` on `stream`, at its last committed position (0 if never
        committed): `cursor.tail()` from it, `cursor.commit(offset)` after processing. Stored
        in the log, so it survives restarts and other machines see it; two handles committing
        one cursor conflict (`CommitConflictError`)."""
        self.catalog.check_open()
        return open_cursor(self.catalog, name, stream)

    def cursors(self) -> pa.Table:
        """One row per cursor and stream: name, stream, position, generation, committed_at,
        host, pid, error."""
        self.catalog.check_open()
        return cursors_table(self.catalog)

    # --- integrity ------------------------------------------------------------------------

    def orphaned_heads(self, stream: str | None = None) -> pa.Table:
        """Acknowledged records this machine's local dir holds that no longer continue their
        stream (a fenced writer's, damaged, superseded), one row per head file: stream, path,
        kind, reason, offsets, records, whether it is set aside yet, and where a
        `reappend_orphaned` put it. Nothing is ever deleted; see `transit_arrow.heads`."""
        self.catalog.check_open()
        return orphaned_heads(self.catalog, stream)

    def reappend_orphaned(
        self, path: str | os.PathLike[str], *, branch: str, durability: Durability | None = None
    ) -> Ack:
        """Append the records of set-aside head `path` (see `orphaned_heads`) to stream
        `branch`, created when missing as a branch at the offset before the orphan's first
        record (so they keep their offsets when nothing was lost before them). Refuses a
        second re-append of the same file."""
        self.catalog.check_open()
        level = self.catalog.options.durability if durability is None else durability
        return reappend_orphaned(self.catalog, Path(path), branch=branch, durability=level)

    def checkpoints(self, name: str | None = None) -> pa.Table:
        """Recorded checkpoints (of one stream, or of all) as an Arrow table."""
        self.catalog.check_open()
        return checkpoints_table(self.catalog, name)

    def verify(
        self,
        target: str | Stream | Checkpoint | None = None,
        *,
        deep: bool = False,
        trusted_keys: Any = None,
    ) -> VerifyReport:
        """Recompute hashes for a stream (latest generation) or a checkpoint.

        Shallow verification recomputes the root chain from generation 0 of the stream and of
        every ancestor, merge parent and base it references, and checks each pinned root;
        `deep=True` also re-hashes every segment file. A checkpoint's every field is checked
        against that history (its generation exists, its root is that generation's, its
        head offset is that generation's last offset), and a signed checkpoint's Ed25519
        signature against its bytes.

        Args:
            target: a stream name, a `Stream` or a `Checkpoint`; None verifies every stream
                (one report, target "*", with each stream's entries; a stream whose history
                cannot be read is a failed entry).
            deep: also re-hash every segment file the history uses.
            trusted_keys: Ed25519 public keys (key objects, PEM, raw or hex bytes; one or an
                iterable): the checkpoint must be signed by one of them (needs the `sign`
                extra).

        Returns:
            A `VerifyReport` (`report.ok`; one entry per check, failures saying why).
        """
        self.catalog.check_open()
        if not isinstance(deep, bool):
            raise InvalidInputError(f"deep must be True or False, not {deep!r}")
        if isinstance(target, Checkpoint):
            validate_stream_name(target.stream)
            if not self.catalog.exists(target.stream):
                raise self.catalog.not_found(target.stream)
            return verify(
                self.catalog, target.stream, target.generation, target, deep, trusted_keys
            )
        if trusted_keys is not None:
            raise InvalidInputError("trusted_keys applies to verifying a Checkpoint")
        if target is None:
            reports = [verify(self.catalog, n, None, None, deep) for n in self.catalog.names()]
            return VerifyReport("*", deep, [e for r in reports for e in r.entries])
        name = target.name if isinstance(target, Stream) else target
        if not isinstance(name, str):
            raise InvalidInputError("verify takes a stream name, a Stream or a Checkpoint")
        validate_stream_name(name)
        if not self.catalog.exists(name):
            raise self.catalog.not_found(name)
        # No manifest is loaded first: a damaged stream must be reported, not raised.
        return verify(self.catalog, name, None, None, deep)


def _check_schema(schema: Any) -> pa.Schema:
    if not isinstance(schema, pa.Schema):
        raise InvalidInputError(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
    check_names(schema.names)
    reserved = [n for n in schema.names if n.startswith("_")]
    if reserved:
        raise InvalidInputError(f"schema columns {reserved} are reserved (leading '_')")
    return evolve_schema(None, schema)
