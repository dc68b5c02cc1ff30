"""Rich display pieces: HTML tables and cards, plain reprs, the IPython lineage formatter."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from IPython.core.formatters import DisplayFormatter

import transit_arrow as ta
from transit_arrow.report import (
    LINEAGE_METADATA,
    html_table,
    lineage_html,
    register_ipython_formatters,
    summary_card,
    summary_repr,
)
from transit_arrow.report.display import (
    checkpoint_html,
    format_value,
    is_lineage_table,
    log_html,
    materialization_html,
    refresh_html,
    stream_html,
    verify_html,
)

ROOT = "0123456789abcdef" * 4


def test_html_table_shows_the_first_rows_escaped_with_types_and_size() -> None:
    table = pa.table(
        {
            "name": ["<b>x</b>", None, "y" * 200],
            "n": pa.array([1, 2_000, None], pa.int64()),
            "tags": [["a"], [], None],
            "raw": [b"\x00\xff", None, b""],
        }
    )
    html = html_table(table, limit=2)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert '<td class="num">2,000</td>' in html and '<td class="ta-null">null</td>' in html
    assert (
        "<small>int64</small>" in html and "<th>tags<small>list&lt;item: string&gt;</small>" in html
    )
    assert "[&quot;a&quot;]" in html and "b64:AP8=" in html
    assert html.count("<tr>") == 3  # header + 2 rows
    assert "3 rows, 4 columns (first 2 shown)" in html
    full = html_table(table, 10, columns=["name"], types=False)
    assert 'title="' + "y" * 200 + '"' in full and "y" * 79 + "…" in full
    assert "<small>" not in full and "3 rows, 1 column<" in full
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        html_table([1, 2], 3)  # type: ignore[arg-type]


def test_format_value_is_short_and_unambiguous() -> None:
    assert format_value(None) == "null"
    assert format_value(True) == "true"
    assert format_value(1234567) == "1,234,567"
    assert format_value(1 / 3) == "0.333333"
    assert format_value(float("nan")) == "NaN"
    moment = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    assert format_value(moment) == "2026-05-01T12:00:00+00:00"
    assert format_value(dt.timedelta(seconds=1.5)) == "1.5 s"
    assert format_value({"a": [1, 2]}) == '{"a": [1, 2]}'


def test_summary_card_and_repr() -> None:
    html = summary_card(
        "Stream <retry>",
        {"kind": "branch", "next_offset": 45, "root": ROOT, "reason": "a < b"},
        status=True,
        table=pa.table({"x": [1, 2, 3]}),
        limit=2,
    )
    assert "Stream &lt;retry&gt;" in html and "ta-ok" in html and ">OK<" in html
    assert f'<code class="ta-mono">{ROOT}</code>' in html  # roots shown whole, to copy
    assert "<dd>a &lt; b</dd>" in html and "<dd>45</dd>" in html
    assert "3 rows, 1 column (first 2 shown)" in html
    assert html.startswith("<style>")
    assert not summary_card("t", [("a", 1)], style=False).startswith("<style>")
    failed = summary_card("VerifyReport", [("target", "s")], status=False)
    assert "ta-fail" in failed and ">FAILED<" in failed

    class Markup:
        def __html__(self) -> str:
            return "<i>raw</i>"

    assert "<dd><i>raw</i></dd>" in summary_card("t", {"x": Markup()})
    text = summary_repr(
        "Stream", [("name", "retry"), ("next_offset", 45), ("root", ROOT), ("reason", "a b")]
    )
    assert text == '<Stream name=retry next_offset=45 root=0123456789ab… reason="a b">'
    assert summary_repr("Log", []) == "<Log>"


def _lineage(log: ta.Log) -> pa.Table:
    table = log.lineage()
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **LINEAGE_METADATA})


def test_lineage_html_draws_the_picture_and_the_table(family: ta.Log) -> None:
    html = lineage_html(_lineage(family))
    assert html.count("<svg") == 1 and html.count('class="node ') == 6
    assert "<th>parent_stream</th>" in html and "parent_root" not in html
    assert "6 rows" in html


def test_ipython_formatter_renders_lineage_tables_only(family: ta.Log) -> None:
    formatter = DisplayFormatter()
    shell = SimpleNamespace(display_formatter=formatter)
    plain = pa.table({"a": [1]})
    lineage = _lineage(family)
    assert "text/html" not in formatter.format(lineage)[0]
    assert register_ipython_formatters(shell) is True
    data, _ = formatter.format(lineage)
    assert "<svg" in data["text/html"] and "text/plain" in data
    assert "text/html" not in formatter.format(plain)[0]  # other tables: default display
    assert is_lineage_table(lineage) and not is_lineage_table(plain)
    assert not is_lineage_table(family.lineage().to_pylist())
    # Registering again changes nothing.
    html = formatter.formatters["text/html"]
    printer = html.for_type(pa.Table)
    assert register_ipython_formatters(shell) is True
    assert html.for_type(pa.Table) is printer


def test_ipython_formatter_keeps_a_formatter_registered_before() -> None:
    formatter = DisplayFormatter()
    seen: list[Any] = []

    def earlier(table: pa.Table) -> str:
        seen.append(table)
        return "<p>earlier</p>"

    formatter.formatters["text/html"].for_type(pa.Table, earlier)
    register_ipython_formatters(SimpleNamespace(display_formatter=formatter))
    plain = pa.table({"a": [1]})
    assert formatter.format(plain)[0]["text/html"] == "<p>earlier</p>" and seen == [plain]


def test_outside_ipython_nothing_is_registered() -> None:
    assert register_ipython_formatters() is False  # pytest is not an IPython shell


def test_cards_of_the_library_objects(family: ta.Log) -> None:
    log_card = log_html(family)
    assert f"<dd>{family.uri}</dd>" in log_card and "<dd>6</dd>" in log_card
    assert "6 rows, 4 columns" in log_card
    stream = family.stream("retry")
    card = stream_html(stream)
    assert "Stream retry" in card and "<dd>i, ok, score</dd>" in card
    assert f'<code class="ta-mono">{stream.root}</code>' in card
    assert "StreamView retry" in stream_html(stream.at(generation=0))
    report = family.verify("retry")
    card = verify_html(report)
    assert "VerifyReport retry" in card and ">OK<" in card
    assert f"{len(report.entries)} rows" in card
    (cp,) = [ta.Checkpoint.from_dict(r) for r in family.checkpoints().to_pylist()]
    card = checkpoint_html(cp)
    assert "Checkpoint events@g" in card and "eval-start" in card
    assert "transit verify URI --checkpoint" in card and "&quot;stream&quot;:&quot;events" in card
    mv = family.materialize(
        "per_ok", "events", query="SELECT ok, count(*) AS n FROM records GROUP BY ok"
    )
    refresh = mv.refresh()
    assert "Materialization per_ok" in materialization_html(mv)
    assert "<dd>events</dd>" in materialization_html(mv)
    card = refresh_html(refresh)
    assert "RefreshReport events" in card and "<dt>records_processed</dt><dd>6</dd>" in card
    # Wired into IPython by type, as the package's surface does for lower-layer classes.
    formatter = DisplayFormatter()
    shell = SimpleNamespace(display_formatter=formatter)
    register_ipython_formatters(shell, renderers={ta.VerifyReport: verify_html})
    assert "VerifyReport retry" in formatter.format(report)[0]["text/html"]
