"""`build_report(log, ...)`: the provenance report of a log, and the `Report` it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InvalidInputError
from .html import render_report
from .model import CheckpointFactory, MetricSpec, ReportData, collect
from .source import ReportSource

__all__ = ["Report", "build_report"]


class Report(ReportData):
    """A provenance report of a log, or of the part of it about some streams.

    Display it in Jupyter (it has `_repr_html_`), write it with `save("report.html")` (one
    self-contained HTML file: no script, font or image from elsewhere), or read its data:
    `streams_table()`, `metrics_table()`, `merges_table()`, `verification_table()` (Arrow
    tables), `commands()` (the `transit verify` commands that reproduce its checks),
    `to_dict()`.
    """

    def to_html(self, *, standalone: bool = True) -> str:
        """The report as HTML: a whole document when `standalone`, else a fragment for a
        notebook (its styles are scoped to the fragment)."""
        return render_report(self, standalone=standalone)

    def save(self, path: str | Path) -> Path:
        """Write the report to `path` as one self-contained HTML file and return the path.

        Raises:
            InvalidInputError: the file cannot be written (the message says why).
        """
        target = Path(path)
        try:
            target.write_text(self.to_html(), encoding="utf-8")
        except OSError as e:
            raise InvalidInputError(f"cannot write the report to {target}: {e}") from e
        return target

    def _repr_html_(self) -> str:
        return self.to_html(standalone=False)


def build_report(
    log: ReportSource,
    *,
    streams: Sequence[str] | str | None = None,
    prefix: str | None = None,
    metrics: Mapping[str, MetricSpec] | None = None,
    metrics_scope: str = "own",
    deep: bool = False,
    verify: bool = True,
    title: str | None = None,
    checkpoint_factory: CheckpointFactory | None = None,
) -> Report:
    """Build the provenance report of `log` (DESIGN §11).

    Args:
        log: the log (`transit_arrow.Log`, or anything with the methods of `ReportSource`).
        streams: report these streams and everything derived from them (default: all).
        prefix: or report the streams named `prefix` or `prefix/...` (a task).
        metrics: per-stream metrics, name -> SQL aggregate expression over the stream's
            records (e.g. `"avg(CASE WHEN passed THEN 1 ELSE 0 END)"`) or a column aggregate
            `(aggregate, column)` such as `("mean", "score")` (see `model.AGGREGATES`). A
            metric whose SQL fails on a stream shows the error in its cell.
        metrics_scope: compute metrics over each stream's own records ("own", the default:
            what the branch added), its whole replay ("all"), or "both".
        deep: also re-hash every segment file when verifying.
        verify: verify streams and checkpoints (default True).
        title: the heading (default "Provenance report").
        checkpoint_factory: builds a checkpoint object that `log.verify` accepts from a dict
            (`transit_arrow.Checkpoint.from_dict`). With it each stream is verified exactly at
            the generation the report read, and recorded checkpoints are verified too;
            without it streams are verified at their latest generation and checkpoints are
            listed as not verified.

    Returns:
        The report: `save("report.html")`, display it, or read its tables.

    Raises:
        StreamNotFoundError: a stream of `streams` does not exist.
        InvalidInputError: bad options: both `streams` and `prefix`, no stream under
            `prefix`, a metric that is neither SQL text nor an (aggregate, column) pair, an
            unknown `metrics_scope`.
    """
    return collect(
        Report,
        log,
        streams=streams,
        prefix=prefix,
        metrics=metrics,
        metrics_scope=metrics_scope,
        deep=deep,
        verify=verify,
        title=title,
        checkpoint_factory=checkpoint_factory,
    )
