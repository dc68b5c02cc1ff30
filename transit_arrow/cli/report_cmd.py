"""`transit report`: the provenance report of a log as one self-contained HTML file (DESIGN §11)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..errors import IntegrityError, InvalidInputError
from ..integrity import Checkpoint
from ..report import METRIC_SCOPES, Report, build_report
from ..report.model import AGGREGATES, MetricSpec
from .common import LogOptions, echo_json, key_values, log_options
from .render import plural

__all__ = ["parse_metric", "report"]

_AGGREGATE_RE = re.compile(r"(?P<aggregate>[A-Za-z0-9]+):(?P<column>[^:()\s][^:()]*)")


def parse_metric(text: str) -> MetricSpec:
    """A `--metric` value: `AGGREGATE:COLUMN` (e.g. `mean:score`, `rate:passed`) when the
    aggregate is one of `AGGREGATES`, else a SQL aggregate expression."""
    match = _AGGREGATE_RE.fullmatch(text.strip())
    if match and match["aggregate"].lower() in AGGREGATES:
        return (match["aggregate"], match["column"])
    return text


def _summary(report: Report, out: str) -> str:
    kinds = [s.kind for s in report.streams]
    counts = ", ".join(
        plural(kinds.count(k), k) for k in ("root", "branch", "merge") if kinds.count(k)
    )
    checks = f"{plural(len(report.verifications), 'stream')} and " + plural(
        len(report.checkpoints), "checkpoint"
    )
    how = "commit chains, pins and segment files" if report.deep else "commit chains and pins"
    verdict = "ALL OK" if report.ok else f"{len(report.failures)} FAILED"
    where = "stdout" if out == "-" else out
    lines = [
        f"wrote {where}: {plural(len(report.streams), 'stream')} ({counts or 'none'}), "
        f"{plural(len(report.metric_names), 'metric')}",
        f"  verification  {verdict}: {checks} ({how})",
        "  open it in any browser: one file, nothing fetched from the network",
    ]
    return "\n".join(lines)


@click.command()
@click.argument("uri")
@click.argument("streams", nargs=-1, metavar="[STREAM]...")
@click.option(
    "--prefix",
    default=None,
    metavar="P",
    help="Report the streams named P or P/... (a task) instead of every stream.",
)
@click.option(
    "--out",
    "-o",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the HTML ('-': stdout).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=SQL",
    callback=key_values,
    help="A per-stream metric (repeatable): NAME=SQL aggregate over the stream's records, e.g. "
    "'pass_rate=avg(CASE WHEN passed THEN 1 ELSE 0 END)', or NAME=AGGREGATE:COLUMN, e.g. "
    "mean_score=mean:score (count, distinct, sum, mean, min, max, median, p90, p95, p99, rate, "
    "any, all).",
)
@click.option(
    "--metrics-scope",
    type=click.Choice(METRIC_SCOPES),
    default="own",
    show_default=True,
    help="Metrics over each stream's own records, its whole replay, or both.",
)
@click.option("--deep", is_flag=True, help="Also re-hash every segment file when verifying.")
@click.option("--title", default=None, help="The report's heading.")
@click.option(
    "--summary",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="What to print once the file is written (to stderr when the HTML goes to stdout).",
)
@log_options
def report(
    uri: str,
    streams: tuple[str, ...],
    prefix: str | None,
    out: str,
    metrics: dict[str, str],
    metrics_scope: str,
    deep: bool,
    title: str | None,
    summary: str,
    log_opts: LogOptions,
) -> None:
    """Write the provenance report of the log at URI as one HTML file.

    The report draws the lineage (grouped by task above 40 streams), lists each stream's
    records (own and inherited) and metrics, what each merge did and why, and verifies every
    stream and checkpoint, with the `transit verify` commands that reproduce each check. With
    STREAMs, it covers them and everything derived from them; with --prefix, the streams under
    P. It exits with 1 after writing the report when a verification failed.
    """
    if streams and prefix is not None:
        raise click.UsageError("pass STREAMs or --prefix, not both")
    specs = {name: parse_metric(sql) for name, sql in metrics.items()}
    with log_opts.open(uri) as log:
        result = build_report(
            log,
            streams=list(streams) or None,
            prefix=prefix,
            metrics=specs,
            metrics_scope=metrics_scope,
            deep=deep,
            title=title,
            checkpoint_factory=Checkpoint.from_dict,
        )
    if out == "-":
        click.echo(result.to_html(), nl=False)
    else:
        try:
            result.save(Path(out))
        except InvalidInputError as e:
            raise InvalidInputError(f"{e}; pick another file with -o") from None
    to_stderr = out == "-"
    if summary == "json":
        info = {
            "out": out,
            "streams": len(result.streams),
            "merges": len(result.merges),
            "checkpoints": len(result.checkpoints),
            "metrics": result.metric_names,
            "deep": deep,
            "ok": result.ok,
            "failed": [v.target for v in result.failures],
        }
        if to_stderr:
            click.echo(json.dumps(info, indent=2), err=True)
        else:
            echo_json(info)
    else:
        click.echo(_summary(result, out), err=to_stderr)
    if not result.ok:
        targets = ", ".join(v.target for v in result.failures[:5])
        more = "" if len(result.failures) <= 5 else ", …"
        raise IntegrityError(
            f"verification FAILED: {plural(len(result.failures), 'check')} failed "
            f"({targets}{more}); the report says which files and hashes"
        )
