"""The report as one self-contained HTML page (inline CSS and SVG; no script, no web font).

Layout: a header with summary cards; the lineage (one picture, or above `GROUP_ABOVE` streams
an overview table of the groups and one collapsible section per group with its picture,
streams and metrics, and merges); verification (failures first, every stream's and
checkpoint's status and root); how to reproduce (the exact `transit verify` commands).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from html import escape

from .dag import natural_key, plural
from .display import CSS, GROUP_ABOVE, status_badge
from .model import MergeSummary, ReportData, StreamSummary, Verification
from .svg import SVG_CSS, render_svg

__all__ = ["REPORT_CSS", "render_report"]

REPORT_CSS = """
.ta-report{max-width:1400px;margin:0 auto;padding:8px 16px 40px}
.ta-report h1{font-size:22px;margin:8px 0 2px}
.ta-report h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #dadce0}
.ta-report h3{font-size:14px;margin:16px 0 6px}
.ta-report .meta{color:#5f6368;margin:0 0 12px;overflow-wrap:anywhere}
.ta-report .cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.ta-report .cards .ta-card{min-width:170px}
.ta-report .big{font-size:22px;font-weight:600}
.ta-report nav a{margin-right:14px;color:#1a73e8;text-decoration:none}
.ta-report .legend span{display:inline-block;margin-right:14px;font-size:12px;color:#5f6368}
.ta-report .legend i{display:inline-block;width:14px;height:10px;border-radius:3px;
margin-right:4px;vertical-align:middle;border:1px solid}
.ta-report .root-k{background:#e8f0fe;border-color:#3367d6}
.ta-report .branch-k{background:#fff;border-color:#5f6368}
.ta-report .merge-k{background:#fef7e0;border-color:#b06000}
.ta-report .ctx-k{background:#f1f3f4;border-color:#9aa0a6;border-style:dashed}
.ta-report .fail-k{background:#fce8e6;border-color:#c5221f}
.ta-report details.group{border:1px solid #e8eaed;border-radius:8px;padding:4px 10px;
margin:6px 0}
.ta-report details.group[open]{padding-bottom:10px}
.ta-report .err{color:#a50e0e;font-size:12px}
.ta-report td.wrap{white-space:normal;min-width:220px;max-width:520px}
.ta-report td.root{white-space:normal;word-break:break-all;min-width:260px;max-width:420px}
.ta-report pre{background:#f8f9fa;border:1px solid #e8eaed;border-radius:6px;padding:8px 10px;
overflow:auto;font-size:12px;white-space:pre}
.ta-report .fails{white-space:pre-wrap;color:#a50e0e;font-size:12px;margin:2px 0}
.ta-report .svgbox{overflow:auto;max-height:80vh;border:1px solid #f1f3f4;border-radius:6px}
"""

_KIND_ORDER = ("root", "branch", "merge")


def _e(value: object) -> str:
    return "" if value is None else escape(str(value))


def _td(value: object, cls: str = "", title: str | None = None) -> str:
    attrs = f' class="{cls}"' if cls else ""
    if title:
        attrs += f' title="{escape(title)}"'
    if value is None or value == "":
        return f'<td{attrs}><span class="ta-null">—</span></td>'
    return f"<td{attrs}>{_e(value)}</td>"


def _num(value: int | None) -> str:
    return _td(None if value is None else f"{value:,}", "num")


def _table(head: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        f'<div class="ta-scroll"><table class="ta-table {cls}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _time_span(first: str | None, last: str | None) -> str | None:
    """`2026-05-01 16:01:00 → 16:01:02` (the date once when both are on the same day)."""
    if first is None or last is None:
        return None
    a, b = (t.rstrip("Z").replace("T", " ").removesuffix(".000") for t in (first, last))
    if a == b:
        return a
    if a[:10] == b[:10]:
        b = b[11:]
    return f"{a} → {b}"


def _card(title: str, big: str, detail: str) -> str:
    return (
        f'<div class="ta-card"><div class="ta-card-title">{escape(title)}</div>'
        f'<div class="big">{big}</div><div class="ta-more">{detail}</div></div>'
    )


def _status_cell(ok: bool | None, title: str) -> str:
    return f'<td title="{escape(title)}">{status_badge(ok, no="FAIL")}</td>'


# --- sections ---------------------------------------------------------------------------------


def _header(report: ReportData) -> str:
    kinds = Counter(s.kind for s in report.streams)
    own = sum(s.own for s in report.streams)
    failures = report.failures
    checks = len(report.verifications) + len(report.checkpoints)
    ran = sum(
        1
        for v in report.verifications + [c.verification for c in report.checkpoints]
        if v.ok is not None
    )
    if failures:
        verdict = status_badge(False, no=f"{len(failures)} FAILED")
    else:
        verdict = status_badge(True if ran else None, yes="ALL OK")
    mode = "deep: commit chains and segment files" if report.deep else "commit chains and pins"
    cards = [
        _card(
            "Streams",
            f"{len(report.streams):,}",
            ", ".join(plural(kinds[k], k) for k in _KIND_ORDER if kinds[k]) or "none",
        ),
        _card(
            "Records",
            f"{own:,}",
            "own records across the streams (inherited records are counted once, where "
            "they were written)",
        ),
        _card("Verification", verdict, f"{ran:,} of {checks:,} checks run; {escape(mode)}"),
        _card(
            "Checkpoints",
            f"{len(report.checkpoints):,}",
            "recorded claims, re-verifiable later",
        ),
    ]
    if report.metric_names:
        cards.append(
            _card("Metrics", f"{len(report.metric_names)}", escape(", ".join(report.metric_names)))
        )
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("ta-lineage", "Lineage"),
            ("ta-streams", "Streams and metrics"),
            ("ta-merges", "Merges"),
            ("ta-verification", "Verification"),
            ("ta-reproduce", "Reproduce"),
        )
    )
    return (
        f"<h1>{escape(report.title)}</h1>"
        f'<p class="meta"><code>{escape(report.uri)}</code> · {escape(report.scope)} · '
        f"generated {escape(report.created_at)} by transit-arrow {escape(report.version)}</p>"
        f'<div class="cards">{"".join(cards)}</div><nav>{nav}</nav>'
    )


def _legend() -> str:
    items = (
        ("root-k", "root"),
        ("branch-k", "branch (edge: fork offset)"),
        ("merge-k", "merge (dashed edges: pinned parents)"),
        ("ctx-k", "context: a parent outside the report"),
        ("fail-k", "verification failed"),
    )
    spans = "".join(f'<span><i class="{c}"></i>{escape(t)}</span>' for c, t in items)
    return f'<p class="legend">{spans} Hover a box for every detail.</p>'


def _streams_table(report: ReportData, streams: Sequence[StreamSummary]) -> str:
    metric_cols = [(name, scope) for name in report.metric_names for scope in report.metric_scopes]
    values = {(m.stream, m.metric, m.scope): m for m in report.metrics}
    both = len(report.metric_scopes) > 1
    head = [
        "stream",
        "kind",
        "derives from",
        "records",
        "own",
        "inherited",
        "own records written (UTC)",
    ]
    head += [f"{n} ({s})" if both else n for n, s in metric_cols]
    head += ["verified"]
    rows = []
    for s in streams:
        cells = [
            f"<td><code>{_e(s.name)}</code></td>",
            _td(s.kind),
            _td(s.derives_from, "wrap"),
            _num(s.records),
            _td(
                f"{s.own:,}" + (f" ({s.merged:,} merged)" if s.merged else ""),
                "num",
                f"offsets {s.own_start}..{s.records - 1}" if s.own else "no own records",
            ),
            _num(s.inherited),
            _td(_time_span(s.first_own, s.last_own), title=f"{s.first_own} .. {s.last_own}"),
        ]
        for name, scope in metric_cols:
            m = values.get((s.name, name, scope))
            if m is None:
                cells.append(_td(None))
            elif m.error is not None:
                cells.append(f'<td class="err" title="{escape(m.error)}">error</td>')
            else:
                cells.append(_td(m.text, "num" if m.value is not None else ""))
        title = "verified" if s.verified else "see Verification"
        cells.append(_status_cell(s.verified, title))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = ""
    if report.metric_names:
        sql = "; ".join(f"{n} = {q}" for n, q in report.metric_sql.items())
        scopes: dict[tuple[str, ...], str] = {
            ("own",): "each stream's own records",
            ("all",): "each stream's whole replay (inherited records included)",
        }
        scope = scopes.get(report.metric_scopes, "own records, and the whole replay")
        notes = f'<p class="ta-more">Metrics over {scope}: <code>{escape(sql)}</code></p>'
    errors = [s for s in streams if s.stats_error]
    if errors:
        notes += "".join(
            f'<p class="err">{escape(s.name)}: records not queried: {_e(s.stats_error)}</p>'
            for s in errors[:5]
        )
    return _table(head, rows) + notes


def _merges_table(merges: Sequence[MergeSummary]) -> str:
    if not merges:
        return '<p class="ta-more">No merges.</p>'
    head = [
        "merge",
        "policy",
        "parents (pinned)",
        "base",
        "outcome",
        "params",
        "actor",
        "reason",
        "labels",
    ]
    rows = []
    for m in merges:
        policy = m.policy + (f" v{m.policy_version}" if m.policy_version else "")
        outcome = _e(m.outcome)
        if m.winner:
            outcome = outcome.replace(
                escape(f"winner {m.winner}"), f"winner <b>{escape(m.winner)}</b>", 1
            )
        rows.append(
            "<tr>"
            + f"<td><code>{_e(m.name)}</code></td>"
            + _td(policy)
            + _td(m.parents, "wrap")
            + _td(m.base)
            + f'<td class="wrap">{outcome}</td>'
            + _td(m.params, "wrap ta-mono")
            + _td(m.actor)
            + _td(m.reason, "wrap")
            + _td(m.labels, "wrap")
            + "</tr>"
        )
    return _table(head, rows)


def _verification_rows(
    checks: Sequence[Verification], kinds: Sequence[str] | None = None
) -> list[str]:
    """One row per verification; `kinds` replaces the kind column's text."""
    rows = []
    for i, v in enumerate(checks):
        detail = _e(v.checked or v.error or "")
        if v.failures:
            detail += f'<div class="fails">{escape(v.failures)}</div>'
        elif v.error and v.checked:
            detail += f'<div class="err">{escape(v.error)}</div>'
        rows.append(
            "<tr>"
            + f"<td><code>{_e(v.target)}</code></td>"
            + _td(kinds[i] if kinds is not None else v.kind)
            + _status_cell(v.ok, v.error or v.checked)
            + f'<td class="root ta-mono">{_e(v.root)}</td>'
            + f'<td class="wrap">{detail}</td>'
            + "</tr>"
        )
    return rows


def _verification(report: ReportData) -> str:
    head = ["target", "kind", "status", "root (BLAKE3)", "what was checked"]
    parts = []
    failures = report.failures
    if failures:
        parts.append(f'<h3 class="err">{len(failures)} failed</h3>')
        parts.append(_table(head, _verification_rows(failures)))
    segments = (
        "every segment file was re-hashed."
        if report.deep
        else "segment files were not re-hashed (deep=True or --deep does that)."
    )
    how = (
        "Each stream was verified at the generation this report read: its commit chain was "
        "recomputed from the stored bytes from generation 0, with the chains of every stream "
        f"it derives from and every pinned root; {segments}"
    )
    parts.append(f'<p class="ta-more">{escape(how)}</p>')
    streams = _table(head, _verification_rows(report.verifications))
    if len(report.verifications) > GROUP_ABOVE:
        ok = sum(1 for v in report.verifications if v.ok)
        streams = (
            f'<details class="group"><summary>{len(report.verifications):,} streams: {ok:,} OK'
            f"</summary>{streams}</details>"
        )
    parts.append(streams)
    parts.append("<h3>Checkpoints</h3>")
    if report.checkpoints:
        head_cp = ["checkpoint", "kind", "status", "root (BLAKE3)", "what was checked"]
        kinds = [f"{c.kind} · head @{c.head_offset} · {c.created_at}" for c in report.checkpoints]
        checks = [c.verification for c in report.checkpoints]
        parts.append(_table(head_cp, _verification_rows(checks, kinds)))
    else:
        parts.append('<p class="ta-more">No checkpoints recorded for these streams.</p>')
    return "".join(parts)


def _reproduce(report: ReportData) -> str:
    streams = "\n".join(v.command for v in report.verifications)
    checkpoints = "\n".join(c.verification.command for c in report.checkpoints)
    deep = "" if report.deep else " --deep"
    text = (
        "<p>Anyone with read access to the log can check this report later. Each command "
        "below re-verifies one claim: a stream exactly as this report read it (generation "
        "and root), or a recorded checkpoint. They stay valid when the streams grow"
        + (f"; add <code>{deep.strip()}</code> to re-hash segment files too" if deep else "")
        + ".</p>"
    )
    parts = [text]
    block = f"<pre>{escape(streams)}</pre>"
    if len(report.verifications) > GROUP_ABOVE:
        count = f"{len(report.verifications):,} stream commands"
        block = f'<details class="group"><summary>{count}</summary>{block}</details>'
    parts += ["<h3>Streams as read</h3>", block]
    if checkpoints:
        parts += ["<h3>Recorded checkpoints</h3>", f"<pre>{escape(checkpoints)}</pre>"]
    parts += ["<h3>This report</h3>", f"<pre>{escape(report.rebuild)}</pre>"]
    return "".join(parts)


def _group_sections(report: ReportData) -> str:
    """Above `GROUP_ABOVE` streams: an overview of the groups, then one collapsible section
    per group with its picture, streams and merges."""
    by_group: dict[str, list[StreamSummary]] = {}
    for s in report.streams:
        by_group.setdefault(s.group, []).append(s)
    merges: dict[str, list[MergeSummary]] = {}
    for m in report.merges:
        merges.setdefault(m.group, []).append(m)
    overview, sections = [], []
    for i, (group, members) in enumerate(sorted(by_group.items(), key=lambda g: natural_key(g[0]))):
        anchor = f"ta-group-{i}"
        failed = [s for s in members if s.verified is False]
        verified = None if all(s.verified is None for s in members) else not failed
        kinds = Counter(s.kind for s in members)
        overview.append(
            "<tr>"
            + f'<td><a href="#{anchor}"><code>{_e(group)}</code></a></td>'
            + _num(len(members))
            + _num(kinds["branch"])
            + _num(kinds["merge"])
            + _num(sum(s.own for s in members))
            + _status_cell(verified, f"{len(failed)} failed" if failed else "")
            + "</tr>"
        )
        svg = render_svg(report.graph.group(group), standalone=False)
        opened = " open" if failed or len(by_group) == 1 else ""
        sections.append(
            f'<details class="group" id="{anchor}"{opened}><summary><b>{_e(group)}</b> — '
            f"{len(members)} streams, {kinds['merge']} merges {status_badge(verified, no='FAIL')}"
            f'</summary><div class="svgbox">{svg}</div>'
            f"<h3>Streams and metrics</h3>{_streams_table(report, members)}"
            f"<h3>Merges</h3>{_merges_table(merges.get(group, []))}</details>"
        )
    table = _table(["group", "streams", "branches", "merges", "own records", "verified"], overview)
    return (
        f'<h2 id="ta-lineage">Lineage, streams and merges by group</h2>{_legend()}'
        f'<p class="ta-more">{len(report.streams):,} streams in {len(by_group):,} groups '
        "(a group is a task: the root a stream derives from). Open a group for its picture, "
        'its streams and metrics, and its merges.</p><h3 id="ta-streams">Overview</h3>'
        f'{table}<div id="ta-merges"></div>{"".join(sections)}'
    )


def _flat_sections(report: ReportData) -> str:
    svg = render_svg(report.graph, standalone=False)
    return (
        f'<h2 id="ta-lineage">Lineage</h2>{_legend()}<div class="svgbox">{svg}</div>'
        f'<h2 id="ta-streams">Streams and metrics</h2>{_streams_table(report, report.streams)}'
        f'<h2 id="ta-merges">Merges</h2>{_merges_table(report.merges)}'
    )


def render_report(report: ReportData, *, standalone: bool = True) -> str:
    """The report as HTML (see the module docstring): a whole document when `standalone`,
    else a `<div>` with its own scoped `<style>` for a notebook."""
    grouped = len(report.streams) > GROUP_ABOVE and len({s.group for s in report.streams}) > 1
    body = (
        _header(report)
        + (_group_sections(report) if grouped else _flat_sections(report))
        + f'<h2 id="ta-verification">Verification</h2>{_verification(report)}'
        + f'<h2 id="ta-reproduce">Reproduce</h2>{_reproduce(report)}'
    )
    style = f"<style>{CSS}{SVG_CSS}{REPORT_CSS}</style>"
    fragment = f'<div class="ta-view ta-report">{body}</div>'
    if not standalone:
        return style + fragment
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report.title)}</title>{style}</head>"
        f'<body style="margin:0;background:#fff">{fragment}</body></html>\n'
    )
