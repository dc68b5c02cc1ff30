"""`transit tail URI STREAM [-f]`: the last records, then new ones as they are appended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import failed, ndjson, ok, records, run

import transit_arrow as ta

LONG = 60.0


def test_tail_prints_the_last_records_and_exits(log_dir: Path) -> None:
    ok("append", log_dir, "s", stdin=records(30))
    lines = ok("tail", log_dir, "s").stdout.splitlines()
    assert lines[0].split() == ["_stream", "_offset", "_timestamp", "_headers", "i"]
    assert [line.split()[1] for line in lines[2:-1]] == [str(i) for i in range(20, 30)]
    assert lines[-1] == "(10 records)"
    assert [r["i"] for r in ndjson(ok("tail", log_dir, "s", "-n", "3", "-o", "json"))] == [
        27,
        28,
        29,
    ]
    assert len(ndjson(ok("tail", log_dir, "s", "--start", "5", "-o", "json"))) == 25
    assert ok("tail", log_dir, "s", "--start", "30").stdout == "(0 records)\n"


def test_tail_json_has_the_conventions_of_read(log_dir: Path) -> None:
    events = '{"u": "ada", "b": 1.5, "_headers": {"k": "v"}}\n{"u": "bob", "b": null}'
    ok("append", log_dir, "s", stdin=events)
    tailed = ok("tail", log_dir, "s", "-o", "json").stdout
    assert tailed == ok("read", log_dir, "s", "-o", "json").stdout


def test_follow_prints_records_as_another_writer_appends_them(log_dir: Path) -> None:
    ok("append", log_dir, "s", stdin=records(2))

    def write() -> None:
        time.sleep(0.3)
        with ta.open(log_dir, create=False) as log:  # its own log: heads on disk, not shared
            s = log.stream("s")
            for i in range(2, 7):
                s.append({"i": i})
                time.sleep(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    result = ok("tail", log_dir, "s", "-f", "--timeout", "1.5", "--start", "0", "-o", "json")
    writer.join(LONG)
    assert [r["i"] for r in ndjson(result)] == list(range(7))
    assert [r["_offset"] for r in ndjson(result)] == list(range(7))


def test_follow_as_text_prints_the_header_once(log_dir: Path) -> None:
    ok("append", log_dir, "s", stdin=records(3))
    with ta.open(log_dir, create=False) as log:
        log.stream("s").flush()
        log.stream("s").append({"i": 3})  # sealed at close: two segments, two batches
    out = ok("tail", log_dir, "s", "-f", "--timeout", "0.2", "--start", "0").stdout.splitlines()
    assert out[0].split()[:2] == ["_stream", "_offset"]
    assert len(out) == 2 + 4
    assert sum(1 for line in out if line.startswith("_stream")) == 1


def test_tail_errors_are_clean(log_dir: Path, tmp_path: Path) -> None:
    ok("append", log_dir, "s", stdin=records(1))
    assert failed("tail", log_dir, "nope").startswith("error: stream 'nope' does not exist")
    usage = run("tail", log_dir, "s", "--timeout", "1")
    assert usage.exit_code == 2 and "--timeout needs --follow" in usage.stderr
    assert "transit init" in failed("tail", tmp_path / "missing", "s")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_follow_in_a_process_stops_cleanly_on_a_signal(log_dir: Path, stop: int) -> None:
    ok("append", log_dir, "s", stdin=records(3))
    child = subprocess.Popen(
        [sys.executable, "-m", "transit_arrow", "tail", str(log_dir), "s", "-f", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        got = [json.loads(child.stdout.readline()) for _ in range(3)]
        with ta.open(log_dir, create=False) as log:
            s = log.stream("s")
            for i in range(3, 6):
                s.append({"i": i})
        got += [json.loads(child.stdout.readline()) for _ in range(3)]
        assert [r["i"] for r in got] == list(range(6))
        child.send_signal(stop)
        rest, err = child.communicate(timeout=LONG)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
    assert child.returncode == 0, err
    assert rest == "" and err == ""
