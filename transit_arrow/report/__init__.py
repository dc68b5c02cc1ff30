"""Provenance reports, lineage pictures and rich display (DESIGN §11).

- `build_report(log, ...)` returns a `Report`: shown in Jupyter, saved as one self-contained
  HTML file with `report.save("report.html")`, its data readable as Arrow tables.
- `lineage_graph(log, stream=..., prefix=...)` returns a `LineageGraph`: SVG in Jupyter, and
  `to_mermaid()`, `to_dot()`, `to_svg()`, `to_text()`, `to_json()`.
- `display` holds the small HTML pieces the library's objects use in Jupyter.

This package only uses the public methods of the log it is given (see `ReportSource`).
"""

from __future__ import annotations

from .build import Report, build_report
from .dag import Edge, Node, Pin
from .display import (
    LINEAGE_METADATA,
    html_table,
    lineage_html,
    register_ipython_formatters,
    summary_card,
    summary_repr,
)
from .graph import LineageGraph, lineage_graph
from .model import (
    METRIC_SCOPES,
    CheckpointSummary,
    MergeSummary,
    MetricValue,
    StreamSummary,
    Verification,
    metric_sql,
)
from .source import ReportSource

__all__ = [
    "LINEAGE_METADATA",
    "METRIC_SCOPES",
    "CheckpointSummary",
    "Edge",
    "LineageGraph",
    "MergeSummary",
    "MetricValue",
    "Node",
    "Pin",
    "Report",
    "ReportSource",
    "StreamSummary",
    "Verification",
    "build_report",
    "html_table",
    "lineage_graph",
    "lineage_html",
    "metric_sql",
    "register_ipython_formatters",
    "summary_card",
    "summary_repr",
]
