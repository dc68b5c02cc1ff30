"""`transit checkpoint`, `verify`, `restore` and `gc`."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from cli_helpers import failed, ok, records, run

import transit_arrow as ta


@pytest.fixture
def sealed(log_dir: Path) -> Path:
    """A log: main holds 0..4 in two segments; b is a branch of main@2 with one segment."""
    ok("append", log_dir, "main", stdin=records(3))
    ok("append", log_dir, "main", stdin=records(2, start=3))
    ok("branch", log_dir, "b", "--at", "main@2")
    ok("append", log_dir, "b", stdin=records(1, start=9))
    return log_dir


def segments(log_dir: Path, stream: str) -> list[Path]:
    return sorted((log_dir / "streams" / stream / "segments").glob("*.parquet"))


def flip(path: Path, position: int) -> None:
    """Flip the low bit of one byte of the file."""
    data = bytearray(path.read_bytes())
    data[position] ^= 1
    path.write_bytes(bytes(data))


def test_checkpoint_text_and_json(sealed: Path) -> None:
    lines = ok("checkpoint", sealed, "main", "--kind", "eval-start").stdout.splitlines()
    assert lines[0].startswith("checkpoint 'eval-start' of 'main' at generation 2 (5 records")
    cp = ta.Checkpoint.from_json(lines[1])
    assert (cp.stream, cp.generation, cp.head_offset, cp.kind) == ("main", 2, 4, "eval-start")
    again = json.loads(
        ok("checkpoint", sealed, "main", "--kind", "eval-start", "-o", "json").stdout
    )
    assert again == cp.to_dict()  # the same claim, recorded once
    assert "checkpoint kind must be" in failed("checkpoint", sealed, "main", "--kind", "a b")
    assert "does not exist" in failed("checkpoint", sealed, "nope")


def test_verify_a_stream_and_a_checkpoint(sealed: Path, tmp_path: Path) -> None:
    text = ok("verify", sealed, "b").stdout
    assert text.startswith("verify b: OK")
    assert "root chain of generations 0..1 recomputed" in text and "pin" in text
    report = json.loads(ok("verify", sealed, "b", "--deep", "-o", "json").stdout)
    assert report["ok"] is True and report["deep"] is True
    checks = [(e["stream"], e["check"]) for e in report["entries"]]
    # b pins main at its latest generation: both of main's segments are part of the claim.
    assert checks.count(("main", "segment")) == 2 and checks.count(("b", "segment")) == 1

    cp_json = ok("checkpoint", sealed, "main", "-o", "json").stdout
    cp_file = tmp_path / "cp.json"
    cp_file.write_text(cp_json)
    ok("append", sealed, "main", stdin=records(1, start=5))  # later commits change nothing
    for source in (str(cp_file), cp_json):
        out = ok("verify", sealed, "--checkpoint", source).stdout
        assert out.startswith("verify main@g2: OK") and "checkpoint root" in out
    assert ok("verify", sealed, "--checkpoint", "-", stdin=cp_json).stdout.startswith("verify")
    # The text output of `transit checkpoint`, saved to a file, works too.
    saved = tmp_path / "saved.txt"
    saved.write_text(ok("checkpoint", sealed, "b").stdout)
    assert ok("verify", sealed, "--checkpoint", saved).stdout.startswith("verify b@g1: OK")


def test_verify_without_a_stream_checks_every_stream(sealed: Path) -> None:
    out = ok("verify", sealed).stdout
    assert out.startswith("verify *: OK")
    report = json.loads(ok("verify", sealed, "--deep", "-o", "json").stdout)
    assert report["ok"] is True and report["orphaned_heads"] == []
    assert {e["stream"] for e in report["entries"]} >= {"main", "b"}
    seg = segments(sealed, "b")[0]
    flip(seg, seg.stat().st_size // 2)
    ok("verify", sealed)  # shallow: commits only
    result = run("verify", sealed, "--deep")
    assert result.exit_code == 1 and "FAIL segment    b: BLAKE3" in result.stdout
    assert result.stderr.startswith("error: verification FAILED: 1 check failed")


def test_verify_usage_errors(sealed: Path, tmp_path: Path) -> None:
    failed("verify", sealed, "main", "--checkpoint", "{}", code=2)
    assert "neither checkpoint JSON" in failed(
        "verify", sealed, "--checkpoint", tmp_path / "missing.json", code=2
    )
    assert "not a checkpoint" in failed("verify", sealed, "--checkpoint", '{"stream": "main"}')


def test_verify_fails_on_a_tampered_segment_with_deep(sealed: Path) -> None:
    seg = segments(sealed, "main")[0]
    flip(seg, seg.stat().st_size // 2)
    # Shallow verification reads commits only; the segment's damage needs --deep.
    ok("verify", sealed, "b")
    result = run("verify", sealed, "b", "--deep")
    assert result.exit_code == 1
    assert result.stdout.startswith("verify b: FAILED")
    assert f"FAIL segment    main: BLAKE3 of the file bytes [streams/main/segments/{seg.name}]" in (
        result.stdout
    )
    assert result.stderr == "error: verification FAILED: 1 check failed (b)\n"
    report = json.loads(run("verify", sealed, "b", "--deep", "-o", "json").stdout)
    (bad,) = [e for e in report["entries"] if not e["ok"]]
    assert report["ok"] is False and bad["object"].endswith(seg.name)
    assert bad["expected"] != bad["found"]


def test_verify_fails_on_a_tampered_commit(sealed: Path) -> None:
    commit = sealed / "streams" / "main" / "commits" / f"{1:020d}.json"
    flip(commit, 40)
    result = run("verify", sealed, "b")
    assert result.exit_code == 1 and "FAIL commits    main: commit 1" in result.stdout
    assert "verification FAILED" in result.stderr


def test_restore_a_local_log(sealed: Path, tmp_path: Path) -> None:
    text = ok("restore", sealed, tmp_path / "restored").stdout
    assert text.splitlines()[1:] == [
        "  streams    2",
        "  segments   3 needed: read in place (a local log)",
        text.splitlines()[3],
        "  verified   commit chains of 2 streams: all OK",
    ]
    summary = json.loads(ok("restore", sealed, tmp_path / "restored", "-o", "json").stdout)
    assert summary["verified"] == {"b": True, "main": True} and summary["ok"] is True
    assert (summary["streams"], summary["segments"], summary["fetched"]) == (2, 3, 0)
    other = tmp_path / "other"
    failed("restore", sealed, tmp_path / "restored", "--local-dir", other, code=2)


def test_restore_stops_at_a_damaged_commit(sealed: Path, tmp_path: Path) -> None:
    # Fetching needs every stream's commits: a damaged one stops restore before the summary.
    flip(sealed / "streams" / "b" / "commits" / f"{1:020d}.json", 50)
    result = run("restore", sealed, tmp_path / "restored")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: verification FAILED while fetching: commit ")
    assert "streams/b/commits/00000000000000000001.json: root mismatch" in result.stderr


def test_restore_reports_a_rewritten_parent_history(tmp_path: Path) -> None:
    """Each commit chain is intact, but b's pinned parent root no longer matches main's."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    ok("init", mine)
    ok("append", mine, "main", stdin=records(2))
    ok("init", theirs)
    ok("append", theirs, "main", stdin=records(2, start=5))
    ok("branch", mine, "b", "--at", "main@0")
    shutil.rmtree(mine / "streams" / "main")
    shutil.copytree(theirs / "streams" / "main", mine / "streams" / "main")
    result = run("restore", mine, tmp_path / "restored")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "  verified   commit chains of 2 streams: FAILED for b" in lines
    assert "verify b: FAILED" in lines
    assert any(line.startswith("  FAIL pin        b: parent main@0") for line in lines)
    assert result.stderr == "error: verification FAILED: 1 check failed (b)\n"
    summary = json.loads(run("restore", mine, tmp_path / "restored", "-o", "json").stdout)
    assert summary["verified"] == {"b": False, "main": True} and summary["ok"] is False


def test_gc_removes_orphans_only(sealed: Path) -> None:
    folder = sealed / "streams" / "main" / "segments"
    orphan = folder / f"{99:020d}-{99:020d}-0000000000000000.parquet"
    orphan.write_bytes(b"not referenced")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    young = folder / f"{98:020d}-{98:020d}-0000000000000000.parquet"
    young.write_bytes(b"being committed")

    dry = ok("gc", sealed, "--dry-run").stdout.splitlines()
    assert dry[0] == (
        "would remove 1 orphaned segment file (14 B); 3 segments referenced; kept 1 younger "
        "than 3600 s"
    )
    assert dry[1] == f"  streams/main/segments/{orphan.name}"
    assert orphan.exists()
    report = json.loads(ok("gc", sealed, "--min-age", "60", "-o", "json").stdout)
    assert report["removed"] == [f"streams/main/segments/{orphan.name}"]
    assert (report["removed_bytes"], report["referenced"], report["dry_run"]) == (14, 3, False)
    assert len(report["kept_young"]) == 1
    assert not orphan.exists() and young.exists()
    ok("verify", sealed, "b", "--deep")  # nothing referenced was touched
    assert "removed 0 orphaned" in ok("gc", sealed).stdout
