"""The catalog: one object owning a log's store, manifests, commit logs, names and writers.

Every layer above the format takes a `Catalog` (ARCHITECTURE rule 1): the facade (`Log`,
`Stream`, `StreamView`) validates, calls one function that takes the catalog, and wraps the
result. Only the catalog (and the commit log, the lease and the segment cache it hands the
store to) touches the `ObjectStore`, through a `GuardedStore`, so every backend failure is a
`StorageError`.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import itertools
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import blake3
import platformdirs
import pyarrow as pa

from ..commit import Commit, CommitLog, canonical, now_rfc3339, writer_identity
from ..errors import (
    AlreadyExistsError,
    CommitConflictError,
    IntegrityError,
    InvalidInputError,
    LogClosedError,
    NotALogError,
    NotFoundError,
    StorageError,
    StreamNotFoundError,
)
from ..layout import (
    DELETED,
    MARKER,
    commit_path,
    heads_dir,
    local_stream_dir,
    snapshot_path,
    snapshots_folder,
    stream_folder,
    tombstone_path,
)
from ..manifest import (
    SMALL_SNAPSHOT_INTERVAL,
    Manifest,
    SegmentRef,
    Snapshot,
    bind_snapshot,
    decode_snapshot,
    encode_snapshot,
    segment_paths_added,
    snapshot_due,
)
from ..names import decode_stream_name
from ..segments import verified
from ..segments.cache import SegmentCache
from ..segments.decoded import DecodedCache
from ..segments.head import (
    HeadBatches,
    chain_heads,
    fenced_epoch,
    parse_head_name,
    parse_spare_name,
    read_heads,
)
from ..segments.parquet import encode_segment
from ..storage import ObjectStore
from ..storage.base import Bytes, Durable
from ..storage.guarded import guarded
from ..typing import Durability
from .metacache import MetaCache

__all__ = ["FORMAT", "Catalog", "LiveWriter", "Options", "as_utc", "bulk"]

FORMAT = 1
_MEMORY_LOCAL_DIRS: dict[str, str] = {}
# A folder `encode_stream_name` gives a name of only these characters ('/' as '%2F', never
# shortened): decoded with one `replace`, and known to be that name's folder.
_PLAIN_FOLDER = re.compile(r"[A-Za-z0-9._-]+(?:%2F[A-Za-z0-9._-]+)*")


@dataclass(frozen=True)
class Options:
    """The options a log was opened with (see `transit_arrow.open`)."""

    durability: Durability
    segment_max_records: int
    segment_max_bytes: int
    segment_max_age: float
    row_group_size: int
    segment_compression: str
    max_pending_heads: int
    seal_retries: int
    lease_check_interval: float
    cache_max_bytes: int


class LiveWriter(Protocol):
    """What the catalog needs of the writer of one stream in this process."""

    @property
    def next_offset(self) -> int:
        """The offset the next append gets."""

    def snapshot(self) -> tuple[Manifest, HeadBatches]:
        """The committed manifest and the unsealed heads after it, consistently."""

    @property
    def durable_next(self) -> int:
        """Every record below this offset is durable in the local head files."""

    def flush(self) -> Manifest:
        """Seal and commit everything appended so far."""

    def close(self) -> None:
        """Seal, commit, release the lease."""


def as_utc(value: datetime | str) -> datetime:
    """A datetime (naive meaning UTC) or ISO 8601 string as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidInputError(f"not an ISO 8601 timestamp: {value!r}") from e
    if not isinstance(value, datetime):
        raise InvalidInputError(f"expected a datetime or ISO 8601 string, not {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a loop builds many small objects (a
    manifest, a commit and a table row per stream): with thousands of streams alive, its full
    passes cost as much as the work itself. Reference counting still frees everything; the
    collector runs again after (left off if the caller had turned it off)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def default_local_dir(store: ObjectStore) -> Path:
    """`<root>/_local` for a local root, a per-process temp dir for `memory://`, else a
    per-URI folder in the user's cache dir."""
    local = store.local_path("")
    if local is not None:
        return Path(local) / "_local"
    if store.uri.startswith("memory://"):
        # A memory log lives as long as the process; so do its heads.
        folder = _MEMORY_LOCAL_DIRS.get(store.uri)
        if folder is None:
            folder = _MEMORY_LOCAL_DIRS[store.uri] = tempfile.mkdtemp(prefix="transit-memory-")
        return Path(folder)
    digest = blake3.blake3(store.uri.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("transit-arrow")) / digest


class Catalog:
    """A log's engine state: store, options, local dir, manifests, commit cache, writers."""

    def __init__(
        self,
        store: ObjectStore,
        options: Options,
        *,
        local_dir: str | os.PathLike[str] | None,
        create: bool,
    ) -> None:
        self.store = guarded(store)
        self.uri = store.uri
        self.options = options
        self._open_marker(create)
        self.local_dir = Path(local_dir) if local_dir is not None else default_local_dir(store)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.cache = SegmentCache(self.local_dir / "cache", options.cache_max_bytes)
        #: Decoded row groups that streaming reads (`reader`, tails, DoGet) reuse; None (the
        #: default): every read decodes. `transit serve --read-cache-mb` sets one.
        self.decoded: DecodedCache | None = None
        root = self.store.local_path("")
        # Every stream's latest state, kept in the local dir (local-folder stores only).
        self._meta = MetaCache(self.local_dir, self.uri, root) if root is not None else None
        #: The writers of this process, by stream name.
        self.writers: dict[str, LiveWriter] = {}
        # Generation g of a stream is at index g; None below a snapshot it was opened from.
        self._history: dict[str, list[Manifest | None]] = {}
        self._commit_cache: dict[str, list[Commit | None]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        # Early generations of streams whose latest state is not loaded (`_early`).
        self._prefix: dict[str, list[Manifest]] = {}
        self._folders: dict[str, str] = {}
        self._heads_dirs: dict[str, Path] = {}
        self.lock = threading.RLock()
        #: Notified whenever this process appends to or commits a stream (see `wait_changed`).
        self.changed = threading.Condition()
        self._versions: dict[str, int] = {}
        # Change counters come from one sequence, so a change always gives a new value even
        # when two threads change one stream at once (no lock on the append path).
        self._sequence = itertools.count(1)
        # How many threads wait in `wait_changed`: with none, a change takes no lock.
        self._waiting = 0
        #: Whether anyone ever asked for a change token (`version`, `wait_changed`): until
        #: then a change costs nothing (`notify_changed` returns at once).
        self.watched = False
        self.closed = False
        self._close_hooks: list[Callable[[], None]] = []

    # --- opening and closing --------------------------------------------------------------

    def _open_marker(self, create: bool) -> None:
        try:
            data: bytes | None = self.store.get(MARKER)
        except FileNotFoundError:
            data = None
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
        if not self.store.is_empty():
            raise NotALogError(
                f"{self.uri} is not empty and is not a transit-arrow log (no {MARKER}); "
                "open an existing log or an empty folder"
            )
        if not create:
            raise NotALogError(f"there is no transit-arrow log at {self.uri}")
        marker_bytes = canonical({"format": FORMAT, "created": now_rfc3339()})
        with contextlib.suppress(FileExistsError):  # a concurrent creator wrote the same: fine
            self.store.put_if_absent(MARKER, marker_bytes)

    def check_open(self) -> None:
        """Raise `LogClosedError` once the log is closed."""
        if self.closed:
            raise LogClosedError(f"the log {self.uri} is closed; open it again")

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call `hook()` when the catalog closes (e.g. to close DuckDB connections)."""
        with self.lock:
            self._close_hooks.append(hook)

    def close(self) -> None:
        """Close every writer (sealing and committing their heads) and every close hook."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            writers = list(self.writers.values())
        with self.changed:
            self.changed.notify_all()
        with self.lock:
            hooks, self._close_hooks = self._close_hooks, []
        errors = []
        for writer in writers:
            try:
                writer.close()
            except Exception as e:  # close every writer even if one fails
                errors.append(e)
        for hook in hooks:
            try:
                hook()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    # --- paths ----------------------------------------------------------------------------

    def stream_folder(self, name: str) -> str:
        """The store folder of stream `name`."""
        folder = self._folders.get(name)
        if folder is None:
            folder = self._folders[name] = stream_folder(name)
        return folder

    def local_stream_dir(self, name: str) -> Path:
        """The local folder of stream `name`."""
        return local_stream_dir(self.local_dir, name)

    def segment_file(self, seg: SegmentRef, stream: str | None = None) -> str:
        """A local file with the segment's verified bytes: the store's own file, checked
        against the commit's BLAKE3 (hashed on first use, then whenever the file changes), or
        a verified cached copy of a remote segment. `stream` names the segment's stream in
        errors.

        Raises:
            IntegrityError: the file is missing or its bytes do not match the commit.
        """
        self.check_open()
        path = self.store.local_path(seg.path)
        if path is None:
            return self.cache.path(self.store, seg)
        of = f" of stream {stream!r}" if stream is not None else ""
        verified.check(path, seg.blake3, seg.bytes, what=f"segment {self.uri}/{seg.path}{of}")
        return path

    def encode_segment(
        self, table: pa.Table, name: str
    ) -> tuple[bytes | bytearray, dict[str, Any]]:
        """`segments.parquet.encode_segment` of a head table of stream `name` with this log's
        row group size and codec. Large segments are encoded into pooled buffers, except for a
        store that keeps a copy of what it is given (the memory store): a local file is
        written from the buffer and an S3 body is read from it in place."""
        return encode_segment(
            table,
            name,
            self.options.row_group_size,
            self.options.segment_compression,
            pooled=not self.store.copies_puts,
        )

    def put_segment(self, path: str, data: Bytes, digest: str | None = None) -> None:
        """Upload a segment file (content-addressed, so overwriting is harmless).

        `digest` is the BLAKE3 the caller computed of `data`: on a local store the file just
        written is then remembered as verified (keyed by its identity, like a file hashed on
        first use), so this process's reads of its own segments do not hash them again.
        """
        self.store.put(path, data)
        if digest is not None:
            self._remember(path, digest)

    def put_new_segment(self, path: str, data: Bytes, digest: str) -> Durable:
        """Store a segment that no commit refers to yet (`ObjectStore.put_unreferenced`: on a
        local folder written in place while it syncs in the background). Pass the returned
        `Durable` to the commit that adds the segment (`CommitLog.create(after=...)`), which
        appears only once the segment is durable. `digest` as for `put_segment`."""
        durable = self.store.put_unreferenced(path, data)
        self._remember(path, digest)
        return durable

    def _remember(self, path: str, digest: str) -> None:
        local = self.store.local_path(path)
        if local is not None:
            verified.registry.remember(local, digest)

    # --- manifests ------------------------------------------------------------------------

    def remember(self, name: str, commit: Commit) -> Manifest:
        """Fold a commit this process just created into the cached manifests."""
        with self.lock:
            history = self._history.setdefault(name, [])
            g = commit["generation"]
            if g < len(history):
                return self.manifest_at(name, g)  # already seen through a refresh
            if g != len(history):
                self.manifest(name, refresh=True)
                return self.manifest_at(name, g)
            last = history[-1] if history else None
            manifest = Manifest.initial(commit) if last is None else last.apply(commit)
            history.append(manifest)
            if self._meta is not None:
                self._meta.wrote(name, self.stream_folder(name), g)
            self._commit_cache.setdefault(name, []).append(commit)
            if snapshot_due(manifest):
                self._write_snapshot(name, manifest, commit["prev_root"])
            return manifest

    def manifest(self, name: str, *, refresh: bool = True) -> Manifest:
        """The latest manifest of `name` (reading the commits after the known ones when
        `refresh`)."""
        found = self._load(name, refresh)
        if found is None:
            raise self.not_found(name)
        return found

    def _load(self, name: str, refresh: bool) -> Manifest | None:
        """`manifest`, or None when the stream has no commit 0."""
        with self.lock:
            history = self._history.get(name)
            if history and not refresh:
                return self._last(history)
            log = CommitLog(self.store, name, self.stream_folder(name))
            if history:
                self._advance(name, log)
                return self._last(history)
            try:
                with bulk():  # a snapshot of 100,000 segments: no collector passes meanwhile
                    if not self._open(name, log):
                        return None
            except BaseException:
                self._history.pop(name, None)
                self._commit_cache.pop(name, None)
                raise
            return self._last(self._history[name])

    def _open(self, name: str, log: CommitLog) -> bool:
        """Load `name`'s history: commit 0, then its latest snapshot if it has one, then the
        commits after. False when there is no commit 0.

        A stream of one commit costs two requests (commit 0, and the probe of commit 1); one
        with a snapshot reads O(1) files (DESIGN §5): no listing of a commit log that may hold
        100,000 names.

        With the local metadata cache, a stream whose commit files did not change since it was
        cached costs two or three `stat`s (`engine/metacache.py`)."""
        if self._meta is not None:
            cached = self._meta.lookup(name, self.stream_folder(name))
            if cached is not None:
                self._history[name] = [None] * cached.generation + [cached]
                self._commit_cache[name] = [None] * (cached.generation + 1)
                self._advance(name, log)
                return True
        if self._meta is not None and self._meta.probe(name, log.stream_folder, 0) is None:
            return False
        try:
            first = log.read(0, None)
        except FileNotFoundError:
            return False
        self._history[name] = [Manifest.initial(first)]
        self._commit_cache[name] = [first]
        # Commits are dense: commit SMALL_SNAPSHOT_INTERVAL exists only if commit 1 does. With
        # the metadata cache probing 1 first is a `stat` that spares the probe of 32 for most
        # streams; on a remote store it would be one more request (the fold reads commit 1
        # without a probe).
        if (self._meta is None or self._exists(name, log, 1)) and self.store.exists(
            log.path(SMALL_SNAPSHOT_INTERVAL)
        ):
            self._open_snapshot(name, log, first)
        self._advance(name, log)
        return True

    def _advance(self, name: str, log: CommitLog) -> None:
        """Read and fold the commits after `name`'s known history, up to the first missing one
        (a listing would also stop at a gap). With the metadata cache each is probed before it
        is read (a `stat` the cache records); on a remote store each is just read, one request
        a commit where a probe first would cost two."""
        history, commits = self._history[name], self._commit_cache[name]
        while True:
            if self._meta is not None and not self._exists(name, log, len(history)):
                return
            last = self._last(history)
            try:
                commit = log.read(len(history), last.root)
            except FileNotFoundError:
                if self._meta is not None:
                    raise  # probed a moment ago: removed meanwhile, not the end of the log
                return
            history.append(last.apply(commit))
            commits.append(commit)

    def _exists(self, name: str, log: CommitLog, generation: int) -> bool:
        """Whether commit `generation` of `name` exists (before it is read: the metadata
        cache records the identity the file had then)."""
        if self._meta is not None:
            return self._meta.probe(name, log.stream_folder, generation) is not None
        return self.store.exists(log.path(generation))

    def manifest_at(self, name: str, generation: int | None) -> Manifest:
        """The manifest of `name` at `generation` (the latest when None)."""
        if generation is None:
            return self.manifest(name, refresh=True)
        with self.lock:
            history = self._history.get(name)
            if history is None and 0 <= generation < SMALL_SNAPSHOT_INTERVAL:
                early = self._early(name, generation)
                if early is not None:
                    return early
            if history is None or generation >= len(history):
                self.manifest(name, refresh=True)
                history = self._history[name]
            if not 0 <= generation < len(history):
                raise NotFoundError(
                    f"stream {name!r} has no generation {generation}; its latest is "
                    f"{len(history) - 1}"
                )
            found = history[generation]
            if found is None:  # below the snapshot this stream was opened from
                self._fold_from_genesis(name, generation)
                found = history[generation]
                assert found is not None
            return found

    def _early(self, name: str, generation: int) -> Manifest | None:
        """The manifest at an early `generation` (below the first snapshot) of a stream whose
        latest state this handle has not loaded, folded from commits 0 through `generation`
        alone: a fresh handle's time travel to it reads those commits, as it would after
        loading the latest state, and nothing else. None when commit `generation` does not
        exist (the caller loads the latest state to say which generation is)."""
        manifests = self._prefix.setdefault(name, [])
        if generation < len(manifests):
            return manifests[generation]
        log = CommitLog(self.store, name, self.stream_folder(name))
        if not self.store.exists(log.path(generation)):
            return None
        log.prefetch(range(len(manifests), generation + 1))
        while len(manifests) <= generation:
            last = manifests[-1] if manifests else None
            commit = log.read(len(manifests), last.root if last is not None else None)
            manifests.append(Manifest.initial(commit) if last is None else last.apply(commit))
        return manifests[generation]

    def manifest_as_of(self, name: str, timestamp: datetime | str) -> Manifest:
        """The manifest of the latest generation committed at or before `timestamp`."""
        when = as_utc(timestamp)
        history = self.commits(name)
        chosen = None
        for commit in history:
            if as_utc(commit["time"]) <= when:
                chosen = commit["generation"]
        if chosen is None:
            raise NotFoundError(
                f"stream {name!r} did not exist at {when.isoformat()}; it was created at "
                f"{history[0]['time']}"
            )
        return self.manifest_at(name, chosen)

    def commits(self, name: str) -> list[Commit]:
        """Every commit of `name`, generation 0 first."""
        self.manifest(name, refresh=True)
        with self.lock:
            if None in self._commit_cache[name]:  # opened from a snapshot or the metadata cache
                self._fold_from_genesis(name)
            return [c for c in self._commit_cache[name] if c is not None]

    def referenced_segments(self, name: str) -> set[str]:
        """Every segment path any commit of stream `name` (any generation) references."""
        self.manifest(name, refresh=True)
        with self.lock:
            commits = self._commit_cache[name]
            snapshot = self._snapshots.get(name)
            if commits[0] is None and snapshot is not None:  # the snapshot knows the prefix
                found = {s.path for s in snapshot.manifest.segments} | set(snapshot.released)
                later: list[Commit | None] = commits[snapshot.manifest.generation + 1 :]
            else:
                found, later = set(), list(self.commits(name))
        return found | {
            path
            for commit in later
            if commit is not None
            for action in commit["actions"]
            for path in segment_paths_added(action)  # add_segment and compact
        }

    # --- snapshots (DESIGN §5) ------------------------------------------------------------

    @staticmethod
    def _last(history: list[Manifest | None]) -> Manifest:
        last = history[-1]
        assert last is not None
        return last

    def _open_snapshot(self, name: str, log: CommitLog, first: Commit) -> None:
        """Start `name`'s history at its latest snapshot, when it has a usable one: its bytes
        parse, commit 0 (`first`) holds its create action and its generation's commit has its
        root. An unusable snapshot is skipped (the commits are folded from generation 0)."""
        folder = snapshots_folder(self.stream_folder(name))
        try:
            entries = sorted(
                (int(e.split(".")[0]), e)
                for e in self.store.list(folder)
                if e.endswith(".parquet") and e.split(".")[0].isdigit()
            )
        except (FileNotFoundError, StorageError):
            return
        for generation, entry in reversed(entries):
            try:
                snapshot, _ = decode_snapshot(self.store.get(f"{folder}/{entry}"), name)
                if snapshot.manifest.generation != generation:
                    continue
                if generation and self._meta is not None:
                    self._meta.probe(name, log.stream_folder, generation)
                commit = log.read(generation, snapshot.prev_root) if generation else first
                bind_snapshot(snapshot, commit)
                if first["actions"][0] != snapshot.manifest.create:
                    continue
            except (IntegrityError, StorageError, FileNotFoundError, ValueError):
                continue  # `verify` reports a damaged snapshot
            self._history[name] = [None] * generation + [snapshot.manifest]
            self._commit_cache[name] = [None] * generation + [commit]
            self._snapshots[name] = snapshot
            return

    def _fold_from_genesis(self, name: str, upto: int | None = None) -> None:
        """Read and fold the commits below the snapshot `name` was opened from, through
        generation `upto` (all of them when None: `commits()`), for time travel to them. They
        chain from generation 0, as when no snapshot is used; folding through the snapshot's
        generation also checks the chain reaches the snapshot's root."""
        log = CommitLog(self.store, name, self.stream_folder(name))
        history, commits = self._history[name], self._commit_cache[name]
        manifest: Manifest | None = None
        last = len(history) - 1 if upto is None else upto
        log.prefetch(g for g in range(last + 1) if commits[g] is None)  # those read below
        for g in range(last + 1):
            known, commit = history[g], commits[g]
            if known is not None and commit is not None and g < len(history) - 1:
                snapshot = self._snapshots.get(name)
                if snapshot is None or g != snapshot.manifest.generation:
                    manifest = known  # folded by an earlier call
                    continue
            if commit is None:
                commit = log.read(g, manifest.root if manifest is not None else None)
            manifest = Manifest.initial(commit) if manifest is None else manifest.apply(commit)
            if known is not None:
                if known.root != manifest.root:
                    raise IntegrityError(
                        f"stream {name!r}: the commit chain gives root {manifest.root} at "
                        f"generation {g}, the snapshot (or local metadata cache) {known.root}"
                    )
                if commits[g] is None:  # opened from the metadata cache
                    commits[g] = commit
                break
            history[g], commits[g] = manifest, commit

    def _write_snapshot(self, name: str, manifest: Manifest, prev_root: str | None) -> None:
        """Record the folded manifest at this generation (put-if-absent; deterministic bytes,
        so a concurrent writer of the same snapshot writes the same file)."""
        released = self.referenced_segments(name) - {s.path for s in manifest.segments}
        data = encode_snapshot(Snapshot(manifest, prev_root, tuple(sorted(released))))
        path = snapshot_path(self.stream_folder(name), manifest.generation)
        with contextlib.suppress(FileExistsError, StorageError):  # optional: never fails a commit
            self.store.put_if_absent(path, data)

    # --- names ----------------------------------------------------------------------------

    def not_found(self, name: str) -> StreamNotFoundError:
        """The error for a missing stream, naming near names."""
        names = self.names()
        near = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        return StreamNotFoundError(
            f"stream {name!r} does not exist in {self.uri}{hint} "
            f"(create it with create_stream; {len(names)} streams exist)"
        )

    def names(
        self, within: Callable[[str], bool] | None = None, *, checked: bool = True
    ) -> list[str]:
        """Every stream's name, sorted; with `within`, only the names it accepts (the others
        cost nothing beyond the listing). Without `checked`, a stream being created (its
        folder made, its first commit not yet) may be listed too."""
        names = []
        deleted = set(self.store.list(DELETED))
        for folder in self.store.list("streams"):
            if not folder.endswith("/"):
                continue
            component = folder[:-1]
            first = commit_path(f"streams/{component}", 0)
            if f"{component}.json" in deleted:
                continue  # deleted (Log.delete_stream)
            name = self._plain_name(component)
            if name is None:
                name = decode_stream_name(component)
            if name is not None and within is not None and not within(name):
                continue
            if name is None:
                try:
                    name = json.loads(self.store.get(first))["stream"]
                except FileNotFoundError:
                    continue
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged first commit: `verify` reports it
                if within is not None and not within(name):
                    continue
            elif checked and name not in self._history and not self.store.exists(first):
                continue  # being created (a loaded stream's first commit exists for good)
            names.append(name)
        return sorted(names)

    def _plain_name(self, component: str) -> str | None:
        """The name whose folder is `streams/<component>`, when `component` is a plain
        encoding (then remembered as that name's folder), else None."""
        if len(component) > 200 or not _PLAIN_FOLDER.fullmatch(component):
            return None
        name = component.replace("%2F", "/")
        if "." in name and any(part in (".", "..") for part in name.split("/")):
            return None
        self._folders.setdefault(name, f"streams/{component}")
        return name

    def manifests(
        self, *, refresh: bool = True
    ) -> tuple[dict[str, Manifest], dict[str, IntegrityError | StorageError]]:
        """The latest manifest of every stream whose history can be read, and for the others
        why not: one damaged stream never hides the rest."""
        found: dict[str, Manifest] = {}
        errors: dict[str, IntegrityError | StorageError] = {}
        with bulk():
            for name in self.names(checked=False):  # reading commit 0 checks it exists
                try:
                    manifest = self._load(name, refresh or not self.known(name))
                except (IntegrityError, StorageError) as e:
                    errors[name] = e
                    continue
                if manifest is not None:
                    found[name] = manifest
            self.save_metadata_cache(found)
        return found, errors

    def save_metadata_cache(self, latest: dict[str, Manifest]) -> None:
        """Write the local metadata cache (`engine/metacache.py`) for these latest manifests,
        which must be those of every stream whose history can be read, when it is missing or
        behind on them."""
        if self._meta is not None:
            with self.lock:
                self._meta.save(latest)

    def exists(self, name: str) -> bool:
        """Whether stream `name` exists (and was not deleted)."""
        if name in self._history:
            return True
        if not self.store.exists(commit_path(self.stream_folder(name), 0)):
            return False
        return not self.store.exists(tombstone_path(name))

    def forget(self, name: str) -> None:
        """Drop what this process cached of `name` (after `delete_stream`)."""
        with self.lock:
            self._history.pop(name, None)
            self._commit_cache.pop(name, None)
            self._prefix.pop(name, None)
            if self._meta is not None:
                self._meta.forget(name)

    def known(self, name: str) -> bool:
        """Whether this process has loaded `name`'s manifest already."""
        return name in self._history

    # --- writes ---------------------------------------------------------------------------

    def create(
        self, name: str, create: dict[str, Any], extra_actions: list[dict[str, Any]] | None = None
    ) -> Manifest:
        """Write generation 0 of a new stream (put-if-absent) and return its manifest."""
        log = CommitLog(self.store, name, self.stream_folder(name))
        try:
            actions = [create, *(extra_actions or [])]
            commit = log.create(0, None, actions, writer_identity("creator", 0))
        except CommitConflictError:
            raise AlreadyExistsError(
                f"stream {name!r} already exists in {self.uri}; open it with log.stream({name!r})"
            ) from None
        return self.remember(name, commit)

    # --- live state -----------------------------------------------------------------------

    def next_offset(self, name: str, manifest: Manifest | None = None) -> int:
        """The next offset of `name`, counting this process's unsealed records."""
        writer = self.writers.get(name)
        if writer is not None:
            return writer.next_offset
        return (manifest or self.manifest(name, refresh=True)).next_offset

    def live_state(self, name: str) -> tuple[Manifest, HeadBatches]:
        """The latest manifest of `name` and the unsealed heads after it: this process's
        writer's, or those a writer on this machine left in the local dir."""
        self.check_open()
        writer = self.writers.get(name)
        if writer is not None:
            return writer.snapshot()
        # Heads first, then the manifest: a head a writer seals meanwhile is either read here
        # or (removed only after its commit exists) in the manifest: no gap; one in both is
        # dropped by `chain_heads`, which starts at the manifest's end: no duplicate.
        found = self._read_heads(name)
        manifest = self.manifest(name, refresh=True)
        if not found:
            return manifest, []
        return manifest, chain_heads(found, manifest.next_offset, fenced_epoch(self.commits(name)))

    def _read_heads(self, name: str) -> list[Any]:
        """`read_heads` of `name`'s heads folder, after one listing that finds no head file
        in most streams' folders (only the writer's lock)."""
        folder = self._heads_dirs.get(name)
        if folder is None:
            folder = self._heads_dirs[name] = heads_dir(self.local_dir, name)
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        if not any(
            parse_head_name(e) is not None or parse_spare_name(e) is not None for e in entries
        ):
            return []
        return read_heads(folder)

    def flush(self, name: str) -> Manifest:
        """Seal and commit what this process wrote to `name`; return the latest manifest."""
        self.check_open()
        writer = self.writers.get(name)
        if writer is None:
            return self.manifest(name, refresh=True)
        return writer.flush()

    def notify_changed(self, name: str) -> None:
        """Wake whoever waits for `name` to change (this process appended or committed).

        Costs nothing until someone asks for a change token (`watched`), then one dictionary
        store when nobody waits (the per-record append path calls it). A watcher sets
        `watched` before it reads a token, and a change is made before `watched` is read
        here, so a change this skips is one the watcher sees; the store happens before the
        waiter count is read, and a waiter counts itself before it reads the counter, so a
        change is never missed.
        """
        if not self.watched:
            return
        self._versions[name] = next(self._sequence)
        if self._waiting:
            with self.changed:
                self.changed.notify_all()

    def wake_all(self) -> None:
        """Wake every `wait_changed` so that it re-checks its `stop` condition."""
        with self.changed:
            self.changed.notify_all()

    def version(self, name: str) -> int:
        """A token of this process's changes to `name`: it differs after each change (for
        `wait_changed`; compare with `!=` only)."""
        self.watched = True
        return self._versions.get(name, 0)

    def wait_changed(
        self,
        name: str,
        seen: int,
        timeout: float | None,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Block until `name`'s change token differs from `seen`, `stop()` is true (checked
        when woken, e.g. by `wake_all`), `timeout` seconds pass or the catalog closes; return
        the token."""
        self.watched = True
        with self.changed:
            self._waiting += 1
            try:
                self.changed.wait_for(
                    lambda: (
                        self._versions.get(name, 0) != seen
                        or self.closed
                        or (stop is not None and stop())
                    ),
                    timeout,
                )
            finally:
                self._waiting -= 1
            return self._versions.get(name, 0)

    def has_writer(self, name: str) -> bool:
        """Whether this process writes `name`."""
        return name in self.writers
