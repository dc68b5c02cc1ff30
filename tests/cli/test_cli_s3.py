"""The CLI against a real S3-compatible server (moto), through `--storage-option`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import failed, ndjson, ok, records


def _flags(options: dict[str, Any], local_dir: Path) -> list[str]:
    flags = [f"--storage-option={key}={value}" for key, value in options.items()]
    return [*flags, "--local-dir", str(local_dir)]


@pytest.mark.s3
def test_cli_round_trip_on_s3(s3_endpoint: Any, tmp_path: Path) -> None:
    uri = f"s3://{s3_endpoint.create_bucket()}/log"
    flags = _flags(s3_endpoint.storage_options, tmp_path / "work")

    assert "created an empty log at s3://" in ok("init", uri, *flags).stdout
    ok("append", uri, "main", *flags, stdin=records(3))
    ok("append", uri, "main", *flags, stdin=records(2, start=3))
    ok("branch", uri, "b", "--at", "main@1", "--actor", "ci", *flags)
    ok("append", uri, "b", *flags, stdin=records(1, start=10))
    rows = ndjson(ok("read", uri, "b", "-o", "json", *flags))
    assert [(r["_stream"], r["_offset"], r["i"]) for r in rows] == [
        ("main", 0, 0),
        ("main", 1, 1),
        ("b", 2, 10),
    ]
    assert ok("lineage", uri, *flags).stdout.splitlines() == [
        "main  root  next=5",
        "└── b @1  branch  next=3  actor=ci",
    ]
    assert ok("verify", uri, "b", "--deep", *flags).stdout.startswith("verify b: OK")

    # A second machine: nothing cached, every segment fetched and checked.
    restored = tmp_path / "restored"
    s3_only = _flags(s3_endpoint.storage_options, restored)[:-2]
    summary = json.loads(ok("restore", uri, restored, "-o", "json", *s3_only).stdout)
    assert (summary["streams"], summary["segments"], summary["fetched"]) == (2, 3, 3)
    assert summary["fetched_bytes"] > 0 and summary["verified"] == {"b": True, "main": True}
    assert summary["ok"] is True
    assert len(list((restored / "cache").rglob("*.parquet"))) == 3
    text = ok("restore", uri, restored, *s3_only).stdout  # already there: nothing to fetch
    assert "3 needed: 0 fetched (0 B) and checked against their BLAKE3 hashes, 3 already" in text

    # A misspelt option is a clean error.
    assert "unknown S3 storage option 'colour'" in failed(
        "streams", uri, "--storage-option", "colour=blue", *flags
    )


def test_storage_options_are_refused_for_a_local_log(log_dir: Path) -> None:
    err = failed("streams", log_dir, "--storage-option", "key=x")
    assert "storage_options are only used by s3:// URIs" in err
    assert "KEY=VALUE" in failed("streams", log_dir, "--storage-option", "novalue", code=2)


def test_local_dir_holds_the_heads(tmp_path: Path) -> None:
    log, work = tmp_path / "log", tmp_path / "work"
    ok("init", log, "--local-dir", work)
    ok("append", log, "s", "--durability", "memory", "--local-dir", work, stdin=records(2))
    assert work.is_dir() and not (log / "_local").exists()
    assert len(ndjson(ok("read", log, "s", "-o", "json", "--local-dir", work))) == 2
