"""`transit sql` and `transit materialize ...` (DESIGN §8, §9)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING, TypeAlias

import click
import duckdb
import pyarrow as pa

from ..materialize import RefreshReport
from ..names import validate_stream_name
from .common import (
    LogOptions,
    echo_json,
    log_options,
    output_option,
    table_output_options,
    write_table,
)
from .render import json_rows, plural, text_table

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["materialize", "sql"]

Point: TypeAlias = tuple[str, int | dt.datetime]
_GENERATION = re.compile(r"g(\d+)")


def _points(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Point]:
    """Click callback: `STREAM@gN` (a generation) or `STREAM@TIME` (ISO 8601) values."""
    out: list[Point] = []
    for value in values:
        stream, at, point = value.rpartition("@")
        if not at or not stream or not point:
            raise click.BadParameter(f"expected STREAM@gN, got {value!r}", ctx=ctx, param=param)
        generation = _GENERATION.fullmatch(point)
        if generation is not None:
            out.append((stream, int(generation.group(1))))
            continue
        try:
            when = dt.datetime.fromisoformat(point.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"{point!r} in {value!r} is neither gN (a generation) nor an ISO 8601 time",
                ctx=ctx,
                param=param,
            ) from None
        out.append((stream, when))
    return out


def _run_sql(log: Log, query: str, points: list[Point]) -> pa.Table | None:
    """The result of `query` as an Arrow table (None for a statement without a result)."""
    if not points:
        return _table(log.sql(query))
    # A connection of our own, where each named stream's view shows its past.
    con = log.duckdb()
    try:
        for stream, point in points:
            if isinstance(point, int):
                log.create_view(con, stream, generation=point, name=stream)
            else:
                log.create_view(con, stream, as_of=point, name=stream)
        return _table(log.sql_on(con, query))
    finally:
        con.close()


def _table(relation: duckdb.DuckDBPyRelation | None) -> pa.Table | None:
    if relation is None:
        return None
    table: pa.Table = relation.to_arrow_table()
    return table


@click.command()
@click.argument("uri")
@click.argument("query")
@click.option(
    "--at",
    "points",
    multiple=True,
    metavar="STREAM@gN",
    callback=_points,
    help="Read STREAM as of generation N (or STREAM@TIME: as of an ISO 8601 time) wherever "
    "the query names it (repeatable).",
)
@table_output_options
@log_options
def sql(
    uri: str,
    query: str,
    points: list[Point],
    output: str,
    out: str,
    limit: int | None,
    log_opts: LogOptions,
) -> None:
    """Run a DuckDB SQL QUERY over the log.

    Every stream is a view under its own name (quote names with '/' or '-': "retry/2");
    `transit_records` holds every stream's records with a `_branch` column, and
    `transit_streams`, `transit_lineage`, `transit_commits`, `transit_segments`,
    `transit_checkpoints` are tables. A quoted name "STREAM@gN" reads a stream as of a
    generation. json writes NDJSON, one object per row.
    """
    for stream, _ in points:
        validate_stream_name(stream)
    with log_opts.open(uri) as log:
        table = _run_sql(log, query, points)
    if table is None:
        click.echo("(the statement returned no rows)", err=True)
        return
    write_table(table, output, out, limit)


# --- materialize ------------------------------------------------------------------------------


@click.group()
def materialize() -> None:
    """Define, refresh and read materialized views.

    A materialization is SQL over a relation named `records` (a stream's records), stored in
    the log and refreshed incrementally on any branch of its source (DESIGN §9).
    """


@materialize.command("create")
@click.argument("uri")
@click.argument("name")
@click.argument("source")
@click.option(
    "--query",
    required=True,
    metavar="SQL",
    help="SQL over a relation named `records` (SOURCE's records, system columns included).",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="COLUMN",
    help="For a filter query, keep only the last row per key (repeatable, or a,b).",
)
@output_option("text", "json")
@log_options
def create(
    uri: str,
    name: str,
    source: str,
    query: str,
    keys: tuple[str, ...],
    output: str,
    log_opts: LogOptions,
) -> None:
    """Define (or redefine) materialization NAME over SOURCE.

    Filters/projections and GROUP BY with count, sum, min, max, avg, bool_and, bool_or and
    arg_max(x, _offset) are maintained incrementally; other SQL is recomputed in full. A
    changed definition makes the next refresh rebuild.
    """
    key = [k.strip() for item in keys for k in item.split(",") if k.strip()] or None
    with log_opts.open(uri) as log:
        view = log.materialize(name, source, query=query, key=key)
        info = {
            "name": view.name,
            "source": view.source,
            "mode": view.mode,
            "query": query,
            "key": key,
            "definition_hash": view.definition_hash,
        }
    if output == "json":
        echo_json(info)
        return
    click.echo(
        f"defined materialization {name!r} over {source!r} (mode {view.mode}); "
        f"fill it with: transit materialize refresh {uri} {name}"
    )


def _refresh_text(report: RefreshReport) -> str:
    done = (
        f"processed {plural(report.records_processed, 'record')} (offsets "
        f"{report.from_offset}..{report.to_offset})"
        if report.from_offset is not None
        else f"already up to date through offset {report.to_offset}"
    )
    start = (
        f"resumed from {report.reused_checkpoint}"
        if report.reused_checkpoint
        else "built from scratch"
    )
    how = "incremental" if report.incremental else "recomputed in full"
    return "\n".join(
        [
            f"refreshed on {report.branch!r}: {done}",
            f"  {start}; {how} (mode {report.mode}), {report.seconds:.2f} s",
            f"  {report.reason}",
        ]
    )


@materialize.command()
@click.argument("uri")
@click.argument("name")
@click.option("--branch", default=None, help="The stream to refresh on [default: the source].")
@output_option("text", "json")
@log_options
def refresh(uri: str, name: str, branch: str | None, output: str, log_opts: LogOptions) -> None:
    """Bring materialization NAME up to date on a branch.

    Only records after the last usable checkpoint are processed. A branch without a checkpoint
    of its own resumes from its parent's (at or before the fork).
    """
    with log_opts.open(uri) as log:
        report = log.materialization(name).refresh(branch)
    if output == "json":
        echo_json({**dataclasses.asdict(report), "seconds": round(report.seconds, 3)})
    else:
        click.echo(_refresh_text(report))


@materialize.command("read")
@click.argument("uri")
@click.argument("name")
@click.option("--branch", default=None, help="Which branch's view [default: the source].")
@table_output_options
@log_options
def read_view(
    uri: str,
    name: str,
    branch: str | None,
    output: str,
    out: str,
    limit: int | None,
    log_opts: LogOptions,
) -> None:
    """Print materialization NAME as of its last refresh on a branch."""
    with log_opts.open(uri) as log:
        table = log.materialization(name).read(branch)
    write_table(table, output, out, limit)


@materialize.command("list")
@click.argument("uri")
@output_option("text", "json")
@log_options
def list_views(uri: str, output: str, log_opts: LogOptions) -> None:
    """List the materializations of the log."""
    with log_opts.open(uri) as log:
        table = log.materializations()
    if output == "json":
        echo_json(json_rows(table))
    elif not table.num_rows:
        click.echo(f"no materializations in {uri}")
    else:
        columns = ["name", "source", "mode", "version", "branches", "query"]
        click.echo(text_table(table, columns=columns))
