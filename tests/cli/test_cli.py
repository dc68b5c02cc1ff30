"""The `transit` CLI, driven through click's runner against temporary folders."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cli_helpers import failed, ndjson, ok, run

import transit_arrow as ta

EVENTS = "\n".join(
    [
        '{"user": "ada", "n": 1, "score": 0.5}',
        "",
        '{"user": "bob", "n": 2, "score": 1.5, "_headers": {"trace": "t1"}}',
        '{"user": "cy", "n": 3, "score": null, "_timestamp": "2024-05-01T12:00:00Z"}',
    ]
)


def next_offset(log_dir: Path, stream: str) -> int:
    with ta.open(log_dir, create=False) as log:
        return log.stream(stream).next_offset


@pytest.fixture
def events(log_dir: Path) -> Path:
    """A log whose stream 'events' holds the three records of EVENTS."""
    ok("append", log_dir, "events", stdin=EVENTS)
    return log_dir


# --- init and streams ---------------------------------------------------------------------------


def test_init_creates_a_log_and_leaves_an_existing_one_alone(tmp_path: Path) -> None:
    path = tmp_path / "new"
    assert "created an empty log" in ok("init", path).stdout
    assert (path / "_transit.json").exists()
    again = json.loads(ok("init", path, "--output", "json").stdout)
    assert again == {"uri": path.resolve().as_uri(), "created": False, "streams": 0}


def test_init_refuses_a_folder_that_is_not_a_log(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert "not a transit-arrow log" in failed("init", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_commands_on_a_missing_log_suggest_init(tmp_path: Path) -> None:
    err = failed("streams", tmp_path / "missing")
    assert "no transit-arrow log" in err and "transit init" in err
    assert not (tmp_path / "missing").exists()


def test_streams_text_and_json(events: Path) -> None:
    ok("append", events, "other/sub", stdin='{"x": 1}')
    text = ok("streams", events).stdout
    assert text.splitlines()[0].split()[:3] == ["name", "kind", "next_offset"]
    assert "events" in text and "other/sub" in text
    rows = json.loads(ok("streams", events, "-o", "json").stdout)
    assert [(r["name"], r["next_offset"], r["kind"]) for r in rows] == [
        ("events", 3, "root"),
        ("other/sub", 1, "root"),
    ]
    assert all(len(r["root"]) == 64 for r in rows)


def test_streams_of_an_empty_log(log_dir: Path) -> None:
    assert "no streams" in ok("streams", log_dir).stdout
    assert json.loads(ok("streams", log_dir, "-o", "json").stdout) == []


# --- append -----------------------------------------------------------------------------------


def test_append_ndjson_from_stdin_then_read_json(log_dir: Path) -> None:
    result = ok("append", log_dir, "events", "-o", "json", stdin=EVENTS)
    assert json.loads(result.stdout) == {
        "stream": "events",
        "records": 3,
        "first_offset": 0,
        "last_offset": 2,
        "durability": "local",
        "created": True,
    }
    rows = ndjson(ok("read", log_dir, "events", "-o", "json"))
    assert [(r["_offset"], r["user"], r["n"], r["score"]) for r in rows] == [
        (0, "ada", 1, 0.5),
        (1, "bob", 2, 1.5),
        (2, "cy", 3, None),
    ]
    assert [r["_headers"] for r in rows] == [None, {"trace": "t1"}, None]
    stamps = [dt.datetime.fromisoformat(r["_timestamp"]) for r in rows]
    assert all(s.utcoffset() == dt.timedelta(0) for s in stamps)
    assert stamps[2] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert stamps[0].year >= 2024  # the lines without a `_timestamp` were stamped at append


def test_append_text_output_names_the_offsets(events: Path) -> None:
    out = ok("append", events, "events", stdin='{"user": "dee", "n": 4}\n').stdout
    assert out.strip() == "appended 1 record to 'events': offsets 3..3, durability local"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"user": "eve", "n": ', "line 3: not valid JSON"),
        ("[1, 2]", "line 3: expected a JSON object, got list"),
        ('{"n": 1, "_timestamp": "yesterday"}', "line 3: '_timestamp' 'yesterday'"),
    ],
)
def test_a_bad_ndjson_line_appends_nothing(events: Path, bad_line: str, message: str) -> None:
    lines = ['{"user": "dan", "n": 4}', "", bad_line, '{"user": "fay", "n": 6}']
    err = failed("append", events, "events", "--batch-size", "1", stdin="\n".join(lines))
    assert message in err and "nothing was appended" in err
    assert next_offset(events, "events") == 3


def test_a_bad_input_does_not_create_the_stream(log_dir: Path) -> None:
    failed("append", log_dir, "fresh", stdin="not json\n")
    assert json.loads(ok("streams", log_dir, "-o", "json").stdout) == []


def test_no_create_refuses_a_missing_stream(events: Path) -> None:
    err = failed("append", events, "evnts", "--no-create", stdin='{"n": 1}')
    assert "stream 'evnts' does not exist" in err and "did you mean 'events'" in err


def test_schema_conflict_is_a_clean_error(events: Path) -> None:
    err = failed("append", events, "events", stdin='{"n": "four"}')
    assert "'n'" in err
    assert next_offset(events, "events") == 3


def test_a_failing_later_batch_reports_what_was_appended(log_dir: Path, tmp_path: Path) -> None:
    # The log keeps microseconds, so the second one-record batch, whose `_timestamp` has
    # nanoseconds, is refused after the first was appended.
    stamps = pa.array([1_700_000_000_000_000_000, 1_700_000_000_000_000_001], pa.timestamp("ns"))
    path = tmp_path / "stamped.parquet"
    pq.write_table(pa.table({"_timestamp": stamps, "n": [1, 2]}), path)
    result = run("append", log_dir, "s", path, "--batch-size", "1")
    assert result.exit_code == 1
    note, error = result.stderr.splitlines()
    assert note == "note: appended 1 record (offsets 0..0) before the error"
    assert error.startswith("error: ") and "_timestamp" in error
    assert next_offset(log_dir, "s") == 1


def test_append_in_batches_with_a_durability(log_dir: Path) -> None:
    lines = "\n".join(json.dumps({"i": i}) for i in range(5))
    args = ("append", log_dir, "s", "--batch-size", "2", "--durability", "memory", "-o", "json")
    result = json.loads(ok(*args, stdin=lines).stdout)
    assert (result["first_offset"], result["last_offset"]) == (0, 4)
    assert result["durability"] == "memory"
    # Closing the log at the end of the command sealed what was only in memory.
    assert [r["i"] for r in ndjson(ok("read", log_dir, "s", "-o", "json"))] == list(range(5))


def test_empty_input_appends_nothing(log_dir: Path) -> None:
    result = json.loads(ok("append", log_dir, "s", "-o", "json", stdin="\n\n").stdout)
    assert result["records"] == 0 and result["first_offset"] is None
    assert "0 records" in ok("append", log_dir, "s", stdin="").stdout


def test_append_csv_file(log_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("name,age,active\nada,36,true\nbob,41,false\n")
    ok("append", log_dir, "people", csv)
    # Without the extension, --format says what the file holds; `age` keeps its int type.
    other = tmp_path / "more.txt"
    other.write_text("name,age,active\ncy,29,true\n")
    ok("append", log_dir, "people", other, "--format", "csv")
    rows = ndjson(ok("read", log_dir, "people", "-o", "json", "--columns", "name,age,active"))
    assert rows == [
        {"name": "ada", "age": 36, "active": True},
        {"name": "bob", "age": 41, "active": False},
        {"name": "cy", "age": 29, "active": True},
    ]


def test_a_missing_input_file_is_a_usage_error(log_dir: Path, tmp_path: Path) -> None:
    assert "No such file" in failed("append", log_dir, "s", tmp_path / "nope.csv", code=2)


def test_parquet_round_trip(events: Path, tmp_path: Path) -> None:
    exported = tmp_path / "events.parquet"
    ok("read", events, "events", "-o", "parquet", "--out", exported)
    assert pq.read_table(exported).num_rows == 3
    # The export carries `_stream` and `_offset`; append drops them (the log assigns them)
    # and keeps `_timestamp` and `_headers`.
    ok("append", events, "copy", exported)
    original = ndjson(ok("read", events, "events", "-o", "json"))
    copy = ndjson(ok("read", events, "copy", "-o", "json"))
    assert [{**r, "_stream": "events"} for r in copy] == original
    # Without --out, Parquet goes to stdout (when it is not a terminal).
    piped = ok("read", events, "copy", "-o", "parquet", "--columns", "_offset,user").stdout_bytes
    assert pq.read_table(io.BytesIO(piped)).to_pydict() == {
        "_offset": [0, 1, 2],
        "user": ["ada", "bob", "cy"],
    }


# --- read -------------------------------------------------------------------------------------


def test_read_text_table_with_limit_and_range(log_dir: Path) -> None:
    ok("append", log_dir, "s", stdin="\n".join(json.dumps({"i": i}) for i in range(30)))
    lines = ok("read", log_dir, "s").stdout.splitlines()
    assert lines[0].split() == ["_stream", "_offset", "_timestamp", "_headers", "i"]
    assert len(lines) == 2 + 20 + 1 and lines[-1].startswith("(first 20 records")
    window = ok("read", log_dir, "s", "--start", "5", "--end", "8", "--columns", "_offset,i")
    assert [line.split() for line in window.stdout.splitlines()[2:]] == [
        ["5", "5"],
        ["6", "6"],
        ["7", "7"],
        ["(3", "records)"],
    ]
    rows = ndjson(ok("read", log_dir, "s", "-o", "json", "--start", "28"))
    assert [r["i"] for r in rows] == [28, 29]
    assert len(ndjson(ok("read", log_dir, "s", "-o", "json", "--limit", "4"))) == 4


def test_read_json_encodes_binary_as_base64(log_dir: Path) -> None:
    with ta.open(log_dir, create=False) as log:
        log.create_stream("blobs").append(b"\x00\xffraw")
    (row,) = ndjson(ok("read", log_dir, "blobs", "-o", "json"))
    assert base64.b64decode(row["payload"]) == b"\x00\xffraw"


def test_read_json_writes_to_a_file(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    assert ok("read", events, "events", "-o", "json", "--out", out).stdout == ""
    assert len(out.read_text().splitlines()) == 3


def test_unknown_stream_is_a_clean_error(events: Path) -> None:
    err = failed("read", events, "event")
    assert err.startswith("error: stream 'event' does not exist") and "'events'" in err


def test_unknown_column_is_a_clean_error(events: Path) -> None:
    assert "no column(s) ['nope']" in failed("read", events, "events", "--columns", "user,nope")


def test_usage_errors_exit_2(events: Path) -> None:
    failed("read", events, code=2)
    failed("read", events, "events", "--output", "yaml", code=2)
    failed("read", events, "events", "--start", "-1", code=2)


# --- demo -------------------------------------------------------------------------------------


def test_demo_runs_and_can_run_again(tmp_path: Path) -> None:
    # The demo runs the main job (issue 14): tasks with attempts, retries and critiques as
    # branches, best-of merges, an incremental metric, SQL across branches, verified
    # checkpoints and the HTML report. (It replaced the append-and-read-back demo.)
    path = tmp_path / "demo"
    first = json.loads(ok("demo", path, "--records", "640", "-o", "json").stdout)
    assert first["created_log"] is True
    assert (first["tasks"], first["first_task"], first["last_task"]) == (
        4,
        "task-0000",
        "task-0003",
    )
    assert first["attempts"] == 8 and first["merges"] == first["checkpoints_verified"] == 4
    assert first["trace_records"] > first["records"] == 640
    assert first["bytes_on_disk"] >= first["segment_bytes"] > 0
    _halfway, end = first["refreshes"]
    assert end["incremental"] and end["reused_checkpoint"] is not None
    assert {r["model"] for r in first["sql_rows"]} == {"model-small", "model-large"}
    assert (path / "report.html").is_file()
    text = ok("demo", path, "--records", "320").stdout
    assert "existing log" in text and "task-0004..task-0005" in text
    assert "pass rate by model" in text and "transit lineage" in text
    names = [r["name"] for r in json.loads(ok("streams", path, "-o", "json").stdout)]
    assert "evals/_scores" in names and sum(n.endswith("/best") for n in names) == 6


def test_demo_refuses_to_clobber_a_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert "not a transit-arrow log" in failed("demo", tmp_path, "--records", "10")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_trace_events_are_realistic() -> None:
    from transit_arrow.cli.demo import trace_events

    table = trace_events(1000, first_task=7)
    assert table.num_rows == 1000
    assert table.column("task_id")[0].as_py() == "task-0000007"
    lengths = pc.binary_length(table.column("text")).to_pylist()
    assert min(lengths) >= 200 and max(lengths) <= 320
    tools = table.filter(pc.field("role") == "tool")
    assert tools.column("tool").null_count == 0
    assert table.column("tool").null_count == table.num_rows - tools.num_rows


# --- the installed console script -------------------------------------------------------------


def test_installed_console_script(tmp_path: Path) -> None:
    script = shutil.which("transit") or str(Path(sys.executable).with_name("transit"))
    done = subprocess.run(
        [script, "demo", str(tmp_path / "demo"), "--records", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and done.stderr == ""
    missing = subprocess.run(
        [script, "read", str(tmp_path / "demo"), "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: stream 'nope' does not exist")
