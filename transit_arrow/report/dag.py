"""The lineage DAG as data: streams (nodes), derivations (edges), selection and grouping.

`Dag` is built from the lineage table (`Log.lineage()`), so it needs no log: a node per
stream, an edge from a branch's parent (labelled with the fork offset) and from each of a
merge's parents (labelled with the pinned offset). `graph.LineageGraph` adds the pictures.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

import pyarrow as pa

from ..errors import InvalidInputError, StreamNotFoundError

__all__ = [
    "WINNER_KEYS",
    "Dag",
    "Edge",
    "Node",
    "Pin",
    "group_of",
    "matches_prefix",
    "natural_key",
    "plural",
    "quoted",
    "short_kind",
    "stream_names",
]

WINNER_KEYS = ("winner", "chosen", "selected", "best")


@dataclass(frozen=True)
class Pin:
    """A pinned position `stream@offset` (a merge parent, a base or a branch's fork point)."""

    stream: str
    offset: int
    generation: int | None = None
    root: str | None = None

    def __str__(self) -> str:
        return f"{self.stream}@{self.offset}"


@dataclass(frozen=True)
class Node:
    """One stream of the lineage DAG (one row of the lineage table).

    Attributes:
        own_start: the first offset of the stream's own records: 0 for a root, the fork offset
            + 1 for a branch, the base offset + 1 for a merge (after the winner's pinned offset
            for `fast_forward`). Offsets below it are inherited.
        context: drawn for context only: a parent or merge parent of a selected stream that
            is outside the selection.
    """

    name: str
    kind: str
    next_offset: int
    generation: int
    root: str
    created_at: str | None = None
    parent: Pin | None = None
    merge_parents: tuple[Pin, ...] = ()
    base: Pin | None = None
    policy: str | None = None
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    policy_version: str | None = None
    actor: str | None = None
    reason: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    context: bool = False

    @property
    def own_start(self) -> int:
        """The first offset of the stream's own records (see the class docstring)."""
        if self.kind == "branch" and self.parent is not None:
            return self.parent.offset + 1
        if self.kind == "merge":
            if self.policy == "fast_forward" and self.merge_parents:
                return max(p.offset for p in self.merge_parents) + 1
            return self.base.offset + 1 if self.base is not None else 0
        return 0

    @property
    def own(self) -> int:
        """How many records the stream holds of its own (merged records included)."""
        return max(0, self.next_offset - self.own_start)

    @property
    def inherited(self) -> int:
        """How many records its replay inherits from ancestors."""
        return min(self.own_start, self.next_offset)

    @property
    def refs(self) -> list[Pin]:
        """The positions it derives from: its parent, or its merge parents."""
        return [self.parent] if self.parent is not None else list(self.merge_parents)

    @property
    def winner(self) -> str | None:
        """The parent a merge chose: recorded in its policy params or labels, or the parent a
        `fast_forward` merge replays."""
        if self.kind != "merge":
            return None
        for source in (self.policy_params, dict(self.labels)):
            for key in WINNER_KEYS:
                value = source.get(key)
                if isinstance(value, str) and value:
                    return value
        if self.policy == "fast_forward" and self.merge_parents:
            return max(self.merge_parents, key=lambda p: p.offset).stream
        return None

    def kind_text(self) -> str:
        """`root`, `branch of P@N` or `merge(POLICY) of A, B (base P@N)`."""
        if self.kind == "branch" and self.parent is not None:
            return f"branch of {self.parent}"
        if self.kind == "merge":
            text = f"merge({self.policy}) of " + ", ".join(p.stream for p in self.merge_parents)
            if self.base is not None:
                text += f" (base {self.base})"
            return text
        return self.kind

    def details(self) -> list[str]:
        """`next=N`, then `actor=`, `reason=` and `labels=` when recorded."""
        parts = [f"next={self.next_offset}"]
        if self.actor is not None:
            parts.append(f"actor={quoted(self.actor)}")
        if self.reason is not None:
            parts.append(f"reason={quoted(self.reason)}")
        if self.labels:
            parts.append("labels=" + ",".join(f"{quoted(k)}={quoted(v)}" for k, v in self.labels))
        return parts

    def tooltip(self) -> str:
        """Every fact about the stream, one per line (an SVG `<title>`)."""
        lines = [self.name, self.kind_text()]
        if self.kind == "merge":
            lines += [f"  parent {p} (generation {p.generation})" for p in self.merge_parents]
            if self.policy_params:
                lines.append("params " + json.dumps(dict(self.policy_params), sort_keys=True))
        lines.append(
            f"records {self.next_offset} ({self.own} own, {self.inherited} inherited); "
            f"generation {self.generation}"
        )
        lines += self.details()[1:]
        lines.append(f"root {self.root}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the `--format json` node)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "parent": _pin_dict(self.parent),
            "merge_parents": [_pin_dict(p) for p in self.merge_parents],
            "base": _pin_dict(self.base),
            "policy": self.policy,
            "policy_params": dict(self.policy_params),
            "policy_version": self.policy_version,
            "winner": self.winner,
            "actor": self.actor,
            "reason": self.reason,
            "labels": dict(self.labels),
            "created_at": self.created_at,
            "next_offset": self.next_offset,
            "own_start": self.own_start,
            "own": self.own,
            "inherited": self.inherited,
            "generation": self.generation,
            "root": self.root,
            "context": self.context,
        }


def _pin_dict(pin: Pin | None) -> dict[str, Any] | None:
    if pin is None:
        return None
    return {"stream": pin.stream, "offset": pin.offset, "generation": pin.generation}


@dataclass(frozen=True)
class Edge:
    """A derivation: `source` is the parent of branch `target` (kind "branch"), or one of
    merge `target`'s parents (kind "merge"); `offset` is the fork or pinned offset."""

    source: str
    target: str
    kind: str
    offset: int


_DIGITS = re.compile(r"(\d+)")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@+")


def quoted(text: str) -> str:
    """`text` as it is when it is a plain word, else as a JSON string."""
    if text and all(c in _PLAIN for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def natural_key(name: str) -> tuple[tuple[int, str], ...]:
    """A sort key that orders digits by value: `task-2` before `task-10`."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in _DIGITS.split(name))


def plural(n: int, noun: str) -> str:
    """`1 stream`, `2 streams`, `3 branches`."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {noun}{'es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def group_of(name: str) -> str:
    """The part of a stream name before the first `/` (a task, in an eval log)."""
    return name.split("/", 1)[0]


def matches_prefix(name: str, prefix: str) -> bool:
    """Whether `name` is `prefix` or under it (`prefix/...`); a prefix ending with `/`
    matches only the names under it."""
    if prefix.endswith("/"):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + "/")


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def _node(row: Mapping[str, Any]) -> Node:
    parent = None
    if row.get("parent_stream") is not None:
        parent = Pin(
            row["parent_stream"],
            row["parent_offset"],
            row.get("parent_generation"),
            row.get("parent_root"),
        )
    base = None
    if row.get("base_stream") is not None:
        base = Pin(row["base_stream"], row["base_offset"])
    merge_parents = tuple(
        Pin(p["stream"], p["offset"], p.get("generation"), p.get("root"))
        for p in row.get("merge_parents") or []
    )
    labels = row.get("labels") or []
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return Node(
        name=row["name"],
        kind=row["kind"],
        next_offset=row["next_offset"],
        generation=row["generation"],
        root=row["root"],
        created_at=row.get("created_at"),
        parent=parent,
        merge_parents=merge_parents,
        base=base,
        policy=row.get("policy"),
        policy_params=_params(row.get("policy_params")),
        policy_version=row.get("policy_version"),
        actor=row.get("actor"),
        reason=row.get("reason"),
        labels=tuple(sorted((str(k), str(v)) for k, v in pairs)),
    )


class Dag:
    """The lineage DAG of a log, or of a part of it, as data (`graph.LineageGraph` draws it).

    Attributes:
        nodes: the streams, by name, in name order (context nodes included).
        edges: the derivations between the nodes shown.
        status: an optional verification status per stream (True OK, False FAIL), drawn
            on the nodes.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        title: str = "lineage",
        status: Mapping[str, bool] | None = None,
    ) -> None:
        ordered = sorted(nodes, key=lambda n: natural_key(n.name))
        self.nodes: dict[str, Node] = {n.name: n for n in ordered}
        self.title = title
        self.status: dict[str, bool] = dict(status or {})
        self.edges: list[Edge] = []
        for node in self.nodes.values():
            if node.context:  # context nodes show where selected streams come from, no more
                continue
            if node.parent is not None and node.parent.stream in self.nodes:
                self.edges.append(Edge(node.parent.stream, node.name, "branch", node.parent.offset))
            for p in node.merge_parents:
                if p.stream in self.nodes:
                    self.edges.append(Edge(p.stream, node.name, "merge", p.offset))

    # --- building and selecting -----------------------------------------------------------

    @classmethod
    def from_table(cls, table: pa.Table, *, title: str = "lineage") -> Self:
        """The graph of every stream of a lineage table (`Log.lineage()`)."""
        missing = {"name", "kind", "next_offset", "generation", "root"} - set(table.column_names)
        if missing:
            raise InvalidInputError(
                f"not a lineage table: columns {sorted(missing)} are missing (pass log.lineage())"
            )
        return cls((_node(row) for row in table.to_pylist()), title=title)

    def descendants(self, name: str) -> list[str]:
        """`name` and every stream derived from it (branches and merges, recursively)."""
        children = self._children()
        seen = [name]
        stack = [name]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in seen:
                    seen.append(child)
                    stack.append(child)
        return seen

    def select(
        self,
        *,
        streams: Sequence[str] | None = None,
        prefix: str | None = None,
        context: bool = True,
    ) -> Self:
        """The part of the graph about `streams` (each with everything derived from it) or
        the streams under `prefix` (see `matches_prefix`); with `context`, the parents and
        merge parents of those streams that are outside it are kept as context nodes.

        Raises:
            InvalidInputError: both `streams` and `prefix`, a bad type, or no stream matches
                `prefix`.
            StreamNotFoundError: a stream of `streams` does not exist.
        """
        if streams is not None and prefix is not None:
            raise InvalidInputError("pass streams or prefix, not both")
        if streams is None and prefix is None:
            return self
        chosen: list[str] = []
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix.strip("/"):
                raise InvalidInputError(f"prefix must be a non-empty string, not {prefix!r}")
            chosen = [n for n in self.nodes if matches_prefix(n, prefix)]
            if not chosen:
                raise InvalidInputError(
                    f"no stream is {prefix!r} or under {prefix.rstrip('/')}/ in this log; "
                    f"groups: {', '.join(sorted(self.groups())[:10]) or 'none'}"
                )
        else:
            for name in stream_names(streams):
                if name not in self.nodes:
                    raise StreamNotFoundError(_not_found(name, self.nodes))
                chosen += [d for d in self.descendants(name) if d not in chosen]
        title = f"{self.title}: {prefix}" if prefix is not None else self.title
        return self.subset(chosen, context=context, title=title)

    def subset(
        self, chosen: Iterable[str], *, context: bool = True, title: str | None = None
    ) -> Self:
        """The graph of the `chosen` nodes, with their parents and merge parents outside it as
        context nodes when `context`."""
        keep = {n: replace(self.nodes[n], context=False) for n in chosen}
        if context:
            for name in list(keep):
                for ref in self.nodes[name].refs:
                    if ref.stream in self.nodes and ref.stream not in keep:
                        keep[ref.stream] = replace(self.nodes[ref.stream], context=True)
        return type(self)(keep.values(), title=title or self.title, status=self.status)

    def with_status(self, status: Mapping[str, bool]) -> Self:
        """The same graph with verification statuses drawn on the nodes."""
        return type(self)(self.nodes.values(), title=self.title, status=status)

    def _children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = defaultdict(list)
        for edge in self.edges:
            children[edge.source].append(edge.target)
        return children

    @property
    def selected(self) -> list[Node]:
        """The nodes that are not context nodes."""
        return [n for n in self.nodes.values() if not n.context]

    def group_map(self) -> dict[str, str]:
        """Each node's group (task): the part before the first `/` of the name of the top its
        home parents lead to (its root, for a whole log). So `task-3/large/retry-1` is in
        `task-3`, and a merge `best` of `events` and `retry` is in `events`."""
        home = self.home()
        out: dict[str, str] = {}
        for name in self.nodes:
            top, seen = name, {name}
            while top in home and home[top] not in seen:
                top = home[top]
                seen.add(top)
            out[name] = group_of(top)
        return out

    def groups(self) -> dict[str, list[str]]:
        """The selected streams by group (see `group_map`), groups and members in name
        order."""
        mapping = self.group_map()
        out: dict[str, list[str]] = defaultdict(list)
        for node in self.selected:
            out[mapping[node.name]].append(node.name)
        return dict(sorted(out.items(), key=lambda item: natural_key(item[0])))

    def group(self, name: str) -> Self:
        """The subgraph of group `name`, with its context nodes."""
        members = self.groups().get(name)
        if members is None:
            raise InvalidInputError(f"no group {name!r}; groups: {', '.join(self.groups())}")
        return self.subset(members, title=f"{self.title}: {name}")

    def layers(self) -> dict[str, int]:
        """A layer (column) per node: 0 for nodes without a drawn parent, else one more than
        the deepest parent, so that every edge points to a later layer."""
        succ: dict[str, list[str]] = defaultdict(list)
        waiting = dict.fromkeys(self.nodes, 0)
        for edge in self.edges:
            succ[edge.source].append(edge.target)
            waiting[edge.target] += 1
        layer = dict.fromkeys(self.nodes, 0)
        ready = [n for n, count in waiting.items() if count == 0]
        while ready:  # Kahn's topological order (iterative: lineages may be deep)
            name = ready.pop()
            for target in succ.get(name, []):
                layer[target] = max(layer[target], layer[name] + 1)
                waiting[target] -= 1
                if waiting[target] == 0:
                    ready.append(target)
        return layer

    def home(self) -> dict[str, str]:
        """Each node's home parent among the nodes shown: a branch's parent, a merge's first
        shown parent. Nodes without one (roots, context nodes, streams whose parents are not
        shown) are absent. The text tree lists a node under its home; the picture places it
        there."""
        out: dict[str, str] = {}
        for node in self.nodes.values():
            shown = [p.stream for p in node.refs if p.stream in self.nodes]
            if shown and not node.context:
                out[node.name] = shown[0]
        return out

    def creation_order(self) -> list[str]:
        """Node names by creation time (then name): the order of children under a parent."""
        return sorted(self.nodes, key=lambda n: (self.nodes[n].created_at or "", n))

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __repr__(self) -> str:
        kinds: dict[str, int] = defaultdict(int)
        for node in self.selected:
            kinds[node.kind] += 1
        counts = ", ".join(plural(kinds[k], k) for k in ("root", "branch", "merge") if kinds[k])
        extra = len(self.nodes) - len(self.selected)
        more = f" (+{extra} context)" if extra else ""
        return (
            f"<{type(self).__name__} {self.title!r}: {plural(len(self.selected), 'stream')} "
            f"({counts or 'none'}){more}, {plural(len(self.edges), 'edge')}, "
            f"{plural(len(self.groups()), 'group')}>"
        )

    def to_dict(self) -> dict[str, Any]:
        """`{"nodes": [...], "edges": [...]}`, JSON-serialisable."""
        groups = self.group_map()
        return {
            "title": self.title,
            "nodes": [{**n.to_dict(), "group": groups[n.name]} for n in self.nodes.values()],
            "edges": [
                {"source": e.source, "target": e.target, "kind": e.kind, "offset": e.offset}
                for e in self.edges
            ],
        }

    def to_json(self) -> str:
        """`to_dict()` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


def stream_names(streams: object) -> list[str]:
    """`streams` (a name or a sequence of names) as a list; raises `InvalidInputError` on
    anything else or on an empty sequence."""
    if isinstance(streams, str):
        return [streams]
    if not isinstance(streams, Sequence | set | frozenset) or not all(
        isinstance(s, str) for s in streams
    ):
        raise InvalidInputError(f"streams must be a list of stream names, not {streams!r}")
    if not streams:
        raise InvalidInputError("streams is empty: name at least one stream (or pass None)")
    return list(streams)


def _not_found(name: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return f"stream {name!r} does not exist{hint}"


def short_kind(node: Node) -> str:
    """The second line of a node's box: kind, fork point or policy, and own records."""
    if node.kind == "branch" and node.parent is not None:
        head = f"branch @{node.parent.offset}"
    elif node.kind == "merge":
        head = f"merge {node.policy}"
    else:
        head = node.kind
    return f"{head} · {node.own} own / {node.next_offset}"
