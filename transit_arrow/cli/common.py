"""Pieces every `transit` command shares: opening the log, option types, writing results.

Every command takes `--storage-option KEY=VALUE` (repeatable) and `--local-dir DIR`, passed to
`transit_arrow.open`; `log_options` adds both and hands the command one `LogOptions`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import click
import pyarrow as pa

from ..errors import NotALogError
from ..log import Log
from ..log import open as open_log
from .render import csv_ready, ndjson_lines, plural, text_table

__all__ = [
    "TEXT_LIMIT",
    "LogOptions",
    "echo_json",
    "key_values",
    "log_options",
    "one_line",
    "open_output",
    "output_option",
    "refuse_binary_on_terminal",
    "table_output_options",
    "write_table",
    "write_text",
]

F = TypeVar("F", bound=Callable[..., Any])

TEXT_LIMIT = 20


@dataclass(frozen=True)
class LogOptions:
    """How to open a log: the `--storage-option` and `--local-dir` values of a command."""

    storage_options: dict[str, str]
    local_dir: Path | None = None

    def open(self, uri: str, *, create: bool = False, local_dir: Path | None = None) -> Log:
        """Open the log at `uri` (`local_dir` overrides `--local-dir`).

        Without `create`, a missing log is an error that suggests `transit init` for a local
        folder.
        """
        where = local_dir if local_dir is not None else self.local_dir
        options = self.storage_options or None
        if create:
            return open_log(uri, create=True, storage_options=options, local_dir=where)
        try:
            return open_log(uri, create=False, storage_options=options, local_dir=where)
        except NotALogError as e:
            path = Path(uri)
            empty = not path.exists() or (path.is_dir() and not any(path.iterdir()))
            if "://" in uri or not empty:
                raise
            raise NotALogError(f"{e}; create one with: transit init {uri}") from None


def one_line(error: BaseException) -> str:
    """An error's message on one line (DuckDB's span several: `LINE 1: ...` and a caret), so
    that a refused command prints exactly one `error:` line."""
    return " ".join(str(error).split()) or type(error).__name__


def key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback: repeated `KEY=VALUE` strings as a dict (a later KEY wins)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        out[key.strip()] = value
    return out


def log_options(f: F) -> F:
    """Add `--storage-option KEY=VALUE` and `--local-dir DIR`; the command gets `log_opts`."""

    @functools.wraps(f)
    def wrapper(
        *args: Any, storage_option: dict[str, str], local_dir: Path | None, **kw: Any
    ) -> Any:
        return f(*args, log_opts=LogOptions(storage_option, local_dir), **kw)

    wrapper = click.option(
        "--local-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where heads and fetched segments live [default: <root>/_local for a folder, a "
        "per-URI folder in the user cache otherwise].",
    )(wrapper)
    wrapper = click.option(
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        callback=key_values,
        help="A setting of a remote store, e.g. endpoint_url=http://localhost:9000, key=..., "
        "secret=..., region=... for s3:// (repeatable).",
    )(wrapper)
    return cast(F, wrapper)


def output_option(*formats: str) -> Callable[[F], F]:
    """`--output/-o` with the given formats (the first is the default)."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(formats),
        default=formats[0],
        show_default=True,
        help="Output format.",
    )


def table_output_options(f: F) -> F:
    """`--output text|json|csv|parquet`, `--out FILE` and `--limit N` for a result table."""
    f = click.option(
        "--out",
        type=click.Path(dir_okay=False, allow_dash=True),
        default="-",
        help="Write to this file instead of stdout (needed for parquet on a terminal).",
    )(f)
    f = click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=None,
        help=f"At most this many rows [default: {TEXT_LIMIT} for text, all otherwise].",
    )(f)
    return output_option("text", "json", "csv", "parquet")(f)


def echo_json(value: Any) -> None:
    """Print `value` as indented JSON."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def open_output(path: str, binary: bool) -> IO[Any]:
    """`path` (or stdout for "-") opened for writing."""
    try:
        if binary:
            return click.open_file(path, "wb")
        return click.open_file(path, "w", encoding=None if path == "-" else "utf-8")
    except OSError as e:
        raise click.FileError(path, e.strerror) from e


def refuse_binary_on_terminal(output: str, out: str) -> None:
    """Raise a usage error when Parquet would go to a terminal."""
    if output == "parquet" and out == "-" and sys.stdout.isatty():
        raise click.UsageError("refusing to write Parquet to a terminal; pass --out FILE or pipe")


def write_text(sink: IO[str], table: pa.Table, limit: int | None, noun: str = "record") -> None:
    """An aligned table of the first `limit` rows, and a line saying how many there are."""
    cut = limit is not None and table.num_rows > limit
    shown = table.slice(0, limit) if cut else table
    sink.write(text_table(shown) + "\n")
    if cut:
        sink.write(f"(first {limit} {noun}s; pass --limit N for more, or --output json)\n")
    else:
        sink.write(f"({plural(shown.num_rows, noun)})\n")


def write_table(
    table: pa.Table, output: str, out: str, limit: int | None, *, noun: str = "row"
) -> None:
    """Write a result table as text, NDJSON, CSV or Parquet to `out` ("-": stdout).

    Text shows the first `limit` rows (default `TEXT_LIMIT`); the other formats write the first
    `limit` rows, or all of them. CSV writes nested and binary values as JSON text.
    """
    refuse_binary_on_terminal(output, out)
    if output == "text":
        limit = TEXT_LIMIT if limit is None else limit
    elif limit is not None:
        table = table.slice(0, limit)
    with open_output(out, binary=output in ("parquet", "csv")) as sink:
        if output == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, sink, compression="zstd")
        elif output == "csv":
            import pyarrow.csv as pv

            pv.write_csv(csv_ready(table), sink)
        elif output == "json":
            for line in ndjson_lines(table):
                sink.write(line + "\n")
        else:
            write_text(sink, table, limit, noun)
