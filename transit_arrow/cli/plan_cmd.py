"""`transit plan`: the replay of a stream (or of every stream) as data (docs/scan_plan.md)."""

from __future__ import annotations

from typing import cast

import click

from ..scanplan import Heads, LogScanPlan, ScanPlan
from .common import LogOptions, log_options, output_option
from .render import human_bytes, plural, text_table

__all__ = ["plan"]

_COLUMNS = [
    "index",
    "kind",
    "origin",
    "path",
    "read_first",
    "read_last",
    "shift",
    "stream_label",
    "provenance",
    "bytes",
]


@click.command()
@click.argument("uri")
@click.argument("stream", required=False)
@click.option(
    "--heads",
    type=click.Choice(["inline", "exclude", "seal"]),
    default="inline",
    show_default=True,
    help="Unsealed records: carried in the plan as Arrow IPC (inline), left out (exclude), or "
    "sealed into a segment first (seal).",
)
@output_option("text", "json")
@log_options
def plan(uri: str, stream: str | None, heads: str, output: str, log_opts: LogOptions) -> None:
    """Print the scan plan of STREAM (of every stream without STREAM).

    The plan lists the files, stored offset ranges, offset shifts and schema that make up the
    replay, so that any engine (Spark, Daft, Dask, a program in another language) can read
    exactly what `transit read` prints. `--output json` is the versioned JSON form that
    `transit_arrow.scanplan.read_scan_plan` reads back.
    """
    with log_opts.open(uri) as log:
        if stream is None:
            whole: ScanPlan | LogScanPlan = log.scan_plan()
        else:
            whole = log.stream(stream).scan_plan(heads=cast(Heads, heads))
    if output == "json":
        click.echo(whole.to_json(indent=2))
        return
    plans = whole.streams if isinstance(whole, LogScanPlan) else (whole,)
    for i, p in enumerate(plans):
        if i:
            click.echo()
        size = human_bytes(sum(f.bytes for f in p.files))
        click.echo(
            f"scan plan of {p.stream!r} at generation {p.generation} (root {p.root[:16]}…): "
            f"{plural(p.records, 'record')} in {plural(len(p.files), 'file span')}, {size}"
        )
        if p.files:
            click.echo(text_table(p.to_arrow().select(_COLUMNS)))
        click.echo("schema: " + ", ".join(f"{f.name} {f.type}" for f in p.schema))
    if isinstance(whole, LogScanPlan) and whole.errors:
        for name, error in sorted(whole.errors.items()):
            click.echo(f"left out {name!r}: {error}")
