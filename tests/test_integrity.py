"""Checkpoints and verification, including tampering with stored files (DESIGN §5, §10).

A small template log is built once per module; every tamper test works on a fresh copy of
it, changes one file (a flipped bit, a truncation, two files swapped) at positions Hypothesis
picks (derandomized, so runs are repeatable), and checks that `Log.verify` reports exactly
that file, with the expected and found hashes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transit_arrow as ta

HEX64 = re.compile(r"[0-9a-f]{64}")
TAMPER = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def fill(stream: ta.Stream, xs: range | list[int]) -> None:
    """Append one record per x and seal them."""
    for x in xs:
        stream.append({"x": x}, durability="memory")
    stream.flush()


@dataclass(frozen=True)
class Template:
    """A sealed log of four streams and what the tamper tests need to know about it.

    main: x 0..11 in 3 segments (generations 0..3); b: branch at main@5 plus 5 records in
    2 segments (generations 0..2); mc: concat merge of main and b (no segment); mi:
    interleave merge of main and b (one segment). Every reference pins the latest
    generation, so every commit file is part of every descendant's verified history.
    """

    root: Path
    checkpoints: dict[str, ta.Checkpoint]
    commits: dict[str, list[str]]  # stream -> commit paths, by generation
    segments: dict[str, list[str]]  # stream -> segment paths
    roots: dict[str, str]  # commit path -> its recorded root
    hashes: dict[str, str]  # segment path -> BLAKE3 of its bytes

    def owner(self, path: str) -> str:
        """The stream a commit or segment file belongs to."""
        files = self.commits if "/commits/" in path else self.segments
        return next(stream for stream, paths in files.items() if path in paths)


STREAMS = ("main", "b", "mc", "mi")
# Which streams' verification covers a stream's files (itself and its descendants).
COVERED_BY = {"main": STREAMS, "b": ("b", "mc", "mi"), "mc": ("mc",), "mi": ("mi",)}
DESCENDANTS = {"main": ("b", "mc", "mi"), "b": ("mc", "mi")}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Build the template log once per module."""
    root = tmp_path_factory.mktemp("template") / "log"
    with ta.open(root, segment_max_records=4) as log:
        main = log.create_stream("main")
        for chunk in (range(0, 4), range(4, 8), range(8, 12)):
            fill(main, chunk)
        b = log.branch("b", at="main@5")
        fill(b, [100, 101, 102, 103])
        fill(b, [104])
        log.merge("mc", ["main", "b"], policy="concat")
        log.merge("mi", ["main", "b"], policy="interleave")
        checkpoints = {name: log.stream(name).checkpoint() for name in STREAMS}
    commits = {s: sorted(_rel(root, (root / "streams" / s / "commits").iterdir())) for s in STREAMS}
    segments = {
        s: sorted(_rel(root, (root / "streams" / s / "segments").glob("*.parquet")))
        for s in STREAMS
        if (root / "streams" / s / "segments").exists()
    }
    assert [len(commits[s]) for s in STREAMS] == [4, 3, 1, 1]
    assert {s: len(p) for s, p in segments.items()} == {"main": 3, "b": 2, "mi": 1}
    roots = {p: json.loads((root / p).read_bytes())["root"] for ps in commits.values() for p in ps}
    hashes = {p: _hash(root / p) for ps in segments.values() for p in ps}
    return Template(root, checkpoints, commits, segments, roots, hashes)


def _rel(root: Path, paths: Iterator[Path]) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def _hash(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def copy_of(template: Template) -> Iterator[Path]:
    """A fresh copy of the template log, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="transit-tamper-"))
    try:
        root = folder / "log"
        shutil.copytree(template.root, root)
        yield root
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def flip(path: Path, position: int, bit: int) -> None:
    """Flip one bit of the file."""
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def truncate(path: Path, length: int) -> None:
    """Cut the file to `length` bytes."""
    path.write_bytes(path.read_bytes()[:length])


def swap(a: Path, b: Path) -> None:
    """Exchange the contents of two files."""
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


@st.composite
def damage(draw: st.DrawFn, sizes: dict[str, int]) -> tuple[str, str, int, int]:
    """(path, "flip" | "truncate", position or length, bit) for one of the given files."""
    path = draw(st.sampled_from(sorted(sizes)))
    kind = draw(st.sampled_from(["flip", "truncate"]))
    where = draw(st.integers(0, sizes[path] - 1))
    return path, kind, where, draw(st.integers(0, 7))


def apply(root: Path, path: str, kind: str, where: int, bit: int) -> None:
    """Damage `root/path` as drawn by `damage`."""
    if kind == "flip":
        flip(root / path, where, bit)
    else:
        truncate(root / path, where)


def sizes_of(template: Template, paths: list[str]) -> dict[str, int]:
    """The byte size of each of `paths` in the template."""
    return {p: (template.root / p).stat().st_size for p in paths}


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_json_round_trip(template: Template) -> None:
    """A checkpoint survives `to_json`/`from_json` and `to_dict`/`from_dict` unchanged; its
    JSON is canonical; malformed input raises InvalidInputError."""
    cp = template.checkpoints["b"]
    text = cp.to_json()
    assert ta.Checkpoint.from_json(text) == cp
    assert ta.Checkpoint.from_json(text.encode()) == cp
    assert ta.Checkpoint.from_dict(cp.to_dict()) == cp
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == {
        "stream": "b",
        "generation": 2,
        "head_offset": 10,
        "root": template.roots[template.commits["b"][2]],
        "kind": "manual",
        "created_at": cp.created_at,
    }
    with pytest.raises(ta.InvalidInputError, match="not valid JSON"):
        ta.Checkpoint.from_json("{nope")
    with pytest.raises(ta.InvalidInputError, match="not a checkpoint"):
        ta.Checkpoint.from_dict({"stream": "b"})


def test_checkpoints_table(tmp_path: Path) -> None:
    """`Log.checkpoints()` lists every recorded checkpoint (one stream's with a name) as an
    Arrow table of their fields; a repeated checkpoint of the same generation and kind is
    the earlier one, not a new row; bad kinds are refused."""
    with ta.open(tmp_path / "log") as log:
        main = log.create_stream("main")
        fill(main, [1, 2])
        first = main.checkpoint()
        assert main.checkpoint() == first
        fill(main, [3])
        second = main.checkpoint(kind="eval-start")
        fill(log.branch("b", at="main@0"), [9])
        third = log.stream("b").checkpoint(kind="release.1")
        table = log.checkpoints()
        assert table.column_names == [
            "stream",
            "generation",
            "head_offset",
            "root",
            "kind",
            "created_at",
        ]
        assert table.to_pylist() == [third.to_dict(), first.to_dict(), second.to_dict()]
        assert log.checkpoints("main").to_pylist() == [first.to_dict(), second.to_dict()]
        assert (first.generation, first.head_offset, second.generation, second.head_offset) == (
            1,
            1,
            2,
            2,
        )
        with pytest.raises(ta.InvalidInputError, match="checkpoint kind must be"):
            main.checkpoint(kind="no spaces")
    with ta.open(tmp_path / "log") as log:
        assert log.checkpoints().to_pylist() == table.to_pylist()


def test_checkpoint_still_verifies_after_many_later_commits(tmp_path: Path) -> None:
    """A checkpoint at generation g keeps verifying (shallow and deep) and keeps reading the
    same records after dozens of later commits and a reopen; deep verification hashes only
    the segments that generation references."""
    with ta.open(tmp_path / "log") as log:
        main = log.create_stream("main")
        fill(main, [0, 1, 2])
        cp = main.checkpoint()
        snapshot = main.at(cp).read()
        for x in range(3, 33):
            fill(main, [x])
        assert main.generation == cp.generation + 30
    with ta.open(tmp_path / "log") as log:
        for deep in (False, True):
            report = log.verify(cp, deep=deep)
            assert report.ok, str(report)
            assert report.target == f"main@g{cp.generation}"
            checks = [(e.check, e.ok) for e in report.entries]
            # Every field of the checkpoint is checked: its head offset, then its root.
            assert checks == [("commits", True)] + [("segment", True)] * deep + [
                ("checkpoint", True),
                ("checkpoint", True),
            ]
            assert "head offset" in report.entries[-2].detail
            assert report.entries[-1].expected == report.entries[-1].found == cp.root
        assert log.stream("main").at(cp).read().equals(snapshot)


# --- reports ------------------------------------------------------------------------------------


def test_verify_report_lists_every_stream_pin_and_segment(template: Template) -> None:
    """`verify` of a merge reports one `commits` entry per stream of its history, one `pin`
    entry per reference, and with `deep=True` one `segment` entry per file the history
    uses (each once); `to_arrow()` and `str()` present the same entries."""
    with copy_of(template) as root, ta.open(root) as log:
        shallow = log.verify("mc")
        assert shallow.ok
        assert shallow.target == "mc"
        assert shallow.deep is False
        commits = {e.stream: e for e in shallow.entries if e.check == "commits"}
        assert sorted(commits) == ["b", "main", "mc"]
        assert commits["main"].object == "streams/main/commits"
        assert commits["main"].detail == "root chain of generations 0..3 recomputed"
        assert commits["main"].found == template.roots[template.commits["main"][-1]]
        pins = sorted((e.stream, e.detail) for e in shallow.entries if e.check == "pin")
        assert pins == [
            ("b", "parent main@5 pinned at generation 3"),
            ("mc", "base main@5 pinned at generation 3"),
            ("mc", "merge_parent b@10 pinned at generation 2"),
            ("mc", "merge_parent main@11 pinned at generation 3"),
        ]
        assert all(e.expected == e.found for e in shallow.entries if e.check == "pin")
        assert len(shallow.entries) == 3 + 4

        deep = log.verify(log.stream("mi"), deep=True)
        assert deep.ok
        segments = [e for e in deep.entries if e.check == "segment"]
        every_segment = [p for ps in template.segments.values() for p in ps]
        assert sorted(e.object for e in segments) == sorted(every_segment)
        assert all(e.expected == e.found == template.hashes[e.object] for e in segments)

        table = deep.to_arrow()
        assert table.column_names == [
            "stream",
            "check",
            "ok",
            "object",
            "detail",
            "expected",
            "found",
        ]
        assert table.to_pylist() == [asdict(e) for e in deep.entries]
        text = str(deep).splitlines()
        assert text[0] == "verify mi: OK"
        assert len(text) == 1 + len(deep.entries)
        assert all(line.startswith("  ok   ") for line in text[1:])
        assert deep.to_dict()["ok"] is True


def test_verify_rejects_unknown_targets(template: Template) -> None:
    """Verifying an unknown stream raises StreamNotFoundError naming near names; a target
    that is not a name, Stream or Checkpoint raises InvalidInputError."""
    with copy_of(template) as root, ta.open(root) as log:
        with pytest.raises(ta.StreamNotFoundError, match=r"'mian'.*did you mean 'main'"):
            log.verify("mian")
        with pytest.raises(ta.InvalidInputError, match="stream name, a Stream or a Checkpoint"):
            log.verify(42)  # type: ignore[arg-type]


def test_verify_checkpoint_with_forged_root_fails(template: Template) -> None:
    """A checkpoint whose root is not the chain's fails verification with a `checkpoint`
    entry naming the commit and both roots, and `str(report)` says FAILED."""
    cp = template.checkpoints["main"]
    forged = ta.Checkpoint(cp.stream, cp.generation, cp.head_offset, "ab" * 32)
    with copy_of(template) as root, ta.open(root) as log:
        report = log.verify(forged)
        assert not report.ok
        [failure] = report.failures
        assert (failure.check, failure.object) == ("checkpoint", template.commits["main"][-1])
        assert (failure.expected, failure.found) == ("ab" * 32, cp.root)
        assert str(report).startswith("verify main@g3: FAILED")
        assert f"expected {'ab' * 32}, found {cp.root}" in str(report)


# --- tampering ----------------------------------------------------------------------------------


def assert_names_only(report: ta.VerifyReport, paths: set[str], check: str) -> None:
    """The report failed, and every failure is a `check` entry about one of `paths` with
    two different hashes."""
    assert not report.ok
    assert report.failures, str(report)
    for entry in report.failures:
        assert entry.check == check, entry
        assert entry.object in paths, entry
        assert entry.found is not None and HEX64.fullmatch(entry.found), entry
        assert entry.expected != entry.found, entry


@TAMPER
@given(st.data())
def test_deep_verify_reports_any_damaged_segment(template: Template, data: st.DataObject) -> None:
    """A flipped bit or a truncation anywhere in any segment is reported by deep
    verification of the owning stream and of every stream whose history uses the segment:
    exactly one failure, naming the file, with the recorded BLAKE3 and the one found."""
    paths = [p for ps in template.segments.values() for p in ps]
    path, kind, where, bit = data.draw(damage(sizes_of(template, paths)))
    owner = template.owner(path)
    with copy_of(template) as root:
        apply(root, path, kind, where, bit)
        damaged = _hash(root / path)
        with ta.open(root) as log:
            for name in COVERED_BY[owner]:
                report = log.verify(name, deep=True)
                assert_names_only(report, {path}, "segment")
                [failure] = report.failures
                assert (failure.expected, failure.found) == (template.hashes[path], damaged)
                assert failure.stream == owner


def test_deep_verify_reports_swapped_segments(template: Template) -> None:
    """Swapping the contents of two segment files (of one stream, or of two) is reported
    for both files."""
    pairs = [
        (template.segments["main"][0], template.segments["main"][1]),
        (template.segments["main"][2], template.segments["b"][0]),
        (template.segments["b"][1], template.segments["mi"][0]),
    ]
    for a, b in pairs:
        with copy_of(template) as root:
            swap(root / a, root / b)
            with ta.open(root) as log:
                report = log.verify("mi", deep=True)
                assert_names_only(report, {a, b}, "segment")
                assert {e.object for e in report.failures} == {a, b}


def _ancestor_commits(template: Template) -> list[str]:
    return [p for s in DESCENDANTS for p in template.commits[s]]


@TAMPER
@given(st.data())
def test_verify_reports_damaged_commit_of_ancestor_or_merge_parent(
    template: Template, data: st.DataObject
) -> None:
    """A flipped bit or a truncation anywhere in a commit of a branch's ancestor or of a
    merge's parent is reported, by shallow and deep verification of every descendant, as a
    `commits` failure naming that file."""
    path, kind, where, bit = data.draw(damage(sizes_of(template, _ancestor_commits(template))))
    deep = data.draw(st.booleans())
    owner = template.owner(path)
    with copy_of(template) as root:
        apply(root, path, kind, where, bit)
        with ta.open(root) as log:
            for name in DESCENDANTS[owner]:
                report = log.verify(name, deep=deep)
                assert_names_only(report, {path}, "commits")
                assert {e.stream for e in report.failures} == {owner}


def test_verify_reports_swapped_commits(template: Template) -> None:
    """Swapping two commit files of an ancestor (or replacing one with another stream's) is
    reported as a broken chain at one of the swapped files."""
    main, b = template.commits["main"], template.commits["b"]
    for x, y, target in [(main[1], main[2], "b"), (main[0], main[3], "mc"), (b[1], main[1], "mi")]:
        with copy_of(template) as root:
            swap(root / x, root / y)
            with ta.open(root) as log:
                assert_names_only(log.verify(target), {x, y}, "commits")


@TAMPER
@given(st.data())
def test_verify_checkpoint_reports_damaged_commit_of_its_own_stream(
    template: Template, data: st.DataObject
) -> None:
    """A flipped bit or a truncation anywhere in any commit of a stream is reported when
    verifying a checkpoint of that stream (shallow or deep), naming the file."""
    paths = [p for ps in template.commits.values() for p in ps]
    path, kind, where, bit = data.draw(damage(sizes_of(template, paths)))
    owner = template.owner(path)
    with copy_of(template) as root:
        apply(root, path, kind, where, bit)
        with ta.open(root) as log:
            report = log.verify(template.checkpoints[owner], deep=data.draw(st.booleans()))
            assert_names_only(report, {path}, "commits")


def test_verify_by_name_reports_damaged_commit_of_the_stream_itself(template: Template) -> None:
    """`verify(name)` returns a failed report naming a damaged commit of the verified stream
    itself, like it does for ancestors' commits."""
    path = template.commits["main"][1]
    with copy_of(template) as root:
        flip(root / path, 40, 0)
        with ta.open(root) as log:
            assert_names_only(log.verify("main"), {path}, "commits")


@pytest.mark.parametrize("generation", [0, 2])
def test_damaged_commit_entry_expects_its_recorded_root(
    template: Template, generation: int
) -> None:
    """The failure entry of a damaged commit carries the root the rest of the chain expects
    that commit to have (what the next commit's prev_root records)."""
    path = template.commits["main"][generation]
    with copy_of(template) as root:
        flip(root / path, 60, 1)
        with ta.open(root) as log:
            [failure] = log.verify("b").failures
            assert failure.object == path
            assert failure.expected == template.roots[path]


def test_report_text_names_the_damaged_file(template: Template) -> None:
    """The text form of a failed report names the damaged file."""
    path = template.segments["main"][1]
    with copy_of(template) as root:
        flip(root / path, 100, 3)
        with ta.open(root) as log:
            assert path in str(log.verify("main", deep=True))
