"""`transit demo`: the main job end to end, and the workloads' place in the layering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.compute as pc
from click.testing import CliRunner

import transit_arrow as ta
from transit_arrow.cli import main
from transit_arrow.cli.demo import format_report, run_demo
from transit_arrow.workloads import Evals

PACKAGE = Path(ta.__file__).parent


def test_demo_runs_the_job_and_can_run_again(tmp_path: Path) -> None:
    path = tmp_path / "demo"
    report = run_demo(path, 640)
    assert report.created_log and report.tasks == 4 and report.merges == 4
    assert (report.first_task, report.last_task) == ("task-0000", "task-0003")
    assert report.attempts == 8 and report.trace_records > 640
    assert sum(report.winners.values()) == 4
    assert report.checkpoints_verified == 4
    halfway, end = report.refreshes
    assert halfway["incremental"] and end["incremental"]
    assert end["reused_checkpoint"] is not None and end["from_offset"] > 0
    assert {r["model"] for r in report.sql_rows} == {"model-small", "model-large"}
    assert sum(r["tool_calls"] for r in report.sql_rows) > 0
    with ta.open(path, create=False) as log:
        evals = Evals(log, "evals")
        assert len(evals.tasks()) == 4
        merges = log.lineage().filter(pc.field("policy") == "custom:best_of").to_pylist()
        assert len(merges) == 4
        for merge in merges:
            params = json.loads(merge["policy_params"])
            assert params["winner"] == dict(merge["labels"])["winner"]
            assert len(params["scores"]) >= 2
        assert report.total_streams == log.streams().num_rows == report.streams_created
        assert log.verify(merges[0]["name"], deep=True).ok

    again = run_demo(path, 320)
    assert not again.created_log and (again.first_task, again.last_task) == (
        "task-0004",
        "task-0005",
    )
    assert again.refreshes[0]["reused_checkpoint"] is not None  # resumes the first run's state
    text = format_report(again)
    for expected in ("existing log", "best-of merge", "refreshed incrementally", "all OK"):
        assert expected in text
    assert "transit lineage" in text and "transit verify" in text
    if again.report_path is None:
        assert "skipped" in again.report_note
    else:
        assert Path(again.report_path).is_file()


def test_demo_command_prints_what_it_did(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["demo", str(tmp_path / "d"), "--records", "320"])
    assert done.exit_code == 0, done.output
    assert re.search(r"merged +2 best-of merges", done.output)
    assert "pass rate by model" in done.output and "SQL across every branch" in done.output
    as_json = runner.invoke(main, ["demo", str(tmp_path / "d"), "--records", "160", "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["tasks"] == 1 and data["first_task"] == "task-0002"


def test_nothing_below_the_facade_imports_workloads() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("workloads/", "cli/")):
            continue
        if re.search(r"^\s*(from|import)\s+\S*workloads", path.read_text(), re.MULTILINE):
            offenders.append(relative)
    assert offenders == []
