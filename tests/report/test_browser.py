"""The saved report, opened offline in a real browser (headless Chromium), as a reader would.

Screenshots are kept in tests/artifacts/ (not committed). Each page is also loaded with a probe
script appended to a copy of it, which measures the rendered layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, open_page
from evalfixture import EvalLog

import transit_arrow as ta
from transit_arrow.report import Report, build_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (apt-get install chromium; .ci/run installs it)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
METRICS = {
    "pass_rate": "avg(CASE WHEN passed THEN 1 ELSE 0 END)",
    "mean_score": ("mean", "score"),
    "tokens": ("sum", "tokens"),
    "p95_latency_ms": ("p95", "latency_ms"),
}


def _render(page: Path, workdir: Path, screenshot: str, height: int) -> dict[str, Any]:
    """Open `page` as a reader would (a screenshot kept in tests/artifacts/; no console
    message, no request), then with the probe; returns the probe's measurements."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    seen = open_page(page, workdir, screenshot=shot, window=(1400, height))
    assert seen.console == [] and seen.page_requests == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    probed = open_page(page, workdir, probe=True)
    assert probed.console == []
    return probed.probe


def test_a_task_report_renders_offline(log: ta.Log, tmp_path: Path) -> None:
    report = build_report(
        log, prefix="task-4", metrics=METRICS, checkpoint_factory=ta.Checkpoint.from_dict
    )
    probed = _render(report.save(tmp_path / "report.html"), tmp_path, "report-task.png", 1700)
    boxes = [n for n in probed["nodes"] if "context" not in n["cls"]]
    assert sorted(n["stream"] for n in boxes) == sorted(s.name for s in report.streams)
    assert all(n["width"] > 150 and n["height"] > 30 for n in probed["nodes"])
    assert probed["overlaps"] == 0  # no box drawn over another
    assert probed["overflowing"] == []  # every label fits in its box, with the real font
    assert probed["svgs"] == 1 and probed["tables"] == 4  # streams, merges, checks, checkpoints
    assert probed["headings"] == [
        "Lineage",
        "Streams and metrics",
        "Merges",
        "Verification",
        "Reproduce",
    ]
    assert probed["title"] == "Provenance report"


def test_a_report_of_hundreds_of_streams_renders_grouped(
    big_eval_log: EvalLog, big_report: Report, tmp_path: Path
) -> None:
    probed = _render(big_report.save(tmp_path / "big.html"), tmp_path, "report-big.png", 1400)
    boxes = [n["stream"] for n in probed["nodes"] if "context" not in n["cls"]]
    assert sorted(boxes) == sorted(big_eval_log.streams)  # one box per stream, once
    assert probed["svgs"] == 50 and probed["overlaps"] == 0 and probed["overflowing"] == []
    assert probed["headings"][0] == "Lineage, streams and merges by group"


def test_the_checks_catch_console_errors_and_fetches(tmp_path: Path) -> None:
    # A negative control: a page that logs an error and asks for a stylesheet on the network.
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://cdn.example.invalid/a.css">'
        '</head><body><script>console.error("boom")</script></body></html>'
    )
    seen = open_page(page, tmp_path)
    assert any('"boom"' in line for line in seen.console)
    assert seen.page_requests == ["https://cdn.example.invalid/a.css"]
