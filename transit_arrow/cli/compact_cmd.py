"""`transit compact` and `transit retain` (DESIGN §10)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from .common import LogOptions, echo_json, log_options, output_option
from .render import human_bytes, plural

__all__ = ["compact", "retain"]


def _run(
    log_opts: LogOptions, uri: str, stream: str, what: str, output: str, **options: Any
) -> Any:
    """Call `Stream.<what>(**options)`; print the report as JSON (and return None) when asked."""
    with log_opts.open(uri) as log:
        report = getattr(log.stream(stream), what)(**options)
    if output == "json":
        echo_json({**dataclasses.asdict(report), "dry_run": options["dry_run"]})
        return None
    return report


@click.command()
@click.argument("uri")
@click.argument("stream")
@click.option(
    "--small-bytes",
    type=click.IntRange(min=1),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Segments smaller than this are compacted.",
)
@click.option(
    "--target-bytes",
    type=click.IntRange(min=1),
    default=128 * 1024 * 1024,
    show_default=True,
    help="A compacted segment grows up to about this size.",
)
@click.option(
    "--min-segments",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Only runs of at least this many adjacent small segments are rewritten.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be compacted.")
@output_option("text", "json")
@log_options
def compact(
    uri: str,
    stream: str,
    small_bytes: int,
    target_bytes: int,
    min_segments: int,
    dry_run: bool,
    output: str,
    log_opts: LogOptions,
) -> None:
    """Rewrite runs of adjacent small segments of STREAM into one segment each.

    One commit lists, per new segment, exactly the segments it replaces; each new file is
    compared record by record (offsets and values) with the files it replaces before that
    commit. Earlier generations, branches and checkpoints keep reading the replaced files
    until `transit gc` frees what nothing reachable needs.
    """
    report = _run(
        log_opts,
        uri,
        stream,
        "compact",
        output,
        small_bytes=small_bytes,
        target_bytes=target_bytes,
        min_segments=min_segments,
        dry_run=dry_run,
    )
    if report is None:
        return
    if not report.replaced:
        click.echo(
            f"nothing to compact in {stream!r}: no run of {min_segments} or more adjacent "
            f"segments smaller than {human_bytes(small_bytes)} "
            f"({plural(report.segments_before, 'segment')})"
        )
        return
    verb = "would compact" if dry_run else "compacted"
    after = "" if dry_run else f" into {human_bytes(report.bytes_after)}"
    where = "" if report.generation is None else f" (generation {report.generation})"
    click.echo(
        f"{verb} {plural(len(report.replaced), 'segment')} of {stream!r} "
        f"({report.records:,} records, {human_bytes(report.bytes_before)}){after}{where}: "
        f"{report.segments_before:,} -> {report.segments_after:,} segments"
    )


@click.command()
@click.argument("uri")
@click.argument("stream")
@click.option(
    "--before-offset",
    type=click.IntRange(min=0),
    default=None,
    help="Drop whole segments whose records all have offsets below this.",
)
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=None,
    help="Drop whole segments whose records are all older than this many seconds.",
)
@click.option(
    "--keep-records",
    type=click.IntRange(min=0),
    default=None,
    help="Drop the oldest whole segments while at least this many records remain.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
@output_option("text", "json")
@log_options
def retain(
    uri: str,
    stream: str,
    before_offset: int | None,
    older_than: float | None,
    keep_records: int | None,
    dry_run: bool,
    output: str,
    log_opts: LogOptions,
) -> None:
    """Drop the oldest whole segments of STREAM from its replay, by a commit.

    Give exactly one of --before-offset, --older-than, --keep-records. Offsets never move:
    reads start at the first retained offset. Branches and checkpoints taken before keep
    reading the dropped records; `transit gc` frees the files once nothing reachable needs them.
    """
    report = _run(
        log_opts,
        uri,
        stream,
        "retain",
        output,
        before_offset=before_offset,
        older_than=older_than,
        keep_records=keep_records,
        dry_run=dry_run,
    )
    if report is None:
        return
    if not report.dropped:
        click.echo(f"nothing to drop in {stream!r}: it replays from offset {report.retained_from}")
        return
    verb = "would drop" if dry_run else "dropped"
    where = "" if report.generation is None else f" (generation {report.generation})"
    click.echo(
        f"{verb} {plural(len(report.dropped), 'segment')} ({report.records:,} records, "
        f"{human_bytes(report.bytes)}) of {stream!r}{where}; it replays from offset "
        f"{report.retained_from:,}"
    )
