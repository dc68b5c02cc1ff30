"""`transit branch`, `transit merge` and `transit lineage`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import failed, ndjson, ok, records

import transit_arrow as ta


@pytest.fixture
def family(log_dir: Path) -> Path:
    """main 0..3; retry = main@1 + 1 record; retry/2 = retry@2 + 1 record; merged = concat of
    main and retry (base main@1)."""
    ok("append", log_dir, "main", stdin=records(3))
    ok("branch", log_dir, "retry", "--at", "main@1", "--actor", "bob", "--reason", "try again")
    ok("append", log_dir, "retry", stdin=records(1, start=10))
    ok("branch", log_dir, "retry/2", "--at", "retry@2", "--label", "k=v", "--label", "a=b c")
    ok("append", log_dir, "retry/2", stdin=records(1, start=20))
    ok("append", log_dir, "main", stdin=records(1, start=3))
    ok(
        "merge",
        log_dir,
        "merged",
        "main",
        "retry",
        "--policy",
        "concat",
        "--actor",
        "dee",
        "--reason",
        "combine both",
    )
    return log_dir


def test_branch_text_and_json(log_dir: Path) -> None:
    ok("append", log_dir, "main", stdin=records(3))
    out = ok("branch", log_dir, "b", "--at", "main@1", "--actor", "ada").stdout
    assert out.strip() == (
        "created branch 'b' of main@1 (generation 1); its own records start at offset 2"
    )
    info = json.loads(
        ok(
            "branch",
            log_dir,
            "c",
            "--at",
            "b@0",
            "--reason",
            "why not",
            "--label",
            "x=1",
            "-o",
            "json",
        ).stdout
    )
    assert info["name"] == "c" and info["kind"] == "branch"
    # A fork point inside the parent's inherited prefix is recorded as given.
    assert {k: info["parent"][k] for k in ("stream", "offset")} == {"stream": "b", "offset": 0}
    assert (info["next_offset"], info["generation"]) == (1, 0)
    assert (info["reason"], info["labels"], info["actor"]) == ("why not", {"x": "1"}, None)
    assert len(info["root"]) == 64
    ok("append", log_dir, "b", stdin=records(1, start=9))
    rows = ndjson(ok("read", log_dir, "b", "-o", "json"))
    assert [(r["_stream"], r["_offset"], r["i"]) for r in rows] == [
        ("main", 0, 0),
        ("main", 1, 1),
        ("b", 2, 9),
    ]


def test_branch_errors(log_dir: Path) -> None:
    ok("append", log_dir, "main", stdin=records(2))
    assert "has no offset 5" in failed("branch", log_dir, "b", "--at", "main@5")
    assert "stream 'mian' does not exist" in failed("branch", log_dir, "b", "--at", "mian@0")
    ok("branch", log_dir, "b", "--at", "main@0")
    assert "already exists" in failed("branch", log_dir, "b", "--at", "main@0")
    failed("branch", log_dir, "c", code=2)  # --at is required
    assert "KEY=VALUE" in failed("branch", log_dir, "c", "--at", "main@0", "--label", "x", code=2)


def test_merge_text_and_json(family: Path) -> None:
    rows = ndjson(ok("read", family, "merged", "-o", "json"))
    assert [r["i"] for r in rows] == [0, 1, 2, 3, 10]
    out = ok("merge", family, "pinned", "main", "retry@2").stdout
    assert out.strip() == (
        "created merge 'pinned' (pin) of main@3, retry@2, base main@1; next offset 2"
    )
    info = json.loads(
        ok(
            "merge",
            family,
            "m2",
            "retry",
            "main@2",
            "--policy",
            "interleave",
            "--base",
            "main@1",
            "-o",
            "json",
        ).stdout
    )
    assert (info["kind"], info["policy"], info["next_offset"]) == ("merge", "interleave", 4)
    assert [(p["stream"], p["offset"]) for p in info["parents"]] == [("retry", 2), ("main", 2)]
    assert (info["base"]["stream"], info["base"]["offset"]) == ("main", 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["main"], "a merge needs at least 2 parent heads, got 1"),
        (["main", "retry", "--policy", "fast_forward"], "fast_forward needs one parent"),
        (["main", "retry", "--policy", "zip"], "unknown merge policy 'zip'"),
        (["main", "retry", "--policy", "custom:mine"], "no merge resolver is registered"),
        (["main", "nope"], "stream 'nope' does not exist"),
    ],
)
def test_a_refused_merge_exits_1_with_the_library_message(
    family: Path, args: list[str], message: str
) -> None:
    err = failed("merge", family, "bad", *args)
    assert message in err
    with ta.open(family, create=False) as log:
        assert "bad" not in log.streams().column("name").to_pylist()  # nothing was written


def test_lineage_tree(family: Path) -> None:
    text = ok("lineage", family).stdout
    assert text.splitlines() == [
        "main  root  next=4",
        '├── retry @1  branch  next=3  actor=bob  reason="try again"',
        '│   ├── retry/2 @2  branch  next=4  labels=a="b c",k=v',
        "│   └── merged @2  merge(concat), listed under main",
        "└── merged @3  merge(concat) of main, retry (base main@1)  next=5  actor=dee  "
        'reason="combine both"',
    ]


def test_lineage_tree_of_several_roots_and_a_merge_with_branches(log_dir: Path) -> None:
    ok("append", log_dir, "b-root", stdin=records(2))
    ok("append", log_dir, "a-root", stdin=records(2))
    ok("branch", log_dir, "a1", "--at", "a-root@0")
    ok("append", log_dir, "a1", stdin=records(1))
    ok("merge", log_dir, "m", "a-root", "a1", "--policy", "concat")
    ok("branch", log_dir, "m1", "--at", "m@1")
    assert ok("lineage", log_dir).stdout.splitlines() == [
        "a-root  root  next=2",
        "├── a1 @0  branch  next=2",
        "│   └── m @1  merge(concat), listed under a-root",
        "└── m @1  merge(concat) of a-root, a1 (base a-root@0)  next=3",
        "    └── m1 @1  branch  next=2",
        "b-root  root  next=2",
    ]


def test_lineage_json_is_the_lineage_table(family: Path) -> None:
    rows = {r["name"]: r for r in json.loads(ok("lineage", family, "-o", "json").stdout)}
    assert sorted(rows) == ["main", "merged", "retry", "retry/2"]
    assert rows["retry/2"]["parent_stream"] == "retry" and rows["retry/2"]["parent_offset"] == 2
    assert rows["retry/2"]["labels"] == {"a": "b c", "k": "v"}
    merged = rows["merged"]
    assert (merged["kind"], merged["policy"], merged["base_stream"]) == ("merge", "concat", "main")
    assert [p["stream"] for p in merged["merge_parents"]] == ["main", "retry"]
    assert (merged["actor"], merged["reason"], merged["next_offset"]) == (
        "dee",
        "combine both",
        5,
    )


def test_lineage_of_an_empty_log(log_dir: Path) -> None:
    assert "no streams" in ok("lineage", log_dir).stdout
    assert json.loads(ok("lineage", log_dir, "-o", "json").stdout) == []
