"""`transit branch`, `transit merge` and `transit lineage` (DESIGN §6, §7, §11)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import click
import pyarrow as pa

from ..report import LineageGraph, lineage_graph
from ..stream import Stream
from .common import LogOptions, echo_json, key_values, log_options, output_option
from .render import json_rows

__all__ = ["LINEAGE_FORMATS", "branch", "format_lineage", "lineage", "merge"]

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

LINEAGE_FORMATS = ("text", "json", "mermaid", "dot", "svg")


def format_lineage(table: pa.Table, *, width: int = 100) -> str:
    """The lineage table as a narrow indented tree (see `report.text.render_tree`).

    Roots (and streams whose parents are not shown) are at the top, in name order. A branch is
    under its parent with "@N", its fork offset; a merge is listed once, in full, under its
    first parent ("@N": that parent's pinned offset) with its own branches, and under each
    other parent a one-line note says where. Children are in creation order; long entries
    continue on indented lines.
    """
    return LineageGraph.from_table(table).to_text(width=width)


@click.command()
@click.argument("uri")
@click.option(
    "--stream",
    "stream",
    default=None,
    metavar="S",
    help="Show only S and the streams derived from it.",
)
@click.option(
    "--prefix",
    default=None,
    metavar="P",
    help="Show only the streams named P or P/... (a task).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(LINEAGE_FORMATS),
    default=None,
    help="text (a tree), json (the lineage table), mermaid, dot (Graphviz) or svg [default: text].",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(("text", "json")),
    default=None,
    help="Same as --format text|json.",
)
@click.option(
    "--width",
    type=click.IntRange(min=40),
    default=100,
    show_default=True,
    help="Text: continue entries on a new line past this many columns.",
)
@log_options
def lineage(
    uri: str,
    stream: str | None,
    prefix: str | None,
    fmt: str | None,
    output: str | None,
    width: int,
    log_opts: LogOptions,
) -> None:
    """Show how the streams of the log derive from each other.

    Text is a tree: roots at the top, each branch under its parent ("@N": the fork offset),
    each merge once under its first parent ("@N": that parent's pinned offset) with a note under
    its other parents, with kind, next offset, actor, reason and labels. JSON is the lineage
    table, one object per stream; mermaid, dot and svg draw the graph. --stream S shows S's
    subtree, --prefix P the streams under P (pictures also show the parents they derive from,
    as context).
    """
    if fmt is not None and output is not None and fmt != output:
        raise click.UsageError(f"--format {fmt} and --output {output} disagree; pass one")
    chosen = fmt or output or "text"
    with log_opts.open(uri) as log:
        table = log.lineage()
        graph = lineage_graph(log, stream=stream, prefix=prefix)
    if chosen == "json":
        names = {n.name for n in graph.selected}
        rows = [row for row in json_rows(table) if row["name"] in names]
        echo_json(rows)
    elif chosen == "mermaid":
        click.echo(graph.to_mermaid(), nl=False)
    elif chosen == "dot":
        click.echo(graph.to_dot(), nl=False)
    elif chosen == "svg":
        click.echo(graph.to_svg(), nl=False)
    elif not graph.nodes:
        click.echo(f"no streams in {uri}")
    else:
        click.echo(graph.to_text(width=width))
