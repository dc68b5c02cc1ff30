"""Rich display in Jupyter: small HTML pieces for the library's objects.

`summary_card(title, fields)` is a compact card of facts (a `Log`, a `Stream`, a
`VerifyReport`...), `html_table(table)` the first rows of an Arrow table, `summary_repr(...)`
the matching one-line plain `repr`. `register_ipython_formatters()` makes IPython show a lineage
table (an Arrow table whose schema metadata has `transit.table = lineage`) as a picture and a
table. Everything here is plain HTML with scoped inline CSS: nothing is fetched.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from html import escape
from typing import Any

import pyarrow as pa

from .dag import Dag
from .svg import SVG_CSS, render_svg

__all__ = [
    "CSS",
    "LINEAGE_METADATA",
    "checkpoint_html",
    "format_value",
    "graph_html",
    "html_table",
    "is_lineage_table",
    "lineage_html",
    "log_html",
    "materialization_html",
    "refresh_html",
    "register_ipython_formatters",
    "status_badge",
    "stream_html",
    "summary_card",
    "summary_repr",
    "verify_html",
]

LINEAGE_METADATA = {b"transit.table": b"lineage"}
# Above this many streams a lineage picture is split into one collapsible picture per task.
GROUP_ABOVE = 40

CSS = """
.ta-view{font-family:ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
sans-serif;font-size:13px;color:#202124;line-height:1.4}
.ta-view table.ta-table{border-collapse:collapse;margin:4px 0}
.ta-view .ta-table th,.ta-view .ta-table td{padding:3px 10px 3px 0;border-bottom:1px solid #e8eaed;
text-align:left;vertical-align:top;white-space:nowrap}
.ta-view .ta-table th{font-weight:600;border-bottom:1px solid #bdc1c6}
.ta-view .ta-table th small{display:block;font-weight:400;color:#80868b}
.ta-view .ta-table td.num{text-align:right;font-variant-numeric:tabular-nums}
.ta-view .ta-null{color:#9aa0a6}
.ta-view .ta-more{color:#5f6368;font-size:12px}
.ta-view code,.ta-view .ta-mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,
"DejaVu Sans Mono",monospace;font-size:12px}
.ta-view .ta-card{display:inline-block;border:1px solid #dadce0;border-radius:8px;
padding:8px 14px;margin:2px 0;max-width:100%;box-sizing:border-box}
.ta-view .ta-card-title{font-weight:600;font-size:14px}
.ta-view .ta-card dl{display:grid;grid-template-columns:auto 1fr;gap:2px 14px;margin:6px 0 0}
.ta-view .ta-card dt{color:#5f6368}
.ta-view .ta-card dd{margin:0;overflow-wrap:anywhere}
.ta-view .ta-badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;
font-weight:600;margin-left:6px}
.ta-view .ta-ok{background:#e6f4ea;color:#137333}
.ta-view .ta-fail{background:#fce8e6;color:#a50e0e}
.ta-view .ta-unknown{background:#f1f3f4;color:#5f6368}
.ta-view .ta-scroll{overflow:auto;max-width:100%}
.ta-view details>summary{cursor:pointer;padding:2px 0}
"""

_CELL_CHARS = 80


def status_badge(ok: bool | None, *, yes: str = "OK", no: str = "FAILED") -> str:
    """A small coloured badge: green `yes`, red `no`, grey "not run" for None."""
    if ok is None:
        return '<span class="ta-badge ta-unknown">not run</span>'
    cls, text = ("ta-ok", yes) if ok else ("ta-fail", no)
    return f'<span class="ta-badge {cls}">{escape(text)}</span>'


def format_value(value: Any) -> str:
    """A value as short readable text: ISO 8601 times, JSON for nested values, base64 for
    bytes, `null` for None, thousands separators for integers, 6 significant digits for
    floats."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g} s"
    if isinstance(value, bytes):
        return "b64:" + base64.b64encode(value).decode()
    if isinstance(value, Decimal | str):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="ta-null">null</td>'
    text = format_value(value)
    numeric = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    cls = ' class="num"' if numeric else ""
    if len(text) > _CELL_CHARS:
        short = text[: _CELL_CHARS - 1] + "…"
        return f'<td{cls} title="{escape(text)}">{escape(short)}</td>'
    return f"<td{cls}>{escape(text)}</td>"


def html_table(
    table: pa.Table,
    limit: int = 20,
    *,
    columns: Iterable[str] | None = None,
    types: bool = True,
) -> str:
    """The first `limit` rows of an Arrow table as an HTML table, with its size.

    Args:
        table: the table.
        limit: at most this many rows (the rest are counted, not shown).
        columns: only these columns (default: all).
        types: show each column's Arrow type under its name.
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"html_table takes a pyarrow.Table, not {type(table).__name__}")
    if columns is not None:
        table = table.select(list(columns))
    shown = table.slice(0, max(0, limit))
    head = "".join(
        f"<th>{escape(f.name)}"
        + (f"<small>{escape(str(f.type))}</small>" if types else "")
        + "</th>"
        for f in table.schema
    )
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>" for row in shown.to_pylist()
    )
    rows = f"{table.num_rows:,} row{'s' if table.num_rows != 1 else ''}"
    size = f"{rows}, {table.num_columns} column{'s' if table.num_columns != 1 else ''}"
    if table.num_rows > shown.num_rows:
        size += f" (first {shown.num_rows:,} shown)"
    return (
        f'<div class="ta-scroll"><table class="ta-table"><thead><tr>{head}</tr></thead>'
        f'<tbody>{body}</tbody></table></div><div class="ta-more">{escape(size)}</div>'
    )


def _fields(fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return list(fields.items()) if isinstance(fields, Mapping) else list(fields)


def summary_card(
    title: str,
    fields: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    status: bool | None = None,
    table: pa.Table | None = None,
    limit: int = 10,
    style: bool = True,
) -> str:
    """A compact HTML card: a title (with an OK/FAILED badge when `status` is given), one
    line per field (name, value), and optionally the first rows of a table under it.

    Values are shown with `format_value`; a value that is already HTML can be passed as
    `Markup(...)`-like objects with `__html__` (it is inserted as is).
    """
    badge = status_badge(status) if status is not None else ""
    rows = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{_html_value(v)}</dd>" for k, v in _fields(fields)
    )
    extra = html_table(table, limit) if table is not None else ""
    css = f"<style>{CSS}</style>" if style else ""
    return (
        f'{css}<div class="ta-view"><div class="ta-card"><div class="ta-card-title">'
        f"{escape(title)}{badge}</div><dl>{rows}</dl>{extra}</div></div>"
    )


def _html_value(value: Any) -> str:
    html = getattr(value, "__html__", None)
    if callable(html):
        return str(html())
    text = format_value(value) if value is not None else "—"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f'<code class="ta-mono">{text}</code>'  # a BLAKE3 root: shown whole, to copy
    return escape(text)


def summary_repr(kind: str, fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A one-line plain `repr`: `<Kind key=value key=value>` (roots cut to 12 characters)."""
    parts = []
    for key, value in _fields(fields):
        text = format_value(value) if not isinstance(value, str) else value
        if isinstance(value, str) and len(value) == 64:
            text = value[:12] + "…"
        elif isinstance(value, str) and (not value or " " in value):
            text = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return f"<{kind} {' '.join(parts)}>" if parts else f"<{kind}>"


# --- lineage ----------------------------------------------------------------------------------


def graph_html(graph: Dag, *, style: bool = True) -> str:
    """A lineage graph as HTML: one SVG picture, or above `GROUP_ABOVE` streams one
    collapsible picture per group (task) under an overview line."""
    css = f"<style>{CSS}{SVG_CSS}</style>" if style else ""
    groups = graph.groups()
    if len(graph.selected) <= GROUP_ABOVE or len(groups) <= 1:
        body = f'<div class="ta-scroll">{render_svg(graph, standalone=False)}</div>'
    else:
        parts = [
            f"<p>{len(graph.selected):,} streams in {len(groups):,} groups; open a group to see "
            "its picture.</p>"
        ]
        for name, members in groups.items():
            merges = sum(1 for m in members if graph.nodes[m].kind == "merge")
            svg = render_svg(graph.group(name), standalone=False)
            parts.append(
                f"<details><summary><b>{escape(name)}</b> — {len(members)} streams, {merges} "
                f'merges</summary><div class="ta-scroll">{svg}</div></details>'
            )
        body = "".join(parts)
    return f'{css}<div class="ta-view">{body}</div>'


def is_lineage_table(table: object) -> bool:
    """Whether `table` is a lineage table (its schema metadata says `transit.table: lineage`)."""
    if not isinstance(table, pa.Table):
        return False
    metadata = table.schema.metadata or {}
    return metadata.get(b"transit.table") == b"lineage"


def lineage_html(table: pa.Table, limit: int = 20) -> str:
    """A lineage table as HTML: its picture, then its first `limit` rows."""
    graph = Dag.from_table(table)
    rows = html_table(
        table,
        limit,
        columns=[c for c in table.column_names if c not in ("parent_root", "policy_version")],
        types=False,
    )
    return graph_html(graph) + f'<div class="ta-view">{rows}</div>'


# --- the library's objects, duck-typed (report/ imports none of their modules) ---------------


def log_html(log: Any, limit: int = 10) -> str:
    """A `Log`: its URI and its streams (name, kind, next offset, generation)."""
    table = log.streams()
    columns = [c for c in ("name", "kind", "next_offset", "generation") if c in table.column_names]
    return summary_card(
        "Log",
        [("uri", log.uri), ("streams", table.num_rows)],
        table=table.select(columns),
        limit=limit,
    )


def stream_html(stream: Any) -> str:
    """A `Stream` or `StreamView`: name, next offset, generation, root and columns."""
    kind = type(stream).__name__
    names = [n for n in stream.schema.names if not n.startswith("_")]
    return summary_card(
        f"{kind} {stream.name}",
        [
            ("next_offset", stream.next_offset),
            ("generation", stream.generation),
            ("root", stream.root),
            ("columns", ", ".join(names) or "—"),
        ],
    )


def verify_html(report: Any, limit: int = 20) -> str:
    """A `VerifyReport`: OK/FAILED, what was checked, failed checks first."""
    table = report.to_arrow()
    failed = [e for e in report.entries if not e.ok]
    if failed:
        table = table.sort_by([("ok", "ascending")])
    return summary_card(
        f"VerifyReport {report.target}",
        [("checks", len(report.entries)), ("failed", len(failed)), ("deep", report.deep)],
        status=report.ok,
        table=table.select(["ok", "check", "stream", "detail", "object"]),
        limit=limit,
    )


def checkpoint_html(checkpoint: Any) -> str:
    """A `Checkpoint`: every field, and the command that verifies it."""
    command = f"transit verify URI --checkpoint '{checkpoint.to_json()}'"
    return summary_card(
        f"Checkpoint {checkpoint.stream}@g{checkpoint.generation}",
        [*checkpoint.to_dict().items(), ("verify with", command)],
    )


def materialization_html(materialization: Any) -> str:
    """A `Materialization`: name, source, mode, refreshed branches, definition hash."""
    return summary_card(
        f"Materialization {materialization.name}",
        [
            ("source", materialization.source),
            ("mode", materialization.mode),
            ("branches", ", ".join(materialization.branches()) or "none refreshed"),
            ("definition_hash", materialization.definition_hash),
        ],
    )


def refresh_html(refresh: Any) -> str:
    """A `RefreshReport`: what one refresh processed, from where, and why."""
    return summary_card(f"RefreshReport {refresh.branch}", list(vars(refresh).items()))


def register_ipython_formatters(
    shell: Any = None, *, renderers: Mapping[type, Callable[[Any], str]] | None = None
) -> bool:
    """Show lineage tables as a picture and a table in IPython/Jupyter.

    Registers an HTML formatter for `pyarrow.Table` that renders lineage tables (schema
    metadata `transit.table: lineage`) with `lineage_html`, and leaves every other table to
    the formatter registered before (or to the plain text display). Calling it again changes
    nothing.

    Args:
        shell: the IPython shell (default: the running one).
        renderers: more HTML formatters by type, e.g. `{VerifyReport: verify_html}` (for
            classes of lower layers, which cannot import this module themselves).

    Returns:
        True when registered (or already), False when not running under IPython.
    """
    if shell is None:
        if "IPython" not in sys.modules:
            return False  # not running under IPython (importing it would cost half a second)
        try:
            from IPython import get_ipython  # type: ignore[attr-defined]
        except ImportError:
            return False
        shell = get_ipython()  # type: ignore[no-untyped-call]
        if shell is None:
            return False
    formatter = shell.display_formatter.formatters["text/html"]
    for kind, render in (renderers or {}).items():
        formatter.for_type(kind, render)
    previous = formatter.for_type(pa.Table)
    if getattr(previous, "__qualname__", "") == _QUALNAME:
        return True  # already ours

    def table_html(table: pa.Table) -> str | None:
        if is_lineage_table(table):
            return lineage_html(table)
        return previous(table) if previous is not None else None

    formatter.for_type(pa.Table, table_html)
    return True


_QUALNAME = "register_ipython_formatters.<locals>.table_html"
