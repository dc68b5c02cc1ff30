"""Compaction and retention (DESIGN §10): explicit commits that change which files hold a
stream's records, never the records.

- `compact` rewrites runs of adjacent small segments of one stream into one segment each, by a
  commit whose `compact` actions list exactly what they replace. Before committing, the new
  file is read back and must hold exactly the same records (offsets and values) as the
  segments it replaces, each of which is checked against its BLAKE3 first.
- `retain` drops a stream's oldest whole segments by a commit (`retain` action); offsets never
  move, so a record keeps its offset forever, and reads simply start later.

Both commit as the stream's writer (they take its lease, like an append), so they never race
a seal. Earlier generations keep naming the replaced files: branches, merges and checkpoints
taken before still read and verify the same, and `gc` frees a replaced file only once nothing
reachable needs it (see `maintenance.collect_garbage`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

from .commit import Commit, CommitLog, canonical, writer_identity
from .engine.catalog import Catalog
from .engine.replay import replay_spans
from .engine.writer import Writer, writer_for
from .errors import IntegrityError, InvalidInputError, TransitError
from .layout import MATERIALIZATIONS, checkpoints_folder, segment_path, snapshots_folder
from .manifest import Manifest, SegmentRef, compact_action, decode_snapshot, retain_action
from .segments.parquet import with_headers, with_headers_schema
from .segments.verified import hash_bytes

__all__ = [
    "AutoCompactor",
    "CompactReport",
    "RetainReport",
    "compact",
    "compaction_checks",
    "retain",
]

#: Segments smaller than this are "small" (compaction candidates) by default.
SMALL_BYTES = 16 * 1024 * 1024
#: A compacted segment is grown up to about this size by default.
TARGET_BYTES = 128 * 1024 * 1024


@dataclass
class CompactReport:
    """What `Stream.compact` did.

    Attributes:
        stream: the stream compacted.
        generation: the commit that recorded the compaction (None when nothing was compacted).
        replaced: paths of the segments replaced, oldest first.
        created: paths of the new segments, one per run of replaced segments.
        records: records rewritten.
        bytes_before: total size of the replaced segments.
        bytes_after: total size of the new segments.
        segments_before: the stream's own segment count before.
        segments_after: ... and after.
        seconds: wall time.
    """

    stream: str
    generation: int | None = None
    replaced: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    records: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    segments_before: int = 0
    segments_after: int = 0
    seconds: float = 0.0


@dataclass
class RetainReport:
    """What `Stream.retain` did.

    Attributes:
        stream: the stream.
        generation: the commit that recorded the retention (None when nothing was dropped).
        dropped: paths of the segments no longer in the stream's replay, oldest first.
        records: records dropped.
        bytes: their total size.
        retained_from: the first offset of the stream's own records still replayed.
    """

    stream: str
    generation: int | None = None
    dropped: list[str] = field(default_factory=list)
    records: int = 0
    bytes: int = 0
    retained_from: int = 0


# --- committing as the writer -----------------------------------------------------------------


def _commit_as_writer(
    catalog: Catalog, writer: Writer, build: Any
) -> tuple[Commit, Manifest] | None:
    """Commit `build(manifest)`'s actions as `writer`, with no seal in flight.

    A seal is in flight exactly while the writer's `pending` queue is non-empty (a head leaves
    it only after its commit is remembered), and heads enter it only under the writer's lock.
    So holding that lock with `pending` empty, the commit slot after `writer.manifest` is ours;
    appends wait for the few milliseconds of the commit. `build` returns None for nothing to do.
    """
    while True:
        writer.flush()
        with writer.lock:
            writer.check_usable()
            if writer.pending:
                continue  # appended and rolled since the flush: seal that first
            manifest = writer.manifest
            actions = build(manifest)
            if actions is None:
                return None
            identity = writer_identity(writer.writer_id, writer.lease.epoch)
            commit = writer.commit_log.create(
                manifest.generation + 1, manifest.root, actions, identity
            )
            writer.manifest = catalog.remember(writer.name, commit)
            result = writer.manifest
        catalog.notify_changed(writer.name)
        return commit, result


# --- compaction -------------------------------------------------------------------------------


def _schema_of(catalog: Catalog, seg: SegmentRef) -> pa.Schema:
    return with_headers_schema(pq.read_schema(catalog.segment_file(seg)))


def plan_runs(
    catalog: Catalog,
    manifest: Manifest,
    *,
    small_bytes: int,
    target_bytes: int,
    min_segments: int,
) -> list[list[SegmentRef]]:
    """Runs of adjacent small segments with identical file schemas, each to become one."""
    runs: list[list[SegmentRef]] = []
    current: list[SegmentRef] = []
    schema: pa.Schema | None = None
    size = 0

    def close() -> None:
        if len(current) >= max(2, min_segments):
            runs.append(list(current))
        current.clear()

    for seg in manifest.segments:
        if seg.bytes >= small_bytes:
            close()
            schema, size = None, 0
            continue
        seg_schema = _schema_of(catalog, seg)
        if current and (
            schema is None
            or not seg_schema.equals(schema, check_metadata=False)
            or size + seg.bytes > target_bytes
        ):
            close()
            size = 0
        current.append(seg)
        schema = seg_schema
        size += seg.bytes
    close()
    return runs


def _read_verified(catalog: Catalog, seg: SegmentRef) -> pa.Table:
    """The segment's records, from bytes checked against the commit's BLAKE3."""
    data = catalog.store.get(seg.path)
    found = hash_bytes(memoryview(data))
    if found != seg.blake3 or len(data) != seg.bytes:
        raise IntegrityError(
            f"segment {catalog.uri}/{seg.path}: expected BLAKE3 {seg.blake3} ({seg.bytes} "
            f"bytes), found {found} ({len(data)} bytes); nothing was compacted"
        )
    return with_headers(pq.read_table(pa.BufferReader(data)))


def _same_records(expected: pa.Table, found: pa.Table) -> str | None:
    """None when both tables hold the same records (offsets and values), else what differs."""
    if found.num_rows != expected.num_rows:
        return f"{found.num_rows} records, expected {expected.num_rows}"
    if found.column_names != expected.column_names:
        return f"columns {found.column_names}, expected {expected.column_names}"
    for name in expected.column_names:
        a, b = expected.column(name), found.column(name)
        if a.type != b.type:
            if pa.types.is_dictionary(a.type) or pa.types.is_dictionary(b.type):
                a, b = a.cast(pa.string()), b.cast(pa.string())
            else:
                return f"column {name!r} is {b.type}, expected {a.type}"
        if not a.equals(b):
            return f"column {name!r} differs"
    return None


def rewrite(
    catalog: Catalog, name: str, run: list[SegmentRef]
) -> tuple[SegmentRef, bytes | bytearray]:
    """One segment holding exactly `run`'s records, checked by reading it back."""
    original = pa.concat_tables([_read_verified(catalog, seg) for seg in run])
    offsets = original.column("_offset").to_numpy()
    first, last = run[0].first_offset, run[-1].last_offset
    if len(offsets) != last - first + 1 or (
        len(offsets) and (offsets[0] != first or (offsets[1:] - offsets[:-1] != 1).any())
    ):
        raise IntegrityError(
            f"stream {name!r}: segments {run[0].path}..{run[-1].path} do not hold offsets "
            f"{first}..{last} densely; nothing was compacted"
        )
    head = original.drop_columns(["_stream"])
    data, meta = catalog.encode_segment(head, name)
    seg = SegmentRef(
        path=segment_path(catalog.stream_folder(name), first, last, meta["blake3"]), **meta
    )
    problem = _same_records(original, with_headers(pq.read_table(pa.BufferReader(data))))
    if problem is not None:  # pragma: no cover - a Parquet writer bug
        raise IntegrityError(f"compacting stream {name!r}: the new file has {problem}")
    return seg, data


def compact(
    catalog: Catalog,
    name: str,
    *,
    small_bytes: int = SMALL_BYTES,
    target_bytes: int = TARGET_BYTES,
    min_segments: int = 2,
    dry_run: bool = False,
) -> CompactReport:
    """Rewrite runs of adjacent small segments of `name` into one segment each (DESIGN §10).

    A segment is small below `small_bytes`; a run grows up to `target_bytes` and needs at
    least `min_segments` segments (and segments with identical file schemas). Each new file is
    read back and compared record by record with the replaced ones before one commit lists,
    per run, the replaced segments and the new one. With `dry_run`, only says what it would do.
    """
    started = time.perf_counter()
    for label, value in (("small_bytes", small_bytes), ("target_bytes", target_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidInputError(f"{label} must be a positive number of bytes, not {value!r}")
    if not isinstance(min_segments, int) or min_segments < 2:
        raise InvalidInputError(f"min_segments must be an integer >= 2, not {min_segments!r}")
    catalog.check_open()
    if not catalog.exists(name):
        raise catalog.not_found(name)
    report = CompactReport(stream=name)
    manifest = catalog.flush(name)
    runs = plan_runs(
        catalog,
        manifest,
        small_bytes=small_bytes,
        target_bytes=target_bytes,
        min_segments=min_segments,
    )
    report.segments_before = report.segments_after = len(manifest.segments)
    if dry_run or not runs:
        _describe(report, runs, [])
        report.seconds = time.perf_counter() - started
        return report
    writer = writer_for(catalog, name)
    created: list[SegmentRef] = []
    for run in runs:
        seg, data = rewrite(catalog, name, run)
        catalog.put_segment(seg.path, data)
        _check_stored(catalog, seg)
        created.append(seg)

    def build(current: Manifest) -> list[dict[str, Any]] | None:
        paths = {s.path: s for s in current.segments}
        actions = [
            compact_action(run, seg)
            for run, seg in zip(runs, created, strict=True)
            if all(paths.get(s.path) == s for s in run)  # still there (no retention since)
        ]
        return actions or None

    done = _commit_as_writer(catalog, writer, build)
    if done is None:
        report.seconds = time.perf_counter() - started
        return report
    commit, after = done
    kept = {a["segment"]["path"] for a in commit["actions"] if a["type"] == "compact"}
    pairs = [(r, s) for r, s in zip(runs, created, strict=True) if s.path in kept]
    _describe(report, [r for r, _ in pairs], [s for _, s in pairs])
    report.generation = commit["generation"]
    report.segments_after = len(after.segments)
    report.seconds = time.perf_counter() - started
    return report


def _describe(
    report: CompactReport, runs: list[list[SegmentRef]], created: list[SegmentRef]
) -> None:
    report.replaced = [s.path for run in runs for s in run]
    report.records = sum(s.records for run in runs for s in run)
    report.bytes_before = sum(s.bytes for run in runs for s in run)
    report.created = [s.path for s in created]
    report.bytes_after = sum(s.bytes for s in created)
    if not created:
        report.segments_after = report.segments_before - sum(len(r) - 1 for r in runs)


def _check_stored(catalog: Catalog, seg: SegmentRef) -> None:
    """The uploaded file must be exactly the bytes that were checked."""
    data = catalog.store.get(seg.path)
    found = hash_bytes(memoryview(data))
    if found != seg.blake3:
        raise IntegrityError(
            f"compacted segment {catalog.uri}/{seg.path} was stored with BLAKE3 {found}, "
            f"expected {seg.blake3}; nothing was committed"
        )


# --- retention --------------------------------------------------------------------------------


def retain(
    catalog: Catalog,
    name: str,
    *,
    before_offset: int | None = None,
    older_than: float | None = None,
    keep_records: int | None = None,
    dry_run: bool = False,
) -> RetainReport:
    """Drop `name`'s oldest whole own segments from its replay, by a commit (DESIGN §10).

    A segment is dropped when every record in it is below `before_offset`, or older than
    `older_than` seconds (by `_timestamp`), or when the segments after it still hold at least
    `keep_records` records; give exactly one of the three. Only whole segments go, oldest
    first, and offsets never move. Earlier generations (and branches and checkpoints taken
    before) keep reading the dropped records until `gc` frees files nothing reachable needs.
    """
    given = [x for x in (before_offset, older_than, keep_records) if x is not None]
    if len(given) != 1:
        raise InvalidInputError("pass exactly one of before_offset=, older_than= or keep_records=")
    for label, value in (("before_offset", before_offset), ("keep_records", keep_records)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise InvalidInputError(f"{label} must be an integer >= 0, not {value!r}")
    if older_than is not None and (
        not isinstance(older_than, int | float) or isinstance(older_than, bool) or older_than < 0
    ):
        raise InvalidInputError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
    catalog.check_open()
    if not catalog.exists(name):
        raise catalog.not_found(name)
    cutoff_us = (
        int((datetime.now(UTC).timestamp() - older_than) * 1_000_000)
        if older_than is not None
        else None
    )

    def choose(manifest: Manifest) -> list[SegmentRef]:
        segments = list(manifest.segments)
        total = sum(s.records for s in segments)
        out: list[SegmentRef] = []
        for seg in segments:
            if before_offset is not None:
                drop = seg.last_offset < before_offset
            elif cutoff_us is not None:
                drop = seg.max_timestamp < cutoff_us
            else:
                assert keep_records is not None
                drop = total - seg.records >= keep_records
            if not drop:
                break
            out.append(seg)
            total -= seg.records
        return out

    report = RetainReport(stream=name)
    manifest = catalog.flush(name)
    chosen = choose(manifest)
    if dry_run or not chosen:
        _describe_retain(report, chosen, manifest)
        return report
    writer = writer_for(catalog, name)
    picked: list[SegmentRef] = []

    def build(current: Manifest) -> list[dict[str, Any]] | None:
        picked[:] = choose(current)
        return [retain_action(picked)] if picked else None

    done = _commit_as_writer(catalog, writer, build)
    if done is None:
        _describe_retain(report, [], manifest)
        return report
    commit, after = done
    _describe_retain(report, picked, after)
    report.generation = commit["generation"]
    return report


def _describe_retain(report: RetainReport, dropped: list[SegmentRef], manifest: Manifest) -> None:
    report.dropped = [s.path for s in dropped]
    report.records = sum(s.records for s in dropped)
    report.bytes = sum(s.bytes for s in dropped)
    report.retained_from = dropped[-1].last_offset + 1 if dropped else manifest.retained_from
    if dropped and manifest.segments and manifest.segments[0].first_offset > report.retained_from:
        report.retained_from = manifest.segments[0].first_offset


# --- verification -----------------------------------------------------------------------------


def compaction_checks(catalog: Catalog, name: str, through: int) -> Iterator[dict[str, Any]]:
    """For `verify(deep=True)`: one check per `compact` action and per snapshot in generations
    `0..through`, from one fold of the commit log read from the store.

    A compacted file must hold exactly the records of the files it replaced (offsets and
    values), all checked against their BLAKE3. When `gc` has freed a replaced file, the
    record-by-record comparison is no longer possible; the check then says so (offsets and
    counts were checked when the commit was folded). A snapshot must be exactly the fold of
    the commits through its generation (DESIGN §5).
    """
    commit_log = CommitLog(catalog.store, name, catalog.stream_folder(name))
    prev: str | None = None
    manifest: Manifest | None = None
    found: list[tuple[int, dict[str, Any]]] = []
    snapshots = _snapshot_files(catalog, name)
    for g in range(through + 1):
        commit = commit_log.read(g, prev)
        manifest = Manifest.initial(commit) if manifest is None else manifest.apply(commit)
        if g in snapshots:
            yield _check_snapshot(catalog, name, snapshots[g], manifest, prev)
        prev = commit["root"]
        found += [(g, a) for a in commit["actions"] if a.get("type") == "compact"]
    live = {s.path for s in manifest.segments} if manifest is not None else set()
    for g, action in found:
        yield _check_action(catalog, name, g, action, live)


def _snapshot_files(catalog: Catalog, name: str) -> dict[int, str]:
    folder = snapshots_folder(catalog.stream_folder(name))
    out = {}
    for entry in catalog.store.list(folder):
        stem = entry.split(".")[0]
        if entry.endswith(".parquet") and stem.isdigit():
            out[int(stem)] = f"{folder}/{entry}"
    return out


def _check_snapshot(
    catalog: Catalog, name: str, path: str, folded: Manifest, prev: str | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"stream": name, "check": "snapshot", "object": path}
    try:
        snapshot, _ = decode_snapshot(catalog.store.get(path), name)
    except (IntegrityError, FileNotFoundError) as e:
        return {**entry, "ok": False, "detail": str(e), "expected": folded.root, "found": None}
    m = snapshot.manifest
    same = (
        m.generation == folded.generation
        and m.root == folded.root
        and snapshot.prev_root == prev
        and m.create == folded.create
        and m.segments == folded.segments
        and m.next_offset == folded.next_offset
        and m.writer_epoch == folded.writer_epoch
        and (m.schema is None) == (folded.schema is None)
        and (m.schema is None or folded.schema is None or m.schema.equals(folded.schema))
    )
    detail = f"generation {folded.generation}: " + (
        "the folded manifest of the commits" if same else "differs from the fold of the commits"
    )
    return {**entry, "ok": same, "detail": detail, "expected": folded.root, "found": m.root}


def _check_action(
    catalog: Catalog, name: str, g: int, action: dict[str, Any], live: set[str]
) -> dict[str, Any]:
    new = SegmentRef.from_action(action["segment"])
    if new.path not in live and not catalog.store.exists(new.path):
        return {
            "stream": name,
            "check": "compaction",
            "ok": True,
            "object": new.path,
            "detail": f"commit {g}: the compacted file was released later and freed by gc",
            "expected": None,
            "found": None,
        }
    entry: dict[str, Any] = {
        "stream": name,
        "check": "compaction",
        "ok": True,
        "object": new.path,
        "detail": "",
        "expected": None,
        "found": None,
    }
    replaced = action["replaced"]
    try:
        found = _read_verified(catalog, new)
        parts = []
        for item in replaced:
            ref = SegmentRef(
                path=item["path"],
                first_offset=item["first_offset"],
                last_offset=item["last_offset"],
                records=item["records"],
                bytes=-1,
                blake3=item["blake3"],
                min_timestamp=0,
                max_timestamp=0,
            )
            try:
                data = catalog.store.get(ref.path)
            except FileNotFoundError:
                entry["detail"] = (
                    f"commit {g}: {len(replaced)} replaced segments, {ref.path} freed by gc: "
                    "offsets and record counts checked, records no longer comparable"
                )
                return entry
            digest = hash_bytes(memoryview(data))
            if digest != ref.blake3:
                entry.update(
                    ok=False,
                    object=ref.path,
                    detail=f"commit {g}: replaced segment BLAKE3",
                    expected=ref.blake3,
                    found=digest,
                )
                return entry
            parts.append(with_headers(pq.read_table(pa.BufferReader(data))))
        problem = _same_records(pa.concat_tables(parts), found)
    except (TransitError, OSError, pa.ArrowInvalid) as e:
        entry.update(ok=False, detail=f"commit {g}: {e}")
        return entry
    if problem is not None:
        entry.update(ok=False, detail=f"commit {g}: the compacted file has {problem}")
    else:
        entry["detail"] = (
            f"commit {g}: holds exactly the records (offsets and values) of the "
            f"{len(replaced)} segments it replaced"
        )
    return entry


# --- automatic compaction (off by default) ----------------------------------------------------


class AutoCompactor:
    """Compacts one stream in the background whenever it has `threshold` small segments.

    Off by default: started by `Stream.auto_compact(...)`, stopped by `stop()` or when the log
    closes. Failures are kept in `errors` (and the compactor keeps going); a refused
    compaction changes nothing.
    """

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        *,
        threshold: int = 8,
        small_bytes: int = SMALL_BYTES,
        target_bytes: int = TARGET_BYTES,
        interval: float = 1.0,
    ) -> None:
        if not isinstance(threshold, int) or threshold < 2:
            raise InvalidInputError(f"threshold must be an integer >= 2, not {threshold!r}")
        self.catalog = catalog
        self.name = name
        self.threshold = threshold
        self.small_bytes = small_bytes
        self.target_bytes = target_bytes
        self.interval = interval
        self.reports: list[CompactReport] = []
        self.errors: list[TransitError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"transit-compact-{name}", daemon=True
        )
        catalog.on_close(self.stop)
        self._thread.start()

    def due(self) -> bool:
        """Whether the stream has at least `threshold` small segments."""
        manifest = self.catalog.manifest(self.name)
        small = sum(1 for s in manifest.segments if s.bytes < self.small_bytes)
        return small >= self.threshold

    def _loop(self) -> None:
        seen = -1
        while not self._stop.is_set():
            version = self.catalog.wait_changed(
                self.name, seen, self.interval, stop=self._stop.is_set
            )
            if self._stop.is_set() or self.catalog.closed:
                return
            if version == seen:
                continue
            seen = version
            try:
                if self.due():
                    self.reports.append(
                        compact(
                            self.catalog,
                            self.name,
                            small_bytes=self.small_bytes,
                            target_bytes=self.target_bytes,
                        )
                    )
            except TransitError as e:
                self.errors.append(e)

    def stop(self) -> None:
        """Stop compacting (waits for a compaction in progress to finish)."""
        self._stop.set()
        self.catalog.wake_all()
        if self._thread is not threading.current_thread():
            self._thread.join()


# --- what gc may free -------------------------------------------------------------------------


def releasable_segments(catalog: Catalog, *, min_age: float) -> set[str]:
    """Segment files some generation references but nothing reachable needs any more.

    A file is released by a `compact` or `retain` commit. It stays needed while the latest
    replay of any stream reaches it (its own, a branch's or merge's pinned ancestry) or a
    recorded checkpoint's replay does, and for `min_age` seconds after the releasing commit
    (readers holding the previous manifest, time travel right after). When any stream's
    history cannot be read, nothing is released (it might need anything).
    """
    manifests, errors = catalog.manifests()
    if errors:
        return set()
    now = time.time()
    released: set[str] = set()
    needed: set[str] = set()
    for name, manifest in manifests.items():
        for commit in catalog.commits(name):
            age = now - datetime.fromisoformat(commit["time"].replace("Z", "+00:00")).timestamp()
            for action in commit["actions"]:
                items = action.get("replaced") or action.get("dropped") or []
                if action.get("type") in ("compact", "retain"):
                    paths = {item["path"] for item in items}
                    (released if age >= min_age else needed).update(paths)
        positions = [manifest, *_checkpointed(catalog, name)]
        for m in positions:
            for span in replay_spans(catalog, m):
                needed.update(s.path for s in span.manifest.segments)
    return released - needed


def _checkpointed(catalog: Catalog, name: str) -> list[Manifest]:
    """The manifests of the generations recorded checkpoints of `name` name."""
    folder = checkpoints_folder(catalog.stream_folder(name))
    out = []
    for entry in catalog.store.list(folder):
        if entry.endswith(".json"):
            data = json.loads(catalog.store.get(f"{folder}/{entry}"))
            out.append(catalog.manifest_at(name, int(data["generation"])))
    return out


def materialization_garbage(catalog: Catalog, *, min_age: float) -> list[str]:
    """Materialization files nothing reachable references: state files no checkpoint names
    (a refresh interrupted between the two writes), and the checkpoints and states of a
    superseded definition (a checkpoint of another definition is never used again)."""
    out: list[str] = []
    now = time.time()
    for entry in catalog.store.list(MATERIALIZATIONS):
        if not entry.endswith("/"):
            continue
        folder = f"{MATERIALIZATIONS}/{entry[:-1]}"
        try:
            definition = json.loads(catalog.store.get(f"{folder}/definition.json"))
        except FileNotFoundError:
            continue  # being created, or not a materialization: keep everything
        current = blake3.blake3(canonical(definition)).hexdigest()  # as Materialization's
        referenced: set[str] = set()
        for path in _files(catalog, f"{folder}/checkpoints"):
            if not path.endswith(".json"):
                continue
            cp = json.loads(catalog.store.get(path))
            if cp.get("definition_hash") == current:
                referenced |= _paths_in(cp, f"{folder}/")  # state_path, or any later layout's
            elif _older(catalog, path, now, min_age):
                out.append(path)
        for path in _files(catalog, f"{folder}/state"):
            if path not in referenced and _older(catalog, path, now, min_age):
                out.append(path)
    return out


def _paths_in(value: Any, prefix: str) -> set[str]:
    """Every string under `prefix` anywhere in a JSON value."""
    if isinstance(value, str):
        return {value} if value.startswith(prefix) else set()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_paths_in(v, prefix) for v in value)) if value else set()
    return set()


def _files(catalog: Catalog, prefix: str) -> Iterator[str]:
    for entry in catalog.store.list(prefix):
        if entry.endswith("/"):
            yield from _files(catalog, f"{prefix}/{entry[:-1]}")
        else:
            yield f"{prefix}/{entry}"


def _older(catalog: Catalog, path: str, now: float, min_age: float) -> bool:
    try:
        info = catalog.store.head(path)
    except FileNotFoundError:
        return False
    return info.modified is None or now - info.modified >= min_age
