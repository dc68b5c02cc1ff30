"""The `transit` click group: each command is a few calls into the library (DESIGN §11)."""

from __future__ import annotations

import gc as garbage_collector
import sys
from collections.abc import Iterator
from typing import IO, Any

import click
import pyarrow as pa
from tqdm import tqdm

from ..errors import AlreadyExistsError, NotALogError, StreamNotFoundError, TransitError
from ..log import Log
from ..stream import Ack, Stream
from ..typing import DURABILITY_LEVELS, Durability
from .common import (
    TEXT_LIMIT,
    LogOptions,
    echo_json,
    log_options,
    one_line,
    open_output,
    output_option,
    refuse_binary_on_terminal,
    write_text,
)
from .compact_cmd import compact, retain
from .demo import DEFAULT_RECORDS, format_report, run_demo
from .inputs import FORMATS, InputFormat, detect_format, read_input, user_columns
from .integrity_cmd import checkpoint, gc, restore, verify
from .lineage_cmd import branch, lineage, merge
from .plan_cmd import plan
from .query_cmd import materialize, sql
from .render import json_rows, ndjson_lines, plural, text_table
from .report_cmd import report
from .serve_cmd import serve
from .tail_cmd import tail

__all__ = ["main"]

_STREAM_COLUMNS = [
    "name",
    "kind",
    "next_offset",
    "generation",
    "segments",
    "root",
    "created_at",
    "error",
]


class _Group(click.Group):
    """The `transit` group; it turns a `TransitError` from any command into a clean exit.

    Catching here rather than decorating each command means no command can forget it.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TransitError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            ctx.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as e:  # a local file the command was given or writes
            click.echo(f"error: {one_line(e)}", err=True)
            ctx.exit(1)
        except Exception as e:  # never a traceback: say what failed, in one line
            click.echo(f"error: unexpected {type(e).__name__}: {one_line(e)}", err=True)
            ctx.exit(1)
        finally:
            # Free Arrow readers caught in reference cycles (e.g. through a traceback) now,
            # while Arrow is alive: freed during interpreter teardown, a reader's native
            # threads can abort the process ("terminate called without an active exception",
            # apache/arrow#34314) after the command has done its work.
            garbage_collector.collect()


def _progress(total: int, desc: str) -> tqdm:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="rec",
        unit_scale=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="transit-arrow", prog_name="transit")
def main() -> None:
    """transit: a branchable, append-only, columnar log.

    Every command takes the log's URI first: a folder path, a file:// URI or s3://bucket/prefix
    (with --storage-option KEY=VALUE for the endpoint and credentials). Start with
    `transit demo ./demo`.
    """


@main.command()
@click.argument("uri")
@output_option("text", "json")
@log_options
def init(uri: str, output: str, log_opts: LogOptions) -> None:
    """Create an empty log at URI (a missing or empty folder).

    An existing log is left as it is; a non-empty folder that is not a log is an error.
    """
    try:
        log = log_opts.open(uri)
        created = False
    except NotALogError:
        log = log_opts.open(uri, create=True)
        created = True
    with log:
        count = log.streams().num_rows
        if output == "json":
            echo_json({"uri": log.uri, "created": created, "streams": count})
        elif created:
            click.echo(f"created an empty log at {log.uri}")
        else:
            click.echo(f"{log.uri} is already a log ({plural(count, 'stream')}); left unchanged")


@main.command()
@click.argument("uri")
@output_option("text", "json")
@log_options
def streams(uri: str, output: str, log_opts: LogOptions) -> None:
    """List the streams of the log at URI."""
    with log_opts.open(uri) as log:
        table = log.streams()
    if output == "json":
        echo_json(json_rows(table))
        return
    if not table.num_rows:
        click.echo(f"no streams in {uri}; add one with: transit append {uri} NAME FILE")
        return
    click.echo(text_table(table, columns=_STREAM_COLUMNS))


def _target_stream(log: Log, name: str, create: bool) -> Stream | None:
    """The stream to append to, or None when it is missing and may be created."""
    try:
        return log.stream(name)
    except StreamNotFoundError as e:
        if not create:
            raise StreamNotFoundError(f"{e}; without --no-create, append creates it") from None
        return None


def _create_stream(log: Log, name: str) -> Stream:
    try:
        return log.create_stream(name)
    except AlreadyExistsError:  # created concurrently since we looked: append to it
        return log.stream(name)


def _append_table(
    stream: Stream, table: pa.Table, batch_size: int, durability: Durability | None
) -> list[Ack]:
    acks: list[Ack] = []
    with _progress(table.num_rows, f"append {stream.name}") as bar:
        for start in range(0, table.num_rows, batch_size):
            part = table.slice(start, batch_size)
            try:
                acks.append(stream.append(part, durability=durability))
            except TransitError:
                if acks:  # earlier calls stay appended: say how far the command got
                    done = plural(acks[-1].last_offset - acks[0].first_offset + 1, "record")
                    click.echo(
                        f"note: appended {done} (offsets {acks[0].first_offset}.."
                        f"{acks[-1].last_offset}) before the error",
                        err=True,
                    )
                raise
            bar.update(part.num_rows)
    return acks


@main.command()
@click.argument("uri")
@click.argument("stream")
@click.argument("file", type=click.File("rb"), default="-")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Input format [default: by FILE's extension (.csv, .parquet), else ndjson].",
)
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create STREAM if it does not exist.",
)
@click.option(
    "--durability",
    type=click.Choice(DURABILITY_LEVELS),
    default=None,
    help="Wait for this level before acknowledging [default: local].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    help="Records per append call.",
)
@output_option("text", "json")
@log_options
def append(
    uri: str,
    stream: str,
    file: IO[bytes],
    fmt: InputFormat | None,
    create: bool,
    durability: Durability | None,
    batch_size: int,
    output: str,
    log_opts: LogOptions,
) -> None:
    """Append the records of FILE (default: stdin) to STREAM.

    NDJSON holds one JSON object per line (blank lines are skipped). The whole input is parsed
    before anything is appended, so a bad line appends nothing.
    """
    name = getattr(file, "name", "<stdin>")
    name = "<stdin>" if name == "-" else str(name)
    with log_opts.open(uri) as log:
        target = _target_stream(log, stream, create)
        hints = user_columns(target.schema) if target is not None else None
        table = read_input(file, detect_format(name, fmt), name=name, user_schema=hints)
        created = target is None
        if target is None:
            target = _create_stream(log, stream)
        acks = _append_table(target, table, batch_size, durability) if table.num_rows else []
    first = acks[0].first_offset if acks else None
    last = acks[-1].last_offset if acks else None
    reached = acks[-1].durability if acks else None
    if output == "json":
        echo_json(
            {
                "stream": stream,
                "records": table.num_rows,
                "first_offset": first,
                "last_offset": last,
                "durability": reached,
                "created": created,
            }
        )
        return
    made = " (created the stream)" if created else ""
    if not acks:
        click.echo(f"appended 0 records to {stream!r}{made}: {name} holds no records")
        return
    click.echo(
        f"appended {plural(table.num_rows, 'record')} to {stream!r}{made}: "
        f"offsets {first}..{last}, durability {reached}"
    )


def _limited(batches: Iterator[pa.RecordBatch], limit: int | None) -> Iterator[pa.RecordBatch]:
    """The first `limit` rows of `batches` (all when `limit` is None)."""
    remaining = limit
    for batch in batches:
        if remaining is None:
            yield batch
            continue
        if remaining <= 0:
            return
        part = batch.slice(0, remaining)
        remaining -= part.num_rows
        yield part


@main.command()
@click.argument("uri")
@click.argument("stream")
@click.option("--start", type=click.IntRange(min=0), default=None, help="First offset to read.")
@click.option("--end", type=click.IntRange(min=0), default=None, help="Stop before this offset.")
@click.option("--columns", default=None, help="Comma-separated columns [default: all].")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help=f"At most this many records [default: {TEXT_LIMIT} for text, all otherwise].",
)
@output_option("text", "json", "parquet")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write to this file instead of stdout (needed for parquet on a terminal).",
)
@log_options
def read(
    uri: str,
    stream: str,
    start: int | None,
    end: int | None,
    columns: str | None,
    limit: int | None,
    output: str,
    out: str,
    log_opts: LogOptions,
) -> None:
    """Read records of STREAM with START <= offset < END.

    json writes one JSON object per line (NDJSON); timestamps are ISO 8601 strings and binary
    values are base64 strings. parquet writes one Parquet file.
    """
    refuse_binary_on_terminal(output, out)
    names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if output == "text" and limit is None:
        limit = TEXT_LIMIT
    with log_opts.open(uri) as log:
        reader = log.stream(stream).reader(start, end, names)
        # One row past the limit tells text output whether records were left out.
        extra = 1 if output == "text" and limit is not None else 0
        batches = _limited(iter(reader), None if limit is None else limit + extra)
        with open_output(out, binary=output == "parquet") as sink:
            if output == "parquet":
                _write_parquet(sink, reader.schema, batches)
            elif output == "json":
                for batch in batches:
                    if batch.num_rows:
                        sink.write("\n".join(ndjson_lines(batch)) + "\n")
            else:
                table = pa.Table.from_batches(list(batches), schema=reader.schema)
                write_text(sink, table, limit)


def _write_parquet(sink: IO[bytes], schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)


@main.command()
@click.argument("uri")
@click.option(
    "--records",
    type=click.IntRange(min=1),
    default=DEFAULT_RECORDS,
    show_default=True,
    help="How many trace events to append.",
)
@output_option("text", "json")
@log_options
def demo(uri: str, records: int, output: str, log_opts: LogOptions) -> None:
    """The tour: append trace events to a log, seal, read back, verify.

    Appends synthetic AI-agent trace events to the stream 'agent-traces' of the log at URI
    (usually a folder), in batches and one by one, with small segments so that several are
    sealed; then reopens the log, reads the records back, checks them and prints a summary. URI
    must be missing, empty, or a log (running again appends to the same stream).
    """
    with _progress(records, "demo") as bar:
        report = run_demo(
            uri,
            records,
            progress=bar.update,
            storage_options=log_opts.storage_options or None,
            local_dir=log_opts.local_dir,
        )
    if output == "json":
        echo_json(report.to_json())
    else:
        click.echo(format_report(report))


for _command in (
    branch,
    merge,
    lineage,
    checkpoint,
    verify,
    restore,
    gc,
    sql,
    materialize,
    report,
):
    main.add_command(_command)
main.add_command(serve)
main.add_command(report)
main.add_command(compact)
main.add_command(retain)
main.add_command(tail)
main.add_command(plan)
