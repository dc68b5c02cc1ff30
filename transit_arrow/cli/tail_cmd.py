"""`transit tail`: a stream's last records, and with `-f` every new one as it is appended."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Protocol

import click
import pyarrow as pa

from .common import LogOptions, log_options, output_option
from .render import ndjson_lines, plural, text_table

__all__ = ["tail"]

_DEFAULT_LINES = 10


class _Closable(Protocol):
    def close(self) -> None: ...


@contextlib.contextmanager
def _closed_on_signal(source: _Closable) -> Iterator[None]:
    """Close `source` on SIGINT/SIGTERM (the tail then ends after the batch being printed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        source.close()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_text(batches: Iterator[pa.RecordBatch], follow: bool) -> int:
    """Print batches as an aligned table; return how many records were printed.

    Following, each batch is printed when it arrives (header again only when the columns
    change); otherwise all of them at once, as one table.
    """
    if not follow:
        collected = list(batches)
        if not collected:
            click.echo("(0 records)")
            return 0
        table = pa.Table.from_batches(collected)
        click.echo(text_table(table))
        click.echo(f"({plural(table.num_rows, 'record')})")
        return table.num_rows
    shown = 0
    header: list[str] | None = None
    for batch in batches:
        lines = text_table(pa.Table.from_batches([batch])).split("\n")
        if batch.schema.names != header:
            header = batch.schema.names
            click.echo("\n".join(lines))
        else:
            click.echo("\n".join(lines[2:]))
        shown += batch.num_rows
    return shown


@click.command()
@click.argument("uri")
@click.argument("stream")
@click.option(
    "--start",
    type=click.IntRange(min=0),
    default=None,
    help="First offset to print [default: the last --lines records].",
)
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=_DEFAULT_LINES,
    show_default=True,
    help="Without --start: begin this many records before the end.",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing records as they are appended (Ctrl-C or SIGTERM stops).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="With --follow: stop after this many seconds without a new record [default: never].",
)
@output_option("text", "json")
@log_options
def tail(
    uri: str,
    stream: str,
    start: int | None,
    lines: int,
    follow: bool,
    timeout: float | None,
    output: str,
    log_opts: LogOptions,
) -> None:
    """Print the last records of STREAM; with -f, then every new record as it is appended.

    json prints NDJSON, one record per line, with the conventions of `transit read` (flushed
    after each batch, so it can be piped); text prints an aligned table. Records another
    process on this machine appends appear once they are durable (`local`); records committed
    from other machines appear within about 0.1 s on a remote store (S3).
    """
    if timeout is not None and not follow:
        raise click.UsageError("--timeout needs --follow")
    with log_opts.open(uri) as log:
        handle = log.stream(stream)
        first = start if start is not None else max(0, handle.next_offset - lines)
        source = handle.tail(first, timeout=timeout if follow else 0)
        with _closed_on_signal(source), source:
            if output == "json":
                for batch in source:
                    if batch.num_rows:
                        click.echo("\n".join(ndjson_lines(batch)))
            else:
                _print_text(source, follow)
