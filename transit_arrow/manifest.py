"""Manifests: the state of a stream at a generation, folded from its commits (DESIGN §5)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .commit import Commit, canonical, now_rfc3339
from .errors import IntegrityError, InvalidInputError
from .record import schema_from_json, schema_to_json

__all__ = [
    "SMALL_SNAPSHOT_INTERVAL",
    "SMALL_SNAPSHOT_SEGMENTS",
    "SNAPSHOT_INTERVAL",
    "Manifest",
    "SegmentRef",
    "Snapshot",
    "bind_snapshot",
    "check_metadata",
    "compact_action",
    "create_action",
    "decode_snapshot",
    "encode_snapshot",
    "retain_action",
    "segment_paths_added",
    "segment_refs",
    "snapshot_due",
]


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a stream's `metadata` (`actor`, `reason`: strings; `labels`: str -> str)."""
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


def create_action(
    kind: str,
    *,
    schema: pa.Schema | None,
    metadata: dict[str, Any],
    start_offset: int,
    parent: dict[str, Any] | None = None,
    merge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `create` action of generation 0 of a root, branch or merge stream."""
    return {
        "type": "create",
        "kind": kind,
        "parent": parent,
        "merge": merge,
        "schema": schema_to_json(schema) if schema is not None else None,
        "metadata": metadata,
        "created_at": now_rfc3339(),
        "start_offset": start_offset,
    }


@dataclass(frozen=True)
class SegmentRef:
    """One `add_segment` action: a Parquet file holding offsets `first..last` of one stream."""

    path: str
    first_offset: int
    last_offset: int
    records: int
    bytes: int
    blake3: str
    min_timestamp: int
    max_timestamp: int

    @classmethod
    def from_action(cls, action: dict[str, Any]) -> SegmentRef:
        return cls(**{k: action[k] for k in cls.__dataclass_fields__})

    def to_action(self) -> dict[str, Any]:
        return {"type": "add_segment", **self.__dict__}

    def summary(self) -> dict[str, Any]:
        """What a `compact` or `retain` action records of a segment it replaces or drops."""
        return {
            "path": self.path,
            "blake3": self.blake3,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "records": self.records,
        }


_SEGMENT_FIELDS = tuple(SegmentRef.__dataclass_fields__)


def segment_refs(rows: Iterable[Sequence[Any]]) -> tuple[SegmentRef, ...]:
    """`SegmentRef`s of rows of their fields in order (a snapshot's or the metadata cache's):
    made without the frozen dataclass's `__init__` (one `object.__setattr__` per field), and
    without the cyclic garbage collector's passes over the growing heap meanwhile (together
    0.4 s of a 100,000-segment snapshot's fold)."""
    make = object.__new__
    out = []
    was = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            seg = make(SegmentRef)
            seg.__dict__.update(zip(_SEGMENT_FIELDS, row, strict=True))
            out.append(seg)
    finally:
        if was:
            gc.enable()
    return tuple(out)


def compact_action(replaced: list[SegmentRef], segment: SegmentRef) -> dict[str, Any]:
    """The `compact` action: `segment` holds exactly the records of the adjacent `replaced`
    segments (DESIGN §10)."""
    return {
        "type": "compact",
        "replaced": [s.summary() for s in replaced],
        "segment": {k: v for k, v in segment.to_action().items() if k != "type"},
    }


def retain_action(dropped: list[SegmentRef]) -> dict[str, Any]:
    """The `retain` action: the stream's oldest own segments `dropped` are no longer part of
    its replay; offsets never move (DESIGN §10)."""
    return {"type": "retain", "dropped": [s.summary() for s in dropped]}


def segment_paths_added(action: dict[str, Any]) -> list[str]:
    """The segment files an action makes part of a stream (`add_segment`, `compact`)."""
    kind = action.get("type")
    if kind == "add_segment":
        return [action["path"]]
    if kind == "compact":
        return [action["segment"]["path"]]
    return []


@dataclass(frozen=True)
class Manifest:
    """A stream's descriptor, schema and ordered segments at one generation."""

    stream: str
    generation: int
    root: str
    create: dict[str, Any]
    schema: pa.Schema | None
    segments: tuple[SegmentRef, ...] = ()
    next_offset: int = 0
    writer_epoch: int = 0
    #: The time of this generation's commit (one entry; a tuple for compatibility: keeping every
    #: generation's time here made folding n commits cost O(n^2)).
    commit_times: tuple[str, ...] = field(default=(), repr=False)
    #: Set by a `delete` commit (`Log.delete_stream`): the stream is gone from listings; its
    #: history stays readable by generation.
    deleted: bool = False

    @property
    def kind(self) -> str:
        return str(self.create.get("kind", "root"))

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """System columns this stream's own segments carry beyond the usual four."""
        merge = self.create.get("merge")
        if merge and merge["policy"]["name"] not in ("pin", "fast_forward", "concat"):
            return ("_origin_stream", "_origin_offset")
        return ()

    @property
    def start_offset(self) -> int:
        """The first offset of this stream's own records."""
        return int(self.create.get("start_offset", 0))

    @classmethod
    def initial(cls, commit: Commit) -> Manifest:
        actions = commit["actions"]
        if not actions or actions[0].get("type") != "create":
            raise IntegrityError(
                f"commit 0 of stream {commit['stream']!r} does not start with a create action"
            )
        create = actions[0]
        schema = schema_from_json(create["schema"]) if create.get("schema") else None
        start = int(create.get("start_offset", 0))
        base = cls(
            stream=commit["stream"],
            generation=0,
            root=commit["root"],
            create=create,
            schema=schema,
            next_offset=start,
            commit_times=(commit["time"],),
        )
        return base.apply_actions(actions[1:], commit)

    def apply(self, commit: Commit) -> Manifest:
        """The manifest after `commit` (which must be the next generation)."""
        if commit["generation"] != self.generation + 1:
            raise IntegrityError(
                f"stream {self.stream!r}: commit {commit['generation']} does not follow "
                f"generation {self.generation}"
            )
        nxt = replace(
            self,
            generation=commit["generation"],
            root=commit["root"],
            commit_times=(commit["time"],),
        )
        return nxt.apply_actions(commit["actions"], commit)

    def apply_actions(self, actions: list[dict[str, Any]], commit: Commit) -> Manifest:
        m = self
        for action in actions:
            kind = action.get("type")
            if kind == "add_segment":
                seg = SegmentRef.from_action(action)
                if seg.first_offset != m.next_offset or seg.last_offset < seg.first_offset:
                    raise IntegrityError(
                        f"stream {m.stream!r} commit {commit['generation']}: segment "
                        f"{seg.path} covers {seg.first_offset}..{seg.last_offset} but the "
                        f"stream's next offset is {m.next_offset}"
                    )
                # tuple + tuple is one C-level copy; unpacking into a new tuple is ~8x slower
                segments = m.segments + (seg,)  # noqa: RUF005
                m = replace(m, segments=segments, next_offset=seg.last_offset + 1)
            elif kind == "evolve_schema":
                m = replace(m, schema=schema_from_json(action["schema"]))
            elif kind == "fence":
                m = replace(m, writer_epoch=int(action["epoch"]))
            elif kind == "delete":
                m = replace(m, deleted=True)
            elif kind == "compact":
                m = m.with_compaction(action, commit)
            elif kind == "retain":
                m = m.with_retention(action, commit)
            elif kind == "create":
                raise IntegrityError(
                    f"stream {m.stream!r}: create action in commit {commit['generation']}"
                )
            else:
                raise IntegrityError(
                    f"stream {m.stream!r} commit {commit['generation']}: unknown action {kind!r}"
                )
        return m

    def segment_count(self) -> int:
        return len(self.segments)

    @property
    def retained_from(self) -> int:
        """The first offset of this stream's own records still in its replay (after `retain`
        actions dropped older segments; `start_offset` when none did)."""
        return self.segments[0].first_offset if self.segments else self.next_offset

    def _where(self, commit: Commit) -> str:
        return f"stream {self.stream!r} commit {commit['generation']}"

    def _run(self, listed: list[dict[str, Any]], commit: Commit, what: str) -> int:
        """The index in `segments` where the run of segments `listed` starts (they must be
        adjacent and match path, hash and offsets exactly)."""
        if not listed:
            raise IntegrityError(f"{self._where(commit)}: {what} lists no segment")
        index = {s.path: i for i, s in enumerate(self.segments)}
        start = index.get(listed[0].get("path", ""))
        if start is None:
            raise IntegrityError(
                f"{self._where(commit)}: {what} names {listed[0].get('path')!r}, which is not "
                "one of the stream's segments"
            )
        for k, item in enumerate(listed):
            i = start + k
            seg = self.segments[i] if i < len(self.segments) else None
            if seg is None or seg.summary() != item:
                raise IntegrityError(
                    f"{self._where(commit)}: {what} lists {item.get('path')!r}, which is not "
                    "the stream's next segment (segments must be adjacent and match exactly)"
                )
        return start

    def with_compaction(self, action: dict[str, Any], commit: Commit) -> Manifest:
        """The manifest after a `compact` action (checked against the segments it replaces)."""
        replaced = list(action.get("replaced") or [])
        start = self._run(replaced, commit, "compact")
        if len(replaced) < 2:
            raise IntegrityError(f"{self._where(commit)}: compact replaces fewer than 2 segments")
        new = SegmentRef.from_action(action["segment"])
        old = self.segments[start : start + len(replaced)]
        if (
            new.first_offset != old[0].first_offset
            or new.last_offset != old[-1].last_offset
            or new.records != sum(s.records for s in old)
        ):
            raise IntegrityError(
                f"{self._where(commit)}: compacted segment {new.path} covers "
                f"{new.first_offset}..{new.last_offset} ({new.records} records) but replaces "
                f"{old[0].first_offset}..{old[-1].last_offset} "
                f"({sum(s.records for s in old)} records)"
            )
        segments = (*self.segments[:start], new, *self.segments[start + len(replaced) :])
        return replace(self, segments=segments)

    def with_retention(self, action: dict[str, Any], commit: Commit) -> Manifest:
        """The manifest after a `retain` action (only the oldest segments can be dropped)."""
        dropped = list(action.get("dropped") or [])
        if self._run(dropped, commit, "retain") != 0:
            raise IntegrityError(
                f"{self._where(commit)}: retain must drop the oldest segments first"
            )
        return replace(self, segments=self.segments[len(dropped) :])


# --- folded manifest snapshots (DESIGN §5) -----------------------------------------------------

#: A snapshot is written at every generation that is a multiple of this...
SNAPSHOT_INTERVAL = 128
#: ... and of this one too while the manifest lists at most `SMALL_SNAPSHOT_SEGMENTS` segments
#: (writing such a snapshot costs about a millisecond; opening reads at most this many commits).
SMALL_SNAPSHOT_INTERVAL = 32
SMALL_SNAPSHOT_SEGMENTS = 4096
_SNAPSHOT_KEY = b"transit.snapshot"
_SEGMENT_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("path", pa.string()),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("records", pa.int64()),
        ("bytes", pa.int64()),
        ("blake3", pa.string()),
        ("min_timestamp", pa.int64()),
        ("max_timestamp", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Snapshot:
    """A folded manifest: the state at `manifest.generation`, bound to that commit's root.

    Attributes:
        manifest: the manifest at the snapshot's generation.
        prev_root: the root of the generation before (None for generation 0).
        released: segment paths earlier generations referenced that `manifest` no longer
            lists (released by `compact` / `retain`), so `gc` and orphan cleanup still know them.
    """

    manifest: Manifest
    prev_root: str | None
    released: tuple[str, ...] = ()


def snapshot_due(manifest: Manifest) -> bool:
    """Whether the writer records a snapshot at this manifest's generation."""
    g = manifest.generation
    if g == 0 or g % SMALL_SNAPSHOT_INTERVAL:
        return False
    return g % SNAPSHOT_INTERVAL == 0 or len(manifest.segments) <= SMALL_SNAPSHOT_SEGMENTS


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The snapshot as Parquet bytes: one row per segment, the rest as canonical JSON in the
    schema metadata. Deterministic: any process folding the same commits writes the same
    bytes, so concurrent writers of one snapshot agree."""
    m = snapshot.manifest
    header = {
        "format": 1,
        "stream": m.stream,
        "generation": m.generation,
        "root": m.root,
        "prev_root": snapshot.prev_root,
        "time": m.commit_times[-1] if m.commit_times else None,
        "create": m.create,
        "schema": schema_to_json(m.schema) if m.schema is not None else None,
        "next_offset": m.next_offset,
        "writer_epoch": m.writer_epoch,
        "released": sorted(snapshot.released),
    }
    columns = {k: [getattr(s, k) for s in m.segments] for k in _SEGMENT_SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=_SEGMENT_SCHEMA)
    table = table.replace_schema_metadata({_SNAPSHOT_KEY: canonical(header)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False)
    return bytes(sink.getvalue())


def decode_snapshot(data: bytes, stream: str) -> tuple[Snapshot, dict[str, Any]]:
    """Parse snapshot bytes (not yet bound to the commit log: see `bind_snapshot`)."""
    try:
        # ParquetFile, not read_table: a few hundred rows read in a third of the time.
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
        header = json.loads((table.schema.metadata or {})[_SNAPSHOT_KEY])
        if header.get("format") != 1 or header.get("stream") != stream:
            raise ValueError(f"snapshot of {header.get('stream')!r}, format {header.get('format')}")
        columns = [table.column(n).to_pylist() for n in _SEGMENT_SCHEMA.names]
        segments = segment_refs(zip(*columns, strict=True))
        schema = header["schema"]
        manifest = Manifest(
            stream=stream,
            generation=int(header["generation"]),
            root=str(header["root"]),
            create=header["create"],
            schema=schema_from_json(schema) if schema else None,
            segments=segments,
            next_offset=int(header["next_offset"]),
            writer_epoch=int(header["writer_epoch"]),
            commit_times=(header["time"],) if header.get("time") else (),
        )
    except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
        raise IntegrityError(f"snapshot of stream {stream!r} cannot be read: {e}") from e
    return Snapshot(manifest, header["prev_root"], tuple(header.get("released") or ())), header


def bind_snapshot(snapshot: Snapshot, commit: Commit) -> None:
    """Raise `IntegrityError` unless the snapshot folds exactly to `commit` (its generation and
    root; `commit` was read and checked against `snapshot.prev_root`)."""
    m = snapshot.manifest
    if commit["generation"] != m.generation or commit["root"] != m.root:
        raise IntegrityError(
            f"snapshot of stream {m.stream!r} at generation {m.generation} names root {m.root}, "
            f"but commit {commit['generation']} has root {commit['root']}"
        )
    if m.generation == 0 and m.create != commit["actions"][0]:
        raise IntegrityError(f"snapshot of stream {m.stream!r}: create action differs")
