"""The provenance report's data and HTML (DESIGN §11), checked against the log itself."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from evalfixture import EvalLog

import transit_arrow as ta
from transit_arrow.cli import main
from transit_arrow.report import Report, ReportSource, build_report

METRICS: dict[str, Any] = {
    "pass_rate": "avg(CASE WHEN passed THEN 1 ELSE 0 END)",
    "mean_score": ("mean", "score"),
    "tokens": ("sum", "tokens"),
    "n": "count(*)",
}


def _report(log: ReportSource, **kwargs: Any) -> Report:
    return build_report(log, checkpoint_factory=ta.Checkpoint.from_dict, **kwargs)


def _rows(table: pa.Table, key: str = "name") -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in table.to_pylist()}


def test_streams_table_counts_own_and_inherited_records(log: ta.Log, eval_log: EvalLog) -> None:
    report = _report(log)
    rows = _rows(report.streams_table())
    assert sorted(rows) == sorted(eval_log.streams)
    # Own records are the rows whose _stream is the stream itself (DESIGN §6).
    counts = {
        branch: (own, total)
        for branch, own, total in log.sql(
            "SELECT _branch, count(*) FILTER (WHERE _stream = _branch), count(*) "
            "FROM transit_records GROUP BY _branch"
        ).fetchall()
    }
    for name, row in rows.items():
        assert row["own"] == eval_log.own[name], name
        assert row["records"] == row["own"] + row["inherited"]
        assert (row["own"], row["records"]) == counts[name], name
        assert row["group"] == name.split("/")[0]
        assert row["verified"] is True and row["uncommitted"] == 0
    concat = next(m for m, p in eval_log.merges.items() if p == "concat")
    assert rows[concat]["merged"] == rows[concat]["own"] == 9  # 3 parents x 3 attempts
    assert rows["task-0/small"]["derives_from"] == "task-0@0"
    assert rows["task-0/small"]["first_own"] == "2026-05-01T12:01:00.000Z"
    assert rows["task-0/small"]["last_own"] == "2026-05-01T12:01:02.000Z"
    assert rows["task-0"]["kind"] == "root" and rows["task-0"]["inherited"] == 0


def _expected(log: ta.Log, name: str, start: int) -> dict[str, float | None]:
    """The metrics computed with pyarrow from `stream.read()`, independently of DuckDB."""
    table = log.stream(name).read()
    table = table.filter(pc.greater_equal(table["_offset"], start))
    out: dict[str, float | None] = {"n": float(table.num_rows)}
    names = table.column_names
    passed = table["passed"].to_pylist() if "passed" in names else [None] * table.num_rows
    out["pass_rate"] = sum(1 for p in passed if p) / len(passed) if passed else None
    scores = [s for s in table["score"].to_pylist() if s is not None] if "score" in names else []
    out["mean_score"] = sum(scores) / len(scores) if scores else None
    tokens = [t for t in table["tokens"].to_pylist() if t is not None] if "tokens" in names else []
    out["tokens"] = float(sum(tokens)) if tokens else None
    return out


def test_metrics_match_a_computation_from_the_records(log: ta.Log) -> None:
    report = _report(log, prefix="task-3", metrics=METRICS, metrics_scope="both")
    assert report.metric_names == list(METRICS)
    assert report.metric_sql["mean_score"] == 'avg("score")'
    summaries = {s.name: s for s in report.streams}
    for name, summary in summaries.items():
        for scope, start in (("own", summary.own_start), ("all", 0)):
            expected = _expected(log, name, start)
            for metric, value in expected.items():
                got = report.metric(name, metric, scope)
                assert got.error is None, got
                assert got.value == pytest.approx(value), (name, metric, scope)
    wide = report.metrics_table(wide=True)
    assert wide.column_names == [
        "stream",
        *[c for m in METRICS for c in (m, f"{m} (all)")],
    ]
    assert wide.num_rows == len(summaries)
    with pytest.raises(ta.InvalidInputError, match="no own metric 'nope'"):
        report.metric("task-3", "nope")


def test_a_failing_metric_fills_only_its_own_cells(log: ta.Log) -> None:
    report = _report(
        log,
        prefix="task-1",
        metrics={
            "bad": "avg(no_such_column)",
            "mean_score": "avg(score)",
            "critiques": "count(critique)",
        },
    )
    for s in report.streams:
        bad = report.metric(s.name, "bad")
        assert bad.value is None and bad.error and "no_such_column" in bad.error
        assert bad.text.startswith("error: ")
        assert report.metric(s.name, "mean_score").error is None
        critiques = report.metric(s.name, "critiques")
        assert critiques.value == (1 if s.name.endswith("/critique") else 0), s.name
    assert report.ok  # metric errors are not verification failures
    html = report.to_html()
    assert "no_such_column" in html and 'class="err"' in html


def test_a_metric_failing_on_some_streams_only(tmp_path: Path) -> None:
    # `v` is a number in `a` and text in `b`: transit_records leaves it out, so each stream is
    # asked on its own view, and only `b`'s cell shows the error.
    with ta.open(tmp_path / "log") as log:
        log.create_stream("a").append([{"v": 1}, {"v": 3}])
        log.create_stream("b").append([{"v": "x"}])
        report = _report(log, metrics={"mean_v": "avg(v)", "n": "count(*)"})
        assert report.metric("a", "mean_v").value == 2.0
        b = report.metric("b", "mean_v")
        assert b.value is None and b.error is not None
        assert report.metric("b", "n").value == 1.0


def test_merges_say_who_won_and_how_records_were_combined(log: ta.Log, eval_log: EvalLog) -> None:
    report = _report(log)
    merges = _rows(report.merges_table())
    assert sorted(merges) == sorted(eval_log.merges)
    lineage = _rows(log.lineage())
    for name, policy in eval_log.merges.items():
        row = merges[name]
        assert row["policy"] == policy and row["policy_version"] == "1"
        assert (row["actor"], row["reason"], row["labels"]) == (
            "judge",
            "keep the best attempt",
            f"task={name.split('/')[0]}",
        )
        parents = [
            f"{p['stream']}@{p['offset']} (g{p['generation']})"
            for p in lineage[name]["merge_parents"]
        ]
        assert row["parents"] == ", ".join(parents)
        if policy == "pin":
            params = json.loads(lineage[name]["policy_params"])
            assert row["winner"] == params["winner"]
            assert json.loads(row["scores"]) == params["scores"]
            assert row["outcome"].startswith(f"winner {params['winner']} (recorded); pinned")
        elif policy == "concat":
            assert row["winner"] is None
            task = name.split("/")[0]
            assert row["outcome"].endswith(
                f"in this order: {task}/small @1..3 (3); {task}/medium @1..3 (3); "
                f"{task}/large @1..3 (3)"
            )
        else:
            assert "ordered by timestamp" in row["outcome"]


def test_every_stream_and_checkpoint_is_verified_and_reproducible(
    log: ta.Log, eval_log: EvalLog
) -> None:
    report = _report(log, prefix="task-0")
    assert report.ok and all(v.ok for v in report.verifications)
    streams = _rows(log.streams())
    for v in report.verifications:
        claim = json.loads(v.claim)
        row = streams[v.stream]
        assert claim == {
            "stream": v.stream,
            "generation": row["generation"],
            "head_offset": row["committed_offset"] - 1,
            "root": row["root"],
        }
        assert v.target == f"{v.stream}@g{row['generation']}" and v.root == row["root"]
        assert "commit chain" in v.checked and "checkpoint root" in v.checked
    assert [c.stream for c in report.checkpoints] == ["task-0"]
    cp = report.checkpoints[0]
    assert cp.verification.ok and cp.kind == "eval-start"
    table = report.verification_table()
    assert table.num_rows == len(report.verifications) + 1
    assert pc.all(table["ok"]).as_py()
    # The commands work as printed (run through the CLI, as a reader would).
    for command in [report.verifications[0].command, cp.verification.command]:
        args = shlex.split(command)
        assert args[:3] == ["transit", "verify", log.uri]
        result = CliRunner().invoke(main, args[1:])
        assert result.exit_code == 0, result.stdout + result.stderr
        assert ": OK" in result.stdout
    assert report.rebuild == f"transit report {log.uri} --prefix task-0 -o report.html"


def _tamper_commit(root: Path, stream: str, generation: int) -> Path:
    path = root / "streams" / stream.replace("/", "%2F") / "commits" / f"{generation:020d}.json"
    data = json.loads(path.read_bytes())
    data["time"] = "2000-01-01T00:00:00Z"  # a different byte, same shape
    path.write_bytes(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    return path


def test_a_tampered_commit_fails_the_streams_that_depend_on_it(family: ta.Log) -> None:
    root = Path(family.uri.removeprefix("file://"))
    _tamper_commit(root, "retry", 1)
    report = _report(family)
    failed = {v.stream for v in report.failures}
    assert failed == {"retry", "retry/2", "best", "pinned", "ff"}  # events is intact
    assert not report.ok
    retry = next(v for v in report.verifications if v.stream == "retry")
    assert retry.ok is False and "commit 1" in retry.failures
    assert report.graph.status == {
        "events": True,
        **dict.fromkeys(failed, False),
    }
    svg = report.graph.to_svg()
    assert svg.count("node branch fail") == 2 and svg.count("node merge fail") == 3
    html = report.to_html()
    assert "5 FAILED" in html and "commit 1" in html
    assert "verification 6 FAILED" not in repr(report) and "5 FAILED" in repr(report)


class OnlyTheProtocol:
    """The log, exposing exactly the methods `ReportSource` lists."""

    def __init__(self, inner: ta.Log) -> None:
        self.inner = inner

    @property
    def uri(self) -> str:
        return self.inner.uri

    def lineage(self) -> pa.Table:
        return self.inner.lineage()

    def streams(self) -> pa.Table:
        return self.inner.streams()

    def checkpoints(self) -> pa.Table:
        return self.inner.checkpoints()

    def verify(self, target: Any, *, deep: bool = False) -> Any:
        return self.inner.verify(target, deep=deep)

    def duckdb(self) -> Any:
        return self.inner.duckdb()


class WithoutLineageOf(OnlyTheProtocol):
    """The log, except that `lineage()` leaves `hidden` out, as it does for a stream that is
    damaged (the log keeps listing it in `streams()`)."""

    def __init__(self, inner: ta.Log, hidden: str) -> None:
        super().__init__(inner)
        self.hidden = hidden

    def lineage(self) -> pa.Table:
        table = self.inner.lineage()
        return table.filter(pc.not_equal(table["name"], self.hidden))


def test_a_stream_left_out_of_the_lineage_is_verified_by_name(family: ta.Log) -> None:
    _tamper_commit(Path(family.uri.removeprefix("file://")), "retry/2", 0)
    source = WithoutLineageOf(family, "retry/2")
    report = _report(source)
    assert "retry/2" not in {s.name for s in report.streams}
    (damaged,) = [v for v in report.verifications if v.stream == "retry/2"]
    assert damaged.ok is False and damaged.target == "retry/2" and damaged.claim == ""
    assert damaged.command == f"transit verify {family.uri} retry/2"
    assert "commit 0" in damaged.failures and damaged in report.failures
    assert "retry/2" in _report(source, prefix="retry").to_html()
    only = _report(source, streams=["retry/2"])
    assert only.streams == [] and [v.stream for v in only.verifications] == ["retry/2"]
    assert [v.stream for v in _report(source, prefix="events").verifications] == ["events"]


def test_deep_verification_rehashes_segments(family: ta.Log) -> None:
    root = Path(family.uri.removeprefix("file://"))
    segment = next((root / "streams" / "retry" / "segments").glob("*.parquet"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    shallow = _report(family, prefix="retry")
    assert shallow.ok  # segment files are not read without deep
    deep = _report(family, prefix="retry", deep=True)
    assert not deep.ok and deep.deep
    assert all("segment" in v.failures for v in deep.failures)
    assert "--deep" in deep.verifications[0].command


def test_without_a_checkpoint_factory_checkpoints_are_listed_not_verified(log: ta.Log) -> None:
    report = build_report(log, prefix="task-0")
    assert all(v.ok for v in report.verifications)
    (cp,) = report.checkpoints
    assert cp.verification.ok is None and "checkpoint_factory" in (cp.verification.error or "")
    assert report.ok
    skipped = build_report(log, prefix="task-0", verify=False)
    assert all(v.ok is None for v in skipped.verifications)
    assert skipped.streams_table()["verified"].null_count == len(skipped.streams)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"streams": ["task-0/nope"]}, ta.StreamNotFoundError, "task-0/nope"),
        ({"streams": []}, ta.InvalidInputError, "streams is empty"),
        ({"streams": [1]}, ta.InvalidInputError, "list of stream names"),
        ({"streams": ["task-0"], "prefix": "task-0"}, ta.InvalidInputError, "not both"),
        ({"prefix": "task-99"}, ta.InvalidInputError, "no stream is 'task-99'"),
        ({"metrics": ["avg(score)"]}, ta.InvalidInputError, "metrics must map"),
        ({"metrics": {"m": 3}}, ta.InvalidInputError, "metric 'm' must be a SQL"),
        ({"metrics": {"m": ("mode", "score")}}, ta.InvalidInputError, "unknown aggregate"),
        ({"metrics": {"m": " "}}, ta.InvalidInputError, "is empty"),
        ({"metrics": {"": "count(*)"}}, ta.InvalidInputError, "non-empty string"),
        ({"metrics_scope": "mine"}, ta.InvalidInputError, "metrics_scope must be"),
        ({"deep": "yes"}, ta.InvalidInputError, "True or False"),
        ({"title": 3}, ta.InvalidInputError, "title must be"),
    ],
)
def test_bad_options_raise_transit_errors(
    log: ta.Log, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build_report(log, **kwargs)


def test_save_writes_one_self_contained_file(log: ta.Log, tmp_path: Path) -> None:
    report = _report(log, prefix="task-2", metrics=METRICS, title="Eval <task-2>")
    path = report.save(tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<title>Eval &lt;task-2&gt;</title>" in html
    # Nothing is fetched at view time: no script, stylesheet link, import, image or font URL.
    for forbidden in ("<script", "<link", "@import", " src=", "<iframe", "@font-face"):
        assert forbidden not in html
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) == {"http://www.w3.org/2000/svg"}
    assert set(re.findall(r"url\(([^)]*)\)", html)) <= {
        f"#{m}" for m in re.findall(r'id="([^"]+-arrow)"', html)
    }
    nodes = re.findall(r'<g class="node ([a-z ]+)" data-stream="([^"]+)"', html)
    assert sorted(n for c, n in nodes if "context" not in c) == sorted(
        s.name for s in report.streams
    )
    for s in report.streams:
        assert f"<code>{s.name}</code>" in html
    assert html.count("transit verify ") == len(report.commands())
    fragment = report._repr_html_()
    assert fragment.startswith("<style>") and "<html" not in fragment
    with pytest.raises(ta.InvalidInputError, match="cannot write the report"):
        report.save(tmp_path)  # a folder


def test_a_report_of_hundreds_of_streams_is_grouped_by_task(
    big_eval_log: EvalLog, big_report: Report
) -> None:
    report = big_report
    assert report.ok and len(report.checkpoints) == len(big_eval_log.checkpoints) == 13
    assert len(report.streams) == len(big_eval_log.streams) >= 300
    html = report.to_html()
    assert len(html) < 3_000_000
    sections = re.findall(r'<details class="group" id="ta-group-\d+"', html)
    assert len(sections) == 50
    # One box per stream, each in its task's picture (context boxes aside).
    nodes = re.findall(r'<g class="node ([a-z ]+)" data-stream="([^"]+)"', html)
    own = [n for c, n in nodes if "context" not in c]
    assert sorted(own) == sorted(big_eval_log.streams)
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="ta-lineage"') == 50
    overview = html.split('<h3 id="ta-streams">Overview</h3>', 1)[1].split("</table>", 1)[0]
    assert overview.count("<tr>") == 51  # a header and one row per task
    assert overview.index(">task-2<") < overview.index(">task-10<")


def test_only_the_report_source_protocol_is_used(log: ta.Log) -> None:
    direct = _report(log, prefix="task-4", metrics=METRICS)
    proxied = _report(OnlyTheProtocol(log), prefix="task-4", metrics=METRICS)
    assert proxied.streams_table().equals(direct.streams_table())
    assert proxied.metrics_table().equals(direct.metrics_table())
    assert proxied.merges_table().equals(direct.merges_table())


def test_to_dict_and_repr(log: ta.Log) -> None:
    report = _report(log, prefix="task-5", metrics={"n": "count(*)"})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["scope"] == "streams under task-5"
    assert {s["name"] for s in data["streams"]} == {s.name for s in report.streams}
    assert data["metrics"]["sql"] == {"n": "count(*)"}
    assert re.fullmatch(
        r"<Report 'Provenance report': \d+ streams \(1 root, \d+ branches, 1 merge\), 1 metric, "
        r"\d+ checkpoints?; verification all OK>",
        repr(report),
    ), repr(report)


@pytest.mark.skipif(not hasattr(ta.Log, "report"), reason="the Log.report facade is not there yet")
def test_the_log_facade_delegates(log: ta.Log, tmp_path: Path) -> None:
    report = log.report(prefix="task-1", metrics={"n": "count(*)"})
    assert report.ok and len(report.checkpoints) == 0
    assert "task-1/best" in report._repr_html_()
    assert report.save(tmp_path / "r.html").exists()
    graph = log.lineage_graph(prefix="task-1")
    assert "task-1/best" in graph.to_mermaid()
