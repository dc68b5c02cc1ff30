"""Manifests: the state of a stream at a generation, folded from its commits (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from .commit import Commit, now_rfc3339
from .errors import IntegrityError, InvalidInputError
from .record import schema_from_json, schema_to_json

__all__ = ["Manifest", "SegmentRef", "check_metadata", "create_action"]


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
    commit_times: tuple[str, ...] = field(default=(), repr=False)

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
            commit_times=(*self.commit_times, commit["time"]),
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
                m = replace(m, segments=(*m.segments, seg), next_offset=seg.last_offset + 1)
            elif kind == "evolve_schema":
                m = replace(m, schema=schema_from_json(action["schema"]))
            elif kind == "fence":
                m = replace(m, writer_epoch=int(action["epoch"]))
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
