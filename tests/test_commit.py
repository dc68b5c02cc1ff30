"""Commit log: canonical JSON, BLAKE3 roots, the hash chain, conflicts, manifests (DESIGN §5)."""

from __future__ import annotations

import json
from typing import Any

import blake3
import pyarrow as pa
import pytest

from transit_arrow.commit import CommitLog, canonical, compute_root
from transit_arrow.errors import CommitConflictError, IntegrityError
from transit_arrow.manifest import Manifest, SegmentRef
from transit_arrow.record import schema_to_json
from transit_arrow.storage import MemoryStore

WRITER = {"id": "w1", "epoch": 0, "host": "test", "pid": 1}
CREATE = {
    "type": "create",
    "kind": "root",
    "parent": None,
    "merge": None,
    "schema": None,
    "metadata": {"actor": "tests", "reason": "é", "labels": {}},
    "created_at": "2024-01-01T00:00:00.000000Z",
    "start_offset": 0,
}


def _segment(first: int, last: int, name: str = "s") -> dict[str, Any]:
    return SegmentRef(
        path=f"streams/main/segments/{name}.parquet",
        first_offset=first,
        last_offset=last,
        records=last - first + 1,
        bytes=100,
        blake3="0" * 64,
        min_timestamp=0,
        max_timestamp=1,
    ).to_action()


@pytest.fixture
def store() -> MemoryStore:
    """A fresh in-memory store (the real test double, STYLE 8)."""
    return MemoryStore()


@pytest.fixture
def log(store: MemoryStore) -> CommitLog:
    """The commit log of stream 'main' in `store`."""
    return CommitLog(store, "main", "streams/main")


def _chain(log: CommitLog, length: int) -> list[dict[str, Any]]:
    """Create generations 0..length-1: a create, then one segment per commit."""
    commits = [log.create(0, None, [CREATE], WRITER)]
    for g in range(1, length):
        commits.append(
            log.create(g, commits[-1]["root"], [_segment(10 * (g - 1), 10 * g - 1, str(g))], WRITER)
        )
    return commits


class TestCanonical:
    """`canonical`: UTF-8, sorted keys, no insignificant whitespace."""

    def test_exact_bytes(self) -> None:
        """A small example serializes to exactly the expected bytes."""
        obj = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": ""}, "c": -3}
        assert canonical(obj) == (b'{"a":{"y":"","z":"\xc3\xa9"},"b":[1,2.5,null,true],"c":-3}')

    def test_escapes_only_what_json_requires(self) -> None:
        """Non-ASCII stays raw UTF-8; quotes, backslashes and control characters are escaped."""
        assert canonical({"k": 'q"b\\n\n€'}) == b'{"k":"q\\"b\\\\n\\n\xe2\x82\xac"}'

    def test_key_order_does_not_matter(self) -> None:
        """Dicts with the same items in any insertion order serialize identically."""
        assert canonical({"a": 1, "b": {"c": 2, "d": 3}}) == canonical(
            {"b": {"d": 3, "c": 2}, "a": 1}
        )

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_floats_refused(self, value: float) -> None:
        """NaN and infinities have no JSON form and are refused."""
        with pytest.raises(ValueError):
            canonical({"x": value})


class TestComputeRoot:
    """`compute_root` implements the DESIGN §5 formula."""

    def test_generation_zero_exact(self) -> None:
        """Generation 0: the hash of the canonical entry without 'root', spelled out by hand."""
        entry = {"stream": "s", "generation": 0, "prev_root": None, "root": "ignored"}
        expected = blake3.blake3(b'{"generation":0,"prev_root":null,"stream":"s"}').hexdigest()
        assert compute_root(entry, None) == expected

    def test_chained(self, log: CommitLog) -> None:
        """Later generations prefix the 32 raw bytes of the previous root."""
        commits = _chain(log, 3)
        for prev, entry in zip([None, *commits], commits, strict=False):
            prev_root = None if prev is None else prev["root"]
            body = {k: v for k, v in entry.items() if k != "root"}
            raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            prefix = bytes.fromhex(prev_root) if prev_root else b""
            assert len(prefix) in (0, 32)
            expected = blake3.blake3(prefix + raw.encode("utf-8")).hexdigest()
            assert entry["root"] == compute_root(entry, prev_root) == expected
            assert len(entry["root"]) == 64
            assert entry["root"] == entry["root"].lower()

    def test_depends_on_prev_root_and_content(self) -> None:
        """Changing the previous root or any field changes the root."""
        entry = {"generation": 1, "actions": []}
        base = compute_root(entry, "00" * 32)
        assert compute_root(entry, "01" + "00" * 31) != base
        assert compute_root({**entry, "generation": 2}, "00" * 32) != base
        assert compute_root({**entry, "root": "anything"}, "00" * 32) == base


class TestCommitLog:
    """`CommitLog.create` / `read`: put-if-absent creation and verified reads."""

    def test_create_then_read(self, log: CommitLog, store: MemoryStore) -> None:
        """Created commits are stored canonically and read back verified, in chain order."""
        commits = _chain(log, 3)
        assert log.generations() == [0, 1, 2]
        assert log.generations(after=0) == [1, 2]
        assert store.list("streams/main/commits") == [f"{g:020d}.json" for g in range(3)]
        prev = None
        for g, commit in enumerate(commits):
            assert store.get(log.path(g)) == canonical(commit)
            assert commit["generation"] == g
            assert commit["prev_root"] == prev
            assert commit["stream"] == "main"
            assert commit["format"] == 1
            assert log.read(g, prev) == commit
            prev = commit["root"]

    def test_path(self, log: CommitLog) -> None:
        """Commits live at `<folder>/commits/<generation:020d>.json`."""
        assert log.path(7) == "streams/main/commits/00000000000000000007.json"

    def test_read_missing(self, log: CommitLog) -> None:
        """Reading a generation that does not exist raises `FileNotFoundError`."""
        with pytest.raises(FileNotFoundError):
            log.read(0, None)

    def test_every_flipped_byte_detected(self, log: CommitLog, store: MemoryStore) -> None:
        """Flipping any bit pattern of any byte of a stored commit makes `read` raise."""
        commits = _chain(log, 2)
        path = log.path(1)
        good = store.get(path)
        for i in range(len(good)):
            for mask in (0x01, 0x20, 0x80):
                tampered = bytearray(good)
                tampered[i] ^= mask
                store.put(path, tampered)
                with pytest.raises(IntegrityError):
                    log.read(1, commits[0]["root"])
        store.put(path, good)
        assert log.read(1, commits[0]["root"]) == commits[1]

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda b: b"", id="empty"),
            pytest.param(lambda b: b[:-1], id="truncated"),
            pytest.param(lambda b: b"[" + b + b"]", id="not-an-object"),
            pytest.param(lambda b: b"\xff" + b, id="bad-utf8"),
            pytest.param(lambda b: b.replace(b'"epoch":0', b'"epoch":1'), id="edited-value"),
            pytest.param(
                lambda b: b.replace(b'"generation":1', b'"generation":2'), id="wrong-generation"
            ),
            pytest.param(lambda b: b.replace(b'"stream":"main"', b'"stream":"x"'), id="stream"),
            pytest.param(lambda b: b.replace(b'"format":1', b'"format":2'), id="format"),
            pytest.param(lambda b: b.replace(b'"actions":[', b'"actions":{"a":['), id="actions"),
        ],
    )
    def test_tampering_detected(self, log: CommitLog, store: MemoryStore, tamper: Any) -> None:
        """Structural and semantic edits raise `IntegrityError`."""
        commits = _chain(log, 2)
        good = store.get(log.path(1))
        tampered = tamper(good)
        assert tampered != good
        store.put(log.path(1), tampered)
        with pytest.raises(IntegrityError):
            log.read(1, commits[0]["root"])

    def test_rehashed_edit_detected_by_the_chain(self, log: CommitLog, store: MemoryStore) -> None:
        """An edited commit with a recomputed root no longer links to its successor."""
        commits = _chain(log, 3)
        forged = {**commits[1], "actions": [_segment(0, 99, "forged")]}
        forged["root"] = compute_root(forged, commits[0]["root"])
        store.put(log.path(1), canonical(forged))
        assert log.read(1, commits[0]["root"]) == forged  # consistent on its own
        with pytest.raises(IntegrityError):
            log.read(2, forged["root"])

    @pytest.mark.parametrize(
        "value",
        [b"NaN", b"Infinity", b"-Infinity", b"1e999"],
    )
    def test_non_finite_number_detected(
        self, log: CommitLog, store: MemoryStore, value: bytes
    ) -> None:
        """A commit edited to hold a non-finite number raises `IntegrityError`."""
        _chain(log, 1)
        good = store.get(log.path(0))
        store.put(log.path(0), good.replace(b'"pid":1', b'"pid":' + value))
        with pytest.raises(IntegrityError):
            log.read(0, None)

    @pytest.mark.parametrize(
        "reencode",
        [
            pytest.param(lambda e: json.dumps(e, sort_keys=True).encode(), id="whitespace"),
            pytest.param(lambda e: canonical(e) + b"\n", id="trailing-newline"),
            pytest.param(
                lambda e: json.dumps(e, separators=(",", ":")).encode(), id="unsorted-and-ascii"
            ),
            pytest.param(lambda e: canonical(e).decode().encode("utf-16"), id="utf-16"),
        ],
    )
    def test_non_canonical_bytes_detected(
        self, log: CommitLog, store: MemoryStore, reencode: Any
    ) -> None:
        """A commit file must be exactly the canonical bytes (DESIGN §5, §10)."""
        (commit,) = _chain(log, 1)
        tampered = reencode(commit)
        assert tampered != canonical(commit)
        store.put(log.path(0), tampered)
        with pytest.raises(IntegrityError):
            log.read(0, None)

    def test_wrong_prev_root(self, log: CommitLog) -> None:
        """Reading with a previous root other than the recorded one raises."""
        commits = _chain(log, 2)
        with pytest.raises(IntegrityError, match="prev_root"):
            log.read(1, "ab" * 32)
        with pytest.raises(IntegrityError, match="prev_root"):
            log.read(1, None)
        with pytest.raises(IntegrityError, match="prev_root"):
            log.read(0, commits[1]["root"])

    def test_commit_at_the_wrong_place(self, log: CommitLog, store: MemoryStore) -> None:
        """A valid commit copied to another generation's path raises."""
        commits = _chain(log, 2)
        store.put(log.path(2), store.get(log.path(1)))
        with pytest.raises(IntegrityError, match="generation"):
            log.read(2, commits[1]["root"])

    def test_commit_of_another_stream(self, log: CommitLog, store: MemoryStore) -> None:
        """A valid commit read as another stream's raises."""
        _chain(log, 1)
        other = CommitLog(store, "other", "streams/main")
        with pytest.raises(IntegrityError, match="stream"):
            other.read(0, None)

    def test_create_conflict_leaves_bytes(self, log: CommitLog, store: MemoryStore) -> None:
        """Creating an existing generation raises `CommitConflictError` and changes nothing."""
        commits = _chain(log, 2)
        before = {g: store.get(log.path(g)) for g in (0, 1)}
        with pytest.raises(CommitConflictError, match="commit 1 of stream 'main'"):
            log.create(1, commits[0]["root"], [_segment(0, 5, "other")], WRITER)
        with pytest.raises(CommitConflictError):
            log.create(0, None, [CREATE], WRITER)
        assert {g: store.get(log.path(g)) for g in (0, 1)} == before
        assert log.generations() == [0, 1]


def _manifest(log: CommitLog, *later: list[dict[str, Any]]) -> Manifest:
    """Fold a create commit and then one commit per action list."""
    commit = log.create(0, None, [CREATE], WRITER)
    manifest = Manifest.initial(commit)
    for g, actions in enumerate(later, start=1):
        commit = log.create(g, commit["root"], actions, WRITER)
        manifest = manifest.apply(commit)
    return manifest


class TestManifest:
    """Folding commits into a `Manifest`."""

    def test_fold(self, log: CommitLog) -> None:
        """Segments, schema changes and fences fold into the state at each generation."""
        schema = pa.schema([("a", pa.int64())])
        m = _manifest(
            log,
            [_segment(0, 9, "a")],
            [{"type": "evolve_schema", "schema": schema_to_json(schema)}, _segment(10, 10, "b")],
            [{"type": "fence", "epoch": 3, "previous": "w1"}],
        )
        assert m.generation == 3
        assert m.kind == "root"
        assert m.start_offset == 0
        assert m.next_offset == 11
        assert [(s.first_offset, s.last_offset) for s in m.segments] == [(0, 9), (10, 10)]
        assert m.schema == schema
        assert m.writer_epoch == 3
        prev = None
        for g in range(4):
            last = log.read(g, prev)
            prev = last["root"]
        assert m.root == prev
        # The generation's own commit time (issue 16: keeping every generation's made a fold of
        # n commits O(n^2), and a manifest opened from a snapshot has no older times).
        assert m.commit_times == (last["time"],)

    def test_segment_ref_round_trip(self) -> None:
        """`SegmentRef.from_action(ref.to_action())` is `ref`."""
        action = _segment(5, 9)
        assert action["type"] == "add_segment"
        ref = SegmentRef.from_action(action)
        assert ref.to_action() == action
        assert SegmentRef.from_action(ref.to_action()) == ref

    def test_start_offset(self, log: CommitLog) -> None:
        """A branch's create action sets where its own offsets start."""
        commit = log.create(
            0, None, [{**CREATE, "kind": "branch", "start_offset": 18}, _segment(18, 20)], WRITER
        )
        m = Manifest.initial(commit)
        assert (m.kind, m.start_offset, m.next_offset) == ("branch", 18, 21)

    @pytest.mark.parametrize(
        ("first", "last"),
        [(11, 20), (9, 20), (0, 5), (10, 9), (12, 11)],
        ids=["gap", "overlap", "rewind", "backwards", "gap-and-backwards"],
    )
    def test_non_contiguous_segment(self, log: CommitLog, first: int, last: int) -> None:
        """A segment that does not continue the stream exactly is an `IntegrityError`."""
        with pytest.raises(IntegrityError, match="next offset is 10"):
            _manifest(log, [_segment(0, 9, "a")], [_segment(first, last, "b")])

    def test_non_contiguous_in_one_commit(self, log: CommitLog) -> None:
        """Segments within one commit must also be contiguous."""
        with pytest.raises(IntegrityError):
            _manifest(log, [_segment(0, 9, "a"), _segment(11, 12, "b")])

    @pytest.mark.parametrize("action", [{"type": "teleport"}, {"kind": "no type"}, {"type": None}])
    def test_unknown_action(self, log: CommitLog, action: dict[str, Any]) -> None:
        """An action the folder does not know is an `IntegrityError`."""
        with pytest.raises(IntegrityError, match="unknown action"):
            _manifest(log, [action])

    def test_create_after_generation_zero(self, log: CommitLog) -> None:
        """A create action after generation 0 is an `IntegrityError`."""
        with pytest.raises(IntegrityError, match="create action"):
            _manifest(log, [CREATE])

    def test_first_commit_must_create(self, log: CommitLog) -> None:
        """Generation 0 must start with a create action."""
        for actions in ([], [_segment(0, 1)]):
            commit = CommitLog(MemoryStore(), "main", "s").create(0, None, actions, WRITER)
            with pytest.raises(IntegrityError, match="create action"):
                Manifest.initial(commit)

    def test_commits_in_order(self, log: CommitLog) -> None:
        """`apply` accepts only the next generation."""
        commits = _chain(log, 3)
        m = Manifest.initial(commits[0])
        with pytest.raises(IntegrityError, match="does not follow"):
            m.apply(commits[2])
        with pytest.raises(IntegrityError, match="does not follow"):
            m.apply(commits[0])
        assert m.apply(commits[1]).apply(commits[2]).generation == 2
