"""`transit branch`, `transit merge` and `transit lineage` (DESIGN §6, §7, §11)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import click
import pyarrow as pa

from ..stream import Stream
from .common import LogOptions, echo_json, key_values, log_options, output_option
from .render import json_rows

__all__ = ["branch", "format_lineage", "lineage", "merge"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _metadata_options(f: _F) -> _F:
    """`--actor`, `--reason` and `--label KEY=VALUE` (repeatable)."""
    f = click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        callback=key_values,
        help="A free-form label recorded with the stream (repeatable).",
    )(f)
    f = click.option("--reason", default=None, help="Why the stream was created.")(f)
    return click.option("--actor", default=None, help="Who or what created the stream.")(f)


def _created(
    stream: Stream, actor: str | None, reason: str | None, labels: dict[str, str]
) -> dict[str, Any]:
    """What `branch` and `merge` print: the new stream and the positions it references."""
    refs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in stream.ancestry().to_pylist():
        if row["depth"] == 1:
            relation = row.pop("relation")
            del row["depth"]
            refs[relation].append(row)
    return {
        "name": stream.name,
        "next_offset": stream.next_offset,
        "generation": stream.generation,
        "root": stream.root,
        "actor": actor,
        "reason": reason,
        "labels": dict(sorted(labels.items())),
        "refs": refs,
    }


@click.command()
@click.argument("uri")
@click.argument("name")
@click.option(
    "--at",
    "at",
    required=True,
    metavar="PARENT@N",
    help="The fork point: the branch replays PARENT through offset N, then its own records "
    "(PARENT alone: its last record).",
)
@_metadata_options
@output_option("text", "json")
@log_options
def branch(
    uri: str,
    name: str,
    at: str,
    actor: str | None,
    reason: str | None,
    labels: dict[str, str],
    output: str,
    log_opts: LogOptions,
) -> None:
    """Create stream NAME as a branch of PARENT@N.

    The branch replays PARENT through offset N, then its own records from N+1. Creating it
    writes one commit and copies no record, whatever the size of PARENT.
    """
    with log_opts.open(uri) as log:
        stream = log.branch(name, at=at, actor=actor, reason=reason, labels=labels)
        info = _created(stream, actor, reason, labels)
    (parent,) = info.pop("refs")["parent"]
    info = {"name": info.pop("name"), "kind": "branch", "parent": parent, **info}
    if output == "json":
        echo_json(info)
        return
    click.echo(
        f"created branch {name!r} of {parent['stream']}@{parent['offset']} (generation "
        f"{parent['generation']}); its own records start at offset {info['next_offset']}"
    )


@click.command()
@click.argument("uri")
@click.argument("name")
@click.argument("parents", nargs=-1, required=True, metavar="PARENT PARENT...")
@click.option(
    "--base",
    default=None,
    metavar="P@N",
    help="The shared prefix [default: the parents' nearest common ancestor].",
)
@click.option(
    "--policy",
    default="pin",
    show_default=True,
    metavar="POLICY",
    help="pin, fast_forward, concat, interleave or custom:NAME (a resolver registered in "
    "this process).",
)
@_metadata_options
@output_option("text", "json")
@log_options
def merge(
    uri: str,
    name: str,
    parents: tuple[str, ...],
    base: str | None,
    policy: str,
    actor: str | None,
    reason: str | None,
    labels: dict[str, str],
    output: str,
    log_opts: LogOptions,
) -> None:
    """Create stream NAME merging two or more PARENT heads.

    A PARENT is a stream ("a": its last record) or a position ("b@17"). The policy says what the
    merge replays (DESIGN §7): pin, the base only (the application appends the reconciliation);
    fast_forward, the one parent that contains the others; concat, each parent's records after
    the base in the order given; interleave, them all by timestamp. Nothing is written when the
    library refuses the merge.
    """
    with log_opts.open(uri) as log:
        stream = log.merge(
            name, list(parents), base=base, policy=policy, actor=actor, reason=reason, labels=labels
        )
        info = _created(stream, actor, reason, labels)
    refs = info.pop("refs")
    merged = refs.get("merge_parent", [])
    bases = refs.get("base", [])
    info = {
        "name": info.pop("name"),
        "kind": "merge",
        "policy": policy,
        "parents": merged,
        "base": bases[0] if bases else None,
        **info,
    }
    if output == "json":
        echo_json(info)
        return
    pinned = ", ".join(f"{p['stream']}@{p['offset']}" for p in merged)
    shared = f"base {bases[0]['stream']}@{bases[0]['offset']}" if bases else "no shared base"
    click.echo(
        f"created merge {name!r} ({policy}) of {pinned}, {shared}; next offset "
        f"{info['next_offset']}"
    )


# --- lineage ----------------------------------------------------------------------------------

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@+")


def _quoted(text: str) -> str:
    """`text` as it is when it is a plain word, else as a JSON string."""
    if text and all(c in _PLAIN for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _describe(row: dict[str, Any], at: int | None) -> str:
    """One tree line (without the branch glyphs) for a lineage row shown at offset `at`."""
    name = row["name"] if at is None else f"{row['name']} @{at}"
    kind = row["kind"]
    if kind == "merge":
        parents = ", ".join(p["stream"] for p in row["merge_parents"] or [])
        kind = f"merge({row['policy']}) of {parents}"
        if row["base_stream"] is not None:
            kind += f" (base {row['base_stream']}@{row['base_offset']})"
    parts = [name, kind, f"next={row['next_offset']}"]
    if row["actor"] is not None:
        parts.append(f"actor={_quoted(row['actor'])}")
    if row["reason"] is not None:
        parts.append(f"reason={_quoted(row['reason'])}")
    labels = row["labels"] or []
    if labels:
        parts.append("labels=" + ",".join(f"{_quoted(k)}={_quoted(v)}" for k, v in labels))
    return "  ".join(parts)


def format_lineage(table: pa.Table) -> str:
    """The lineage table as an indented tree.

    Roots (and streams whose parents are missing) are at the top, in name order. A branch is
    shown under its parent with "@N", its fork offset; a merge under each parent it merges,
    with "@N", that parent's pinned offset. Children are in creation order. A merge's own
    branches are shown under its first parent only.
    """
    rows = {r["name"]: r for r in table.to_pylist()}
    children: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    home: dict[str, str] = {}  # a merge -> the parent under which its subtree is shown
    roots = []
    for row in rows.values():
        if row["kind"] == "branch" and row["parent_stream"] in rows:
            children[row["parent_stream"]].append((row, row["parent_offset"]))
            continue
        pinned = [p for p in row["merge_parents"] or [] if p["stream"] in rows]
        if row["kind"] == "merge" and pinned:
            home[row["name"]] = pinned[0]["stream"]
            for p in pinned:
                children[p["stream"]].append((row, p["offset"]))
            continue
        roots.append(row)
    for items in children.values():
        items.sort(key=lambda item: (item[0]["created_at"] or "", item[0]["name"]))

    lines: list[str] = []

    def walk(name: str, prefix: str, seen: frozenset[str]) -> None:
        items = children.get(name, [])
        for i, (row, at) in enumerate(items):
            last = i == len(items) - 1
            line = _describe(row, at)
            expand = home.get(row["name"], name) == name and row["name"] not in seen
            if not expand and children.get(row["name"]):
                line += f"  (its branches are shown under {home.get(row['name'], name)})"
            lines.append(prefix + ("└── " if last else "├── ") + line)
            if expand:
                walk(row["name"], prefix + ("    " if last else "│   "), seen | {row["name"]})

    for row in sorted(roots, key=lambda r: r["name"]):
        lines.append(_describe(row, None))
        walk(row["name"], "", frozenset({row["name"]}))
    return "\n".join(lines)


@click.command()
@click.argument("uri")
@output_option("text", "json")
@log_options
def lineage(uri: str, output: str, log_opts: LogOptions) -> None:
    """Show how the streams of the log derive from each other.

    Text is a tree: roots at the top, each branch under its parent ("@N": the fork offset),
    each merge under every parent it merges ("@N": that parent's pinned offset), with kind,
    next offset, actor, reason and labels. JSON is the lineage table, one object per stream.
    """
    with log_opts.open(uri) as log:
        table = log.lineage()
    if output == "json":
        echo_json(json_rows(table))
    elif not table.num_rows:
        click.echo(f"no streams in {uri}")
    else:
        click.echo(format_lineage(table))
