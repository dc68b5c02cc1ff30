"""The log: everything under one root URI, and `open()` (DESIGN §1, §3)."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import blake3
import pyarrow as pa

from .commit import Commit, CommitLog, canonical, now_rfc3339, writer_identity
from .errors import (
    AlreadyExistsError,
    CommitConflictError,
    InvalidInputError,
    LogClosedError,
    NotALogError,
    NotFoundError,
    StorageError,
    StreamNotFoundError,
)
from .manifest import Manifest, SegmentRef
from .names import decode_stream_name, encode_stream_name, validate_stream_name
from .record import evolve_schema, schema_to_json
from .segments.cache import SegmentCache
from .storage import ObjectStore, store_from_uri
from .storage.base import Bytes
from .stream import Stream
from .view import StreamView

if TYPE_CHECKING:
    from datetime import datetime

    import polars as pl
    from duckdb import DuckDBPyConnection, DuckDBPyRelation

    from .integrity import Checkpoint, VerifyReport
    from .maintenance import GcReport, HydrateReport
    from .materialize import Materialization, Reducer
from .typing import DURABILITY_LEVELS, Durability

__all__ = ["Log", "open"]

MARKER = "_transit.json"
FORMAT = 1
_MEMORY_LOCAL_DIRS: dict[str, str] = {}


@dataclass(frozen=True)
class _Options:
    durability: Durability
    segment_max_records: int
    segment_max_bytes: int
    segment_max_age: float
    row_group_size: int
    max_pending_heads: int
    seal_retries: int
    lease_check_interval: float
    cache_max_bytes: int


def open(  # the entry point is deliberately named like the builtin, as in io.open
    uri: str | os.PathLike[str] | ObjectStore,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    durability: Durability = "local",
    segment_max_records: int = 1_000_000,
    segment_max_bytes: int = 128 * 1024 * 1024,
    segment_max_age: float = 60.0,
    row_group_size: int = 65536,
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
    options = _Options(
        durability=durability,
        segment_max_records=segment_max_records,
        segment_max_bytes=segment_max_bytes,
        segment_max_age=float(segment_max_age),
        row_group_size=row_group_size,
        max_pending_heads=4,
        seal_retries=5,
        lease_check_interval=1.0,
        cache_max_bytes=cache_max_bytes,
    )
    return Log(store, options, local_dir=local_dir, create=create)


def _default_local_dir(store: ObjectStore) -> Path:
    local = store.local_path("")
    if local is not None:
        return Path(local) / "_local"
    if store.uri.startswith("memory://"):
        # A memory log lives as long as the process; so do its heads.
        folder = _MEMORY_LOCAL_DIRS.get(store.uri)
        if folder is None:
            folder = _MEMORY_LOCAL_DIRS[store.uri] = tempfile.mkdtemp(prefix="transit-memory-")
        return Path(folder)
    import platformdirs

    digest = blake3.blake3(store.uri.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("transit-arrow")) / digest


class Log:
    """A transit-arrow log: streams, their commits and segments under one root.

    Open one with `transit_arrow.open(uri)`; use it as a context manager or call `close()`.
    """

    def __init__(
        self,
        store: ObjectStore,
        options: _Options,
        *,
        local_dir: str | os.PathLike[str] | None,
        create: bool,
    ) -> None:
        self.store = store
        self.uri = store.uri
        self._options = options
        self._open_marker(create)
        self.local_dir = Path(local_dir) if local_dir is not None else _default_local_dir(store)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.cache = SegmentCache(self.local_dir / "cache", options.cache_max_bytes)
        self._streams: dict[str, Stream] = {}
        self._history: dict[str, list[Manifest]] = {}
        self._commit_cache: dict[str, list[Commit]] = {}
        self._lock = threading.RLock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Log {self.uri}>"

    def __enter__(self) -> Log:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- opening --------------------------------------------------------------------------

    def _open_marker(self, create: bool) -> None:
        try:
            data = self.store.get(MARKER)
        except FileNotFoundError:
            data = None
        except OSError as e:
            raise StorageError(f"cannot read {self.uri}/{MARKER}: {e}") from e
        if data is not None:
            try:
                marker = json.loads(data)
            except ValueError as e:
                raise NotALogError(f"{self.uri}/{MARKER} is not valid JSON: {e}") from e
            if not isinstance(marker, dict) or marker.get("format") != FORMAT:
                raise NotALogError(
                    f"{self.uri} has an unsupported format marker {marker!r} (expected format "
                    f"{FORMAT}); upgrade transit-arrow"
                )
            return
        try:
            empty = self.store.is_empty()
        except OSError as e:
            raise StorageError(f"cannot list {self.uri}: {e}") from e
        if not empty:
            raise NotALogError(
                f"{self.uri} is not empty and is not a transit-arrow log (no {MARKER}); "
                "open an existing log or an empty folder"
            )
        if not create:
            raise NotALogError(f"there is no transit-arrow log at {self.uri}")
        # A concurrent creator wrote the same marker: fine.
        marker_bytes = canonical({"format": FORMAT, "created": now_rfc3339()})
        try:
            self.store.put_if_absent(MARKER, marker_bytes)
        except FileExistsError:
            pass
        except OSError as e:
            raise StorageError(f"cannot create {self.uri}/{MARKER}: {e}") from e

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"the log {self.uri} is closed; open it again")

    def close(self) -> None:
        """Seal and commit every head this process writes, release leases, and close the log."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
        errors = []
        for stream in streams:
            try:
                stream.close()
            except Exception as e:  # close every stream even if one fails
                errors.append(e)
        if errors:
            raise errors[0]

    # --- paths ----------------------------------------------------------------------------

    def _stream_folder(self, name: str) -> str:
        return f"streams/{encode_stream_name(name)}"

    def _local_stream_dir(self, name: str) -> Path:
        return self.local_dir / "streams" / encode_stream_name(name)

    def _segment_local_path(self, seg: SegmentRef) -> str:
        """A local file with the segment's bytes: the store's own, or a verified cached copy."""
        path = self.store.local_path(seg.path)
        if path is not None:
            return path
        return self.cache.path(self.store, seg)

    def _segment_source(self, seg: SegmentRef) -> str:
        return self._segment_local_path(seg)

    # --- manifests ------------------------------------------------------------------------

    def _remember(self, name: str, commit: Commit) -> Manifest:
        """Fold a commit this process just created into the cached manifests."""
        with self._lock:
            history = self._history.setdefault(name, [])
            g = commit["generation"]
            if g < len(history):
                return history[g]  # already seen through a refresh
            if g != len(history):
                self._manifest(name, refresh=True)
                return history[g]
            manifest = Manifest.initial(commit) if not history else history[-1].apply(commit)
            history.append(manifest)
            self._commit_cache.setdefault(name, []).append(commit)
            return manifest

    def _manifest(self, name: str, *, refresh: bool) -> Manifest:
        """The latest manifest of `name` (listing the commit log when `refresh`)."""
        with self._lock:
            history = self._history.setdefault(name, [])
            if history and not refresh:
                return history[-1]
            log = CommitLog(self.store, name, self._stream_folder(name))
            generations = log.generations(after=len(history) - 1)
            if not history and not generations:
                del self._history[name]
                raise self._not_found(name)
            commits = self._commit_cache.setdefault(name, [])
            for g in generations:
                if g != len(history):
                    break  # a gap means a commit is being written; stop at the contiguous end
                commit = log.read(g, history[-1].root if history else None)
                history.append(
                    Manifest.initial(commit) if not history else history[-1].apply(commit)
                )
                commits.append(commit)
            return history[-1]

    def _manifest_at(self, name: str, generation: int | None) -> Manifest:
        """The manifest of `name` at `generation` (the latest when None)."""
        if generation is None:
            return self._manifest(name, refresh=True)
        with self._lock:
            history = self._history.get(name)
            if history is None or generation >= len(history):
                self._manifest(name, refresh=True)
                history = self._history[name]
            if not 0 <= generation < len(history):
                raise NotFoundError(
                    f"stream {name!r} has no generation {generation}; its latest is "
                    f"{len(history) - 1}"
                )
            return history[generation]

    def _commits(self, name: str) -> list[Commit]:
        self._manifest(name, refresh=True)
        with self._lock:
            return list(self._commit_cache[name])

    def _not_found(self, name: str) -> StreamNotFoundError:
        names = self._stream_names()
        near = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        return StreamNotFoundError(
            f"stream {name!r} does not exist in {self.uri}{hint} "
            f"(create it with create_stream; {len(names)} streams exist)"
        )

    def _stream_names(self) -> list[str]:
        try:
            folders = self.store.list("streams")
        except OSError as e:
            raise StorageError(f"cannot list streams of {self.uri}: {e}") from e
        names = []
        for folder in folders:
            if not folder.endswith("/"):
                continue
            component = folder[:-1]
            name = decode_stream_name(component)
            if name is None:
                try:
                    first = json.loads(self.store.get(f"streams/{component}/commits/{0:020d}.json"))
                except FileNotFoundError:
                    continue
                name = first["stream"]
            elif not self.store.exists(f"streams/{component}/commits/{0:020d}.json"):
                continue
            names.append(name)
        return sorted(names)

    # --- streams --------------------------------------------------------------------------

    def create_stream(
        self,
        name: str,
        *,
        schema: pa.Schema | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Stream:
        """Create a root stream and return it.

        Args:
            name: 1-255 characters from letters, digits, '.', '_', '-', '/'.
            schema: optional user schema (else fixed by the first append).
            metadata: optional `actor`, `reason` (strings) and `labels` (str -> str).

        Raises:
            AlreadyExistsError: a stream with this name exists.
            InvalidInputError: bad name, schema or metadata.
        """
        self._check_open()
        validate_stream_name(name)
        create = {
            "type": "create",
            "kind": "root",
            "parent": None,
            "merge": None,
            "schema": schema_to_json(self._check_schema(schema)) if schema is not None else None,
            "metadata": _check_metadata(metadata),
            "created_at": now_rfc3339(),
            "start_offset": 0,
        }
        return self._create(name, create)

    def _create(
        self, name: str, create: dict[str, Any], extra_actions: list[dict[str, Any]] | None = None
    ) -> Stream:
        log = CommitLog(self.store, name, self._stream_folder(name))
        try:
            actions = [create, *(extra_actions or [])]
            commit = log.create(0, None, actions, writer_identity("creator", 0))
        except CommitConflictError:
            raise AlreadyExistsError(
                f"stream {name!r} already exists in {self.uri}; open it with log.stream({name!r})"
            ) from None
        self._remember(name, commit)
        return self.stream(name)

    def _exists(self, name: str) -> bool:
        if name in self._history:
            return True
        try:
            return self.store.exists(f"{self._stream_folder(name)}/commits/{0:020d}.json")
        except OSError as e:
            raise StorageError(f"cannot look up stream {name!r} in {self.uri}: {e}") from e

    def _known(self, name: str) -> bool:
        return name in self._history

    def _next_offset(self, name: str, manifest: Manifest) -> int:
        stream = self._streams.get(name)
        return stream.next_offset if stream is not None else manifest.next_offset

    def _put_segment(self, path: str, data: Bytes) -> None:
        try:
            self.store.put(path, data)
        except OSError as e:
            raise StorageError(f"cannot upload segment {self.uri}/{path}: {e}") from e

    def _view(self, name: str, generation: int | None) -> StreamView:
        return StreamView(self, name, self._manifest_at(name, generation))

    # --- lineage --------------------------------------------------------------------------

    def branch(
        self,
        name: str,
        at: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Stream:
        """Fork `at` ("parent@N", or "parent" for its last record) into a new stream `name`.

        Creation writes one commit and copies no bytes, whatever the parent's size. The branch
        replays the parent through offset N, then its own records from N+1. If N is in the
        parent's unsealed head (written by this process), the head is sealed first.

        Raises:
            StreamNotFoundError: the parent does not exist.
            AlreadyExistsError: `name` exists.
            InvalidInputError: bad name, or N is not an offset of the parent.
        """
        self._check_open()
        from .lineage import create_branch

        return create_branch(self, name, at, actor=actor, reason=reason, labels=labels)

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
        self._check_open()
        from .lineage import _metadata
        from .merge import create_merge

        metadata = _metadata(actor, reason, labels)
        return create_merge(
            self,
            name,
            parents,
            base=base,
            policy=policy,
            policy_params=policy_params,
            metadata=metadata,
        )

    def gc(self, *, min_age: float = 3600.0, dry_run: bool = False) -> GcReport:
        """Remove segment files no commit references (orphans of interrupted seals/merges).

        Files younger than `min_age` seconds are kept (a writer may be about to commit them);
        nothing any generation of any stream references is ever removed.
        """
        self._check_open()
        from .maintenance import collect_garbage

        return collect_garbage(self, min_age=min_age, dry_run=dry_run)

    def hydrate(self, *, progress: bool = False) -> HydrateReport:
        """Fetch and verify every segment every stream needs into the local cache now
        (a remote root otherwise fetches lazily, on first read)."""
        self._check_open()
        from .maintenance import hydrate

        return hydrate(self, progress=progress)

    def materialize(
        self,
        name: str,
        source: str,
        *,
        query: str | None = None,
        reducer: Reducer | None = None,
        key: list[str] | None = None,
        version: str = "1",
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
        the next refresh rebuilds and its report says why.
        """
        self._check_open()
        from .materialize import define

        return define(self, name, source, query=query, reducer=reducer, key=key, version=version)

    def materialization(self, name: str, *, reducer: Reducer | None = None) -> Materialization:
        """Open the stored materialization `name` (pass the reducer again for Python ones)."""
        self._check_open()
        from .materialize import load

        return load(self, name, reducer)

    def materializations(self) -> pa.Table:
        """One row per materialization: name, source, kind, mode, query, version, branches."""
        self._check_open()
        from .materialize import list_definitions

        return list_definitions(self)

    def duckdb(
        self, con: DuckDBPyConnection | None = None, *, at: datetime | str | None = None
    ) -> DuckDBPyConnection:
        """A DuckDB connection where every stream is a view of its replay (DESIGN §8).

        Also defines `transit_streams`, `transit_lineage`, `transit_commits`,
        `transit_segments`, `transit_checkpoints`, the cross-branch view
        `transit_records` (with `_branch`), and `mv_<name>` per materialization (its state
        on every refreshed branch, with `_branch`). Calling it again with the same `con` updates the
        views to the log's latest commits. `at` views every stream as of a time.
        """
        self._check_open()
        from .materialize import register_views
        from .query import connect

        connection = connect(self, con, at=at)
        register_views(self, connection)
        return connection

    def sql(self, query: str, /, **params: Any) -> DuckDBPyRelation:
        """Run SQL over the log's views (refreshed first); `"name@g12"` addresses a stream as
        of generation 12. DuckDB errors are raised as `QueryError` (a `TransitError`)."""
        self._check_open()
        from .query import sql

        return sql(self, query, **params)

    def scan_all(self, *, at: datetime | str | None = None) -> pl.LazyFrame:
        """Every stream's replay as one polars LazyFrame with a `_branch` column."""
        self._check_open()
        from .query import scan_all

        return scan_all(self, at=at)

    def lineage(self) -> pa.Table:
        """The lineage table: one row per stream with its kind, parent, merge parents, base,
        policy, actor, reason, labels, creation time, next offset, generation and root."""
        self._check_open()
        from .lineage import lineage_table

        return lineage_table(self)

    def children(self, name: str) -> pa.Table:
        """Streams whose descriptor references `name` (as parent, merge parent or base)."""
        self._check_open()
        from .lineage import children_table

        return children_table(self, name)

    def checkpoints(self, name: str | None = None) -> pa.Table:
        """Recorded checkpoints (of one stream, or of all) as an Arrow table."""
        self._check_open()
        from .integrity import list_checkpoints

        names = [name] if name is not None else self._stream_names()
        rows = [cp.to_dict() for n in names for cp in list_checkpoints(self, n)]
        return pa.Table.from_pylist(rows, schema=_CHECKPOINTS_SCHEMA)

    def verify(self, target: str | Stream | Checkpoint, *, deep: bool = False) -> VerifyReport:
        """Recompute hashes for a stream (latest generation) or a checkpoint.

        Shallow verification recomputes the root chain from generation 0 of the stream and of
        every ancestor, merge parent and base it references, and checks each pinned root;
        `deep=True` also re-hashes every segment file. Returns a `VerifyReport` (`report.ok`).
        """
        self._check_open()
        from .integrity import Checkpoint, verify

        if isinstance(target, Checkpoint):
            return verify(self, target.stream, target.generation, target.root, deep)
        name = target.name if isinstance(target, Stream) else target
        if not isinstance(name, str):
            raise InvalidInputError("verify takes a stream name, a Stream or a Checkpoint")
        validate_stream_name(name)
        if not self._exists(name):
            raise self._not_found(name)
        # No manifest is loaded first: a damaged stream must be reported, not raised.
        return verify(self, name, None, None, deep)

    @staticmethod
    def _check_schema(schema: Any) -> pa.Schema:
        if not isinstance(schema, pa.Schema):
            raise InvalidInputError(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
        from .record import _check_names

        _check_names(schema.names)
        reserved = [n for n in schema.names if n.startswith("_")]
        if reserved:
            raise InvalidInputError(f"schema columns {reserved} are reserved (leading '_')")
        return evolve_schema(None, schema)

    def stream(self, name: str, *, take_over: bool = False) -> Stream:
        """Return the stream called `name` (one handle per name per `Log`).

        Args:
            name: the stream's name.
            take_over: when writing, fence another live writer instead of failing.

        Raises:
            StreamNotFoundError: no such stream (the message lists near names).
        """
        self._check_open()
        validate_stream_name(name)
        with self._lock:
            stream = self._streams.get(name)
            if stream is None:
                self._manifest(name, refresh=True)
                stream = self._streams[name] = Stream(self, name, take_over=take_over)
            elif take_over:
                stream._take_over = True
            return stream

    def streams(self) -> pa.Table:
        """One row per stream: name, kind, next_offset, generation, root, segments, created_at."""
        self._check_open()
        rows = []
        for name in self._stream_names():
            stream = self._streams.get(name)
            manifest = self._manifest(name, refresh=True)
            next_offset = stream.next_offset if stream is not None else manifest.next_offset
            rows.append(
                {
                    "name": name,
                    "kind": manifest.kind,
                    "next_offset": next_offset,
                    "committed_offset": manifest.next_offset,
                    "generation": manifest.generation,
                    "root": manifest.root,
                    "segments": len(manifest.segments),
                    "created_at": manifest.create.get("created_at"),
                }
            )
        return pa.Table.from_pylist(rows, schema=_STREAMS_SCHEMA)


def _check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    metadata = dict(metadata or {})
    unknown = set(metadata) - {"actor", "reason", "labels"}
    if unknown:
        raise InvalidInputError(
            f"unknown metadata keys {sorted(unknown)}; use 'actor', 'reason' and 'labels'"
        )
    for key in ("actor", "reason"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            raise InvalidInputError(f"metadata {key!r} must be a string")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidInputError("metadata 'labels' must map strings to strings")
    # Sorted, as canonical JSON stores them: the same order before and after a reopen.
    labels = dict(sorted(labels.items()))
    return {"actor": metadata.get("actor"), "reason": metadata.get("reason"), "labels": labels}


_CHECKPOINTS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("stream", pa.string()),
        ("generation", pa.int64()),
        ("head_offset", pa.int64()),
        ("root", pa.string()),
        ("kind", pa.string()),
        ("created_at", pa.string()),
    ]
)

_STREAMS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("name", pa.string()),
        ("kind", pa.string()),
        ("next_offset", pa.int64()),
        ("committed_offset", pa.int64()),
        ("generation", pa.int64()),
        ("root", pa.string()),
        ("segments", pa.int64()),
        ("created_at", pa.string()),
    ]
)
