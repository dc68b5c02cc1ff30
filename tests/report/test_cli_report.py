"""`transit report` and `transit lineage --stream/--prefix/--format`."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from evalfixture import EvalLog

import transit_arrow as ta
from transit_arrow.cli import main
from transit_arrow.cli.report_cmd import parse_metric


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def failed(*args: str | Path, code: int = 1) -> str:
    result = run(*args)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


def test_report_on_the_log_transit_demo_creates(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    ok("demo", demo, "--records", "500")
    out = tmp_path / "report.html"
    text = ok("report", demo, "-o", out).stdout
    assert text.startswith(f"wrote {out}: ") and "ALL OK" in text
    html = out.read_text(encoding="utf-8")
    names = [row["name"] for row in json.loads(ok("streams", demo, "-o", "json").stdout)]
    assert names and all(f"<code>{name}</code>" in html for name in names)
    assert html.count('class="node ') >= len(names)


def test_report_of_a_task_with_metrics(eval_log: EvalLog, tmp_path: Path) -> None:
    out = tmp_path / "task-1.html"
    summary = json.loads(
        ok(
            "report",
            eval_log.path,
            "--prefix",
            "task-1",
            "-o",
            out,
            "--metric",
            "pass_rate=rate:passed",
            "--metric",
            "tokens=sum(tokens)",
            "--metrics-scope",
            "both",
            "--summary",
            "json",
        ).stdout
    )
    expected = [s for s in eval_log.streams if s == "task-1" or s.startswith("task-1/")]
    assert summary == {
        "out": str(out),
        "streams": len(expected),
        "merges": 1,
        "checkpoints": 0,
        "metrics": ["pass_rate", "tokens"],
        "deep": False,
        "ok": True,
        "failed": [],
    }
    html = out.read_text(encoding="utf-8")
    rebuild = (
        f"transit report {eval_log.path.as_uri()} --prefix task-1 --metric pass_rate=rate:passed "
        "--metric &#x27;tokens=sum(tokens)&#x27; --metrics-scope both -o report.html"
    )
    assert rebuild in html  # the command that rebuilds it, with every option
    assert "pass_rate (all)" in html and "avg(CASE WHEN &quot;passed&quot; THEN 1.0" in html


def test_report_of_streams_to_stdout(eval_log: EvalLog) -> None:
    result = ok("report", eval_log.path, "task-0/small", "task-0/medium", "-o", "-", "--deep")
    assert result.stdout.startswith("<!DOCTYPE html>") and result.stdout.endswith("</html>\n")
    assert "task-0/small/retry-1/critique" in result.stdout  # what derives from task-0/small
    assert "task-0/large</code>" not in result.stdout
    assert result.stderr.startswith("wrote stdout: ") and "segment files" in result.stderr


def test_report_errors(eval_log: EvalLog, tmp_path: Path) -> None:
    assert "stream 'task-0/smal' does not exist" in failed(
        "report", eval_log.path, "task-0/smal", "-o", tmp_path / "x.html"
    )
    assert "not both" in failed("report", eval_log.path, "task-0", "--prefix", "task-0", code=2)
    assert "is a directory" in failed("report", eval_log.path, "-o", tmp_path, code=2)
    assert "cannot write the report" in failed(
        "report", eval_log.path, "--prefix", "task-0", "-o", tmp_path / "no" / "r.html"
    )
    assert "KEY=VALUE" in failed("report", eval_log.path, "--metric", "nameless", code=2)
    assert "there is no transit-arrow log" in failed("report", tmp_path / "missing")


def test_report_exits_1_after_writing_when_verification_fails(
    eval_log: EvalLog, tmp_path: Path
) -> None:
    copy = tmp_path / "log"
    shutil.copytree(eval_log.path, copy)
    segment = next((copy / "streams" / "task-2%2Flarge" / "segments").glob("*.parquet"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    out = tmp_path / "r.html"
    ok("report", copy, "--prefix", "task-2", "-o", out)  # shallow: segments are not read
    err = failed("report", copy, "--prefix", "task-2", "-o", out, "--deep")
    assert err.startswith("error: verification FAILED: ") and "task-2/large@g" in err
    html = out.read_text(encoding="utf-8")
    assert "FAILED" in html and "BLAKE3 of the file bytes" in html


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("mean:score", ("mean", "score")),
        ("P95:latency ms", ("P95", "latency ms")),
        ("avg(passed::int)", "avg(passed::int)"),
        ("sum(tokens)", "sum(tokens)"),
        ("mode:score", "mode:score"),  # not an aggregate: left to SQL, which says why
    ],
)
def test_parse_metric(text: str, spec: object) -> None:
    assert parse_metric(text) == spec


# --- transit lineage ----------------------------------------------------------------------


def test_lineage_formats(eval_log: EvalLog) -> None:
    path = eval_log.path
    mermaid = ok("lineage", path, "--prefix", "task-4", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "task-4/best" in mermaid
    dot = ok("lineage", path, "--stream", "task-4/small", "--format", "dot").stdout
    assert dot.startswith("digraph ") and '"task-4/small" -> "task-4/best"' in dot
    svg = ok("lineage", path, "--prefix", "task-4", "--format", "svg").stdout
    root = ET.fromstring(svg.split("?>", 1)[1])
    names = {
        g.get("data-stream")
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if "node" in (g.get("class") or "")
    }
    assert names == {s for s in eval_log.streams if s.split("/")[0] == "task-4"}
    rows = json.loads(ok("lineage", path, "--prefix", "task-4", "--format", "json").stdout)
    assert sorted(r["name"] for r in rows) == sorted(names)
    assert json.loads(ok("lineage", path, "--prefix", "task-4", "-o", "json").stdout) == rows


def test_lineage_text_of_one_subtree(eval_log: EvalLog) -> None:
    text = ok("lineage", eval_log.path, "--stream", "task-0/small").stdout
    lines = text.splitlines()
    assert lines[0] == "task-0/small  branch of task-0@0  next=4  actor=small  reason=attempt"
    assert lines[1].startswith("├── task-0/small/retry-1 @2  branch  next=5  actor=agent")
    assert any(line.startswith("└── task-0/best @3  merge(concat) of ") for line in lines)
    assert all(len(line) <= 100 for line in lines)
    narrow = ok("lineage", eval_log.path, "--stream", "task-0/small", "--width", "60").stdout
    assert all(len(line) <= 60 for line in narrow.splitlines())


def test_lineage_option_errors(eval_log: EvalLog) -> None:
    assert "disagree" in failed(
        "lineage", eval_log.path, "--format", "mermaid", "-o", "json", code=2
    )
    assert "did you mean 'task-0/small'" in failed(
        "lineage", eval_log.path, "--stream", "task-0/smal"
    )
    assert "no stream is 'task-x'" in failed("lineage", eval_log.path, "--prefix", "task-x")
    failed("lineage", eval_log.path, "--format", "png", code=2)


def test_lineage_of_a_big_log_stays_narrow(big_eval_log: EvalLog) -> None:
    lines = ok("lineage", big_eval_log.path).stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len(lines) < 2 * len(big_eval_log.streams)
    with ta.open(big_eval_log.path, create=False) as log:
        assert log.streams().num_rows == len(big_eval_log.streams)
