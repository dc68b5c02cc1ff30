"""Writers in concurrent threads and real processes (DESIGN §5, docs/format.md "Writer lease").

Processes run `tests/writer_child.py`, driven over a pipe, against one shared root: a local
folder, or a bucket on the moto S3 server. They check that

- a second process writing a stream gets `WriterBusyError` naming the holder, whether it has
  its own local dir (the lease) or shares the first one's (the `flock`);
- `take_over=True` fences the first writer: it keeps its local head, and its next append
  (within a few seconds: it checks its lease once a second) raises `FencedError` naming the
  head file, which holds every record it acknowledged;
- two writers racing for one commit number never both win: at the `CommitLog` level (threads
  on every backend, two processes on one S3 key and on one local folder), and at the engine
  level (a fenced writer's seal loses to the fence commit).
"""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.commit import CommitLog, writer_identity
from transit_arrow.storage import ObjectStore, store_from_uri

CHILD = Path(__file__).with_name("writer_child.py")
#: How long the parent waits for one answer from a child.
ANSWER_TIMEOUT = 60.0
#: No commit was ever this slow to be noticed; the fenced writer checks its lease every second.
FENCE_NOTICE_LIMIT = 5.0
NO_SEAL = {"segment_max_records": 10**9, "segment_max_age": 3600.0}


@dataclass(frozen=True)
class Root:
    """A log root that several processes can open."""

    uri: str
    storage_options: dict[str, Any] | None

    def open(self, local_dir: Path, **options: Any) -> ta.Log:
        return ta.open(
            self.uri, storage_options=self.storage_options, local_dir=local_dir, **options
        )

    def store(self) -> ObjectStore:
        return store_from_uri(self.uri, self.storage_options)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Root:
    """A fresh shared root: a local folder, or a fresh bucket on the moto server."""
    if request.param == "file":
        return Root(str(tmp_path / "root"), None)
    endpoint = request.getfixturevalue("s3_endpoint")
    return Root(f"s3://{endpoint.create_bucket()}/log", endpoint.storage_options)


class Child:
    """One `writer_child.py` process."""

    def __init__(self, stderr: Path) -> None:
        self.stderr_path = stderr
        with open(stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.pid = int(json.loads(self._next())["ready"])

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(line)
        self.answers.put("")

    def _next(self) -> str:
        try:
            line = self.answers.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"child {self.proc.pid} did not answer: {self.stderr()}") from None
        if not line:
            raise AssertionError(f"child {self.proc.pid} died: {self.stderr()}")
        return line

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self._next())
        return answer

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run a command that must succeed and return its answer."""
        self.send(op, **args)
        answer = self.receive()
        assert answer["ok"], f"{op} failed in child {self.pid}: {answer}\n{self.stderr()}"
        return answer

    def fails(self, op: str, **args: Any) -> dict[str, Any]:
        """Run a command that must raise and return the error."""
        self.send(op, **args)
        answer = self.receive()
        assert not answer["ok"], f"{op} unexpectedly succeeded in child {self.pid}: {answer}"
        return answer

    def open(self, root: Root, local_dir: Path, **options: Any) -> None:
        self.call(
            "open",
            uri=root.uri,
            storage_options=root.storage_options,
            local_dir=str(local_dir),
            options=options,
        )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.send("exit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start children (all imports done when it returns); stops them all at teardown."""
    children: list[Child] = []

    def start(n: int) -> list[Child]:
        # Start them all first, so their imports overlap.
        new = [Child(tmp_path / f"child{len(children) + i}.err") for i in range(n)]
        children.extend(new)
        return new

    yield start
    for child in children:
        child.stop()


def _head_files(message: str) -> list[Path]:
    """Existing `.arrow` paths named in an error message."""
    words = message.replace(",", " ").split()
    return [Path(w) for w in words if w.endswith(".arrow") and Path(w).is_file()]


def _seqs_in_head(path: Path) -> list[int]:
    with pa.OSFile(str(path), mode="rb") as f:
        reader = pa.ipc.open_stream(f)
        seqs: list[int] = []
        while True:
            try:
                batch = reader.read_next_batch()
            except (StopIteration, pa.ArrowInvalid):
                # The writer never closes its IPC stream: a head ends without end-of-stream.
                return seqs
            seqs.extend(batch.column(batch.schema.get_field_index("seq")).to_pylist())


# --- one writer per stream, across processes -----------------------------------------------


@pytest.mark.parametrize(
    "root", ["file", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])], indirect=True
)
def test_second_process_gets_writer_busy_naming_the_holder(
    root: Root, spawn: Any, tmp_path: Path
) -> None:
    """A second process (own local dir) that writes a held stream fails fast with
    `WriterBusyError` naming the holder's pid and the way out; the holder is unaffected."""
    with root.open(tmp_path / "parent") as log:
        log.create_stream("s")
    a, b = spawn(2)
    a.open(root, tmp_path / "a")
    b.open(root, tmp_path / "b")
    a.call("append", stream="s", seqs=[0, 3])
    error = b.fails("append", stream="s", seqs=[100, 101])
    assert error["type"] == "WriterBusyError", error
    assert f"pid {a.pid}" in error["message"] and "take_over=True" in error["message"], error
    assert a.call("append", stream="s", seqs=[3, 5])["ack"] == [3, 4, "local"]
    a.call("close")
    assert b.call("append", stream="s", seqs=[100, 101])["ack"] == [5, 5, "local"]
    b.call("close")


def test_same_local_dir_is_guarded_by_flock(spawn: Any, tmp_path: Path) -> None:
    """Two processes sharing one local dir cannot both write a stream by accident: the
    second gets `WriterBusyError` saying so and naming the first process; with
    `take_over=True` it fences the first (issue 10: this used to be refused too), whose
    acknowledged records are then set aside, not lost. (The lock is local, so one backend
    is enough.)"""
    root = Root(str(tmp_path / "root"), None)
    with root.open(tmp_path / "parent") as log:
        log.create_stream("s")
    a, b = spawn(2)
    a.open(root, tmp_path / "shared")
    b.open(root, tmp_path / "shared")
    a.call("append", stream="s", seqs=[0, 2])
    error = b.fails("append", stream="s", seqs=[100, 101])
    assert error["type"] == "WriterBusyError", error
    assert "same local dir" in error["message"] and f"pid {a.pid}" in error["message"], error
    assert b.call("append", stream="s", seqs=[100, 101], take_over=True)["ack"][:2] == [0, 0]
    a.call("close")  # its seal loses to the fence: its records are set aside
    b.call("close")
    with root.open(tmp_path / "shared") as log:
        assert log.stream("s").read().column("seq").to_pylist() == [100]
        (orphan,) = log.orphaned_heads("s").to_pylist()
        assert (orphan["kind"], orphan["first_offset"], orphan["records"]) == ("fenced", 0, 2)


def test_take_over_fences_the_first_process(root: Root, spawn: Any, tmp_path: Path) -> None:
    """`take_over=True` in a second process fences the first: the first learns it within a
    few seconds, its next append raises `FencedError` naming its head file, and that file
    still holds every record it acknowledged. The new writer's log never shows them."""
    with root.open(tmp_path / "parent") as log:
        log.create_stream("s").append({"seq": -1, "v": "committed"}, durability="tiered")
    a, b = spawn(2)
    a.open(root, tmp_path / "a", **NO_SEAL)
    b.open(root, tmp_path / "b", **NO_SEAL)
    assert a.call("append", stream="s", seqs=[0, 5])["ack"] == [1, 5, "local"]
    b.call("append", stream="s", seqs=[100, 102], take_over=True)
    fenced_at = time.monotonic()
    result = a.call(
        "append_until_error", stream="s", start=5, timeout=FENCE_NOTICE_LIMIT, interval=0.05
    )
    noticed = time.monotonic() - fenced_at
    print(f"fenced writer noticed after {noticed:.2f} s ({len(result['acks'])} more appends)")
    assert result["error"] is not None, f"not fenced within {FENCE_NOTICE_LIMIT} s: {result}"
    assert result["error"]["type"] == "FencedError", result
    assert noticed < FENCE_NOTICE_LIMIT
    acked = [0, 1, 2, 3, 4] + [5 + i for i in range(len(result["acks"]))]
    heads = _head_files(result["error"]["message"])
    assert heads, f"the error names no existing head file: {result['error']['message']}"
    assert all(str(tmp_path / "a") in str(h) for h in heads)
    assert sorted(s for h in heads for s in _seqs_in_head(h)) == acked
    # The fenced writer's records never reach the log; the new writer's follow the commit.
    assert b.call("read", stream="s") == {"ok": True, "offsets": [0, 1, 2], "seqs": [-1, 100, 101]}
    a.call("close")  # closing a fenced writer keeps its heads
    assert sorted(s for h in heads for s in _seqs_in_head(h)) == acked
    b.call("close")
    with root.open(tmp_path / "check") as log:
        assert log.verify("s", deep=True).ok
        kinds = log.stream("s").commits().column("actions").to_pylist()
        assert ["fence"] in kinds, kinds


# --- racing for one commit number ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "file", pytest.param("s3", marks=pytest.mark.s3)])
def test_commit_race_between_threads(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight threads create the same commit number at once, round after round: exactly one
    wins each round, the others get `CommitConflictError`, and the stored commit is the
    winner's."""
    if backend == "memory":
        store: ObjectStore = store_from_uri(f"memory://race-{uuid.uuid4().hex}")
    elif backend == "file":
        store = store_from_uri(str(tmp_path / "root"))
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = store_from_uri(f"s3://{endpoint.create_bucket()}/log", endpoint.storage_options)
    commits = CommitLog(store, "s", "streams/s")
    threads, rounds = 8, 5 if backend == "s3" else 20
    barrier = threading.Barrier(threads)
    outcomes: dict[int, list[tuple[int, str]]] = {}

    def racer(i: int) -> None:
        writer = writer_identity(f"w{i}", 0)
        for g in range(rounds):
            barrier.wait()
            try:
                commits.create(g, None, [], writer)
            except ta.CommitConflictError:
                outcomes.setdefault(g, []).append((i, "conflict"))
            else:
                outcomes.setdefault(g, []).append((i, "won"))

    pool = [threading.Thread(target=racer, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for g in range(rounds):
        winners = [i for i, what in outcomes[g] if what == "won"]
        assert len(winners) == 1 and len(outcomes[g]) == threads, (g, outcomes[g])
        assert json.loads(store.get(commits.path(g)))["writer"]["id"] == f"w{winners[0]}"


@pytest.mark.parametrize("where", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_commit_race_between_processes(
    where: str, spawn: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes keep creating the next commit of one stream (one S3 key, or one local
    folder) at the CommitLog level: each generation has exactly one creator, the losers got
    `CommitConflictError`, and the chain verifies."""
    if where == "file":
        shared = Root(str(tmp_path / "root"), None)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        shared = Root(f"s3://{endpoint.create_bucket()}/log", endpoint.storage_options)
    with shared.open(tmp_path / "parent") as log:
        log.create_stream("s")
    until = 20 if where == "s3" else 60
    children = spawn(2)
    start_at = time.time() + 0.5
    for child in children:
        child.send(
            "commit_race",
            uri=shared.uri,
            storage_options=shared.storage_options,
            stream="s",
            until=until,
            start_at=start_at,
        )
    results = [child.receive() for child in children]
    assert all(r["ok"] for r in results), results
    won = [set(r["won"]) for r in results]
    assert not won[0] & won[1], f"a generation was won twice: {won[0] & won[1]}"
    assert won[0] | won[1] == set(range(1, until + 1))
    assert sum(r["conflicts"] for r in results) > 0, "the processes never raced"
    store = shared.store()
    commits = CommitLog(store, "s", "streams/s")
    for r in results:
        for g in r["won"]:
            assert json.loads(store.get(commits.path(g)))["writer"]["id"] == r["writer"]
    with shared.open(tmp_path / "check") as log:
        assert log.verify("s").ok
        assert log.stream("s").generation == until


def test_fenced_writers_seal_loses_the_commit_race(root: Root, tmp_path: Path) -> None:
    """Engine level: writer A's head is sealed right after B took over. A's segment upload
    succeeds but its commit finds the slot taken by B's fence commit, so A fails with
    `FencedError` and keeps its head; B's log is unaffected, and the segment A uploaded is an
    orphan that `gc` removes without touching anything a commit references."""
    with root.open(tmp_path / "parent") as log:
        log.create_stream("s")
    with (
        root.open(tmp_path / "a", **NO_SEAL) as log_a,
        root.open(tmp_path / "b", **NO_SEAL) as log_b,
    ):
        # A's sealer checks its lease once a second; here never, so that A's seal races the
        # commit however slow the machine is (instead of finding the fence by the lease check).
        log_a.catalog.options = dataclasses.replace(
            log_a.catalog.options, lease_check_interval=3600.0
        )
        a = log_a.stream("s")
        a.append([{"seq": i, "v": f"r{i}"} for i in range(3)])
        log_b.stream("s", take_over=True).append({"seq": 100, "v": "b"}, durability="tiered")
        with pytest.raises(ta.FencedError) as info:
            a.flush()
        assert "fence commit took generation" in str(info.value), info.value
        heads = _head_files(str(info.value))
        assert heads and sorted(s for h in heads for s in _seqs_in_head(h)) == [0, 1, 2]
        with pytest.raises(ta.FencedError):
            a.append({"seq": 3, "v": "r3"})
        assert log_b.stream("s").read().column("seq").to_pylist() == [100]
    store = root.store()
    segments = set(store.list("streams/s/segments"))
    referenced = {
        Path(action["path"]).name
        for name in store.list("streams/s/commits")
        for action in json.loads(store.get(f"streams/s/commits/{name}"))["actions"]
        if action["type"] == "add_segment"
    }
    with root.open(tmp_path / "check") as log:
        assert len(segments - referenced) == 1, "A's upload should be the one orphan"
        report = log.gc(min_age=0)
        assert [Path(p).name for p in report.removed] == sorted(segments - referenced)
        assert set(store.list("streams/s/segments")) == referenced
        assert log.verify("s", deep=True).ok
    assert sorted(s for h in heads for s in _seqs_in_head(h)) == [0, 1, 2]
