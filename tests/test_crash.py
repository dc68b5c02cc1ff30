"""Crash tests with real processes (DESIGN §4 durability, §5 commit log).

A child process (`tests/crash_child.py`) appends in a loop and reports on a pipe every call it
starts and every ack it gets; the parent SIGKILLs it at a random moment, reopens the log and
checks the §4 contract against what the child reported:

1. offsets are dense: the stream holds exactly offsets 0..n-1;
2. every record acknowledged `local` or `tiered` (and everything before a returned `flush()`) is
   present, at its acknowledged offset, with its exact payload;
3. nothing else is visible: the records after the previous state are exactly a prefix of what
   the child attempted, ending at a call boundary (calls are atomic), no garbage, no duplicate;
   `memory`-acked records may be lost, but then so is everything after them;
4. the commit log verifies: canonical JSON, generations 0..G with no gap, the BLAKE3 root chain
   recomputed, `add_segment` offsets continuing the stream, and every referenced segment file's
   BLAKE3 and size equal to its action;
5. after the parent's own recovery and flush everything is sealed and reads are unchanged.

All kills of one test share one log folder, so history accumulates over many crash/recover
cycles, and the next child starts from the recovered state (sometimes the parent recovered it
first, sometimes the next child's own writer recovers the dead child's heads).

The default run makes 50 kills of the mixed workload plus three focused tests of 12 kills
each (kills while a big head is sealed, during per-record appends racing the sealer, and while
a `tiered` append waits for its commit): about 30-60 s on 2 cores. `pytest -m crash_long` runs
1,000 kills of the mixed workload (`TRANSIT_CRASH_KILLS` overrides the count): about 15 minutes
on 2 busy cores, growing with history since every reopen folds the whole commit log.
`TRANSIT_CRASH_SEED` fixes the random seed; every failure message names the seed in use.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import blake3
import pytest

import transit_arrow as ta
from transit_arrow.commit import canonical, compute_root
from transit_arrow.names import encode_stream_name

CHILD = Path(__file__).with_name("crash_child.py")
STREAM = "crash/s1"
DURABLE_MODES = ("local", "tiered")
#: How long the parent waits for any one event from a child before declaring it stuck.
EVENT_TIMEOUT = 30.0


def _load_child() -> ModuleType:
    spec = importlib.util.spec_from_file_location("transit_crash_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


child_mod = _load_child()


def _seed() -> int:
    value = os.environ.get("TRANSIT_CRASH_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 32)


# --- the child process ----------------------------------------------------------------------


class ChildProcess:
    """One child: started early (imports done), then given work, then killed."""

    def __init__(self, root: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(root), STREAM],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[str] = []
        self.eof = False
        self.cond = threading.Condition()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode())
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def go(self, cfg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cfg).encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, prefix: str, occurrence: int = 1) -> None:
        """Block until the child has written `occurrence` lines starting with `prefix`."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        with self.cond:
            while True:
                if sum(1 for line in self.lines if line.startswith(prefix)) >= occurrence:
                    return
                errors = [line for line in self.lines if line.startswith("ERROR")]
                if errors or self.eof:
                    raise AssertionError(
                        f"child died before {prefix!r} #{occurrence}: {errors}\n{self.stderr()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"child never wrote {prefix!r} #{occurrence}")
                self.cond.wait(left)

    def kill(self) -> list[str]:
        """SIGKILL the child (which must still be running) and return every line it wrote."""
        alive = self.proc.poll() is None
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.pump.join()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if not alive:
            raise AssertionError(
                f"the child exited by itself (status {self.proc.returncode}) before the kill: "
                f"{self.lines[-5:]}\n{self.stderr()}"
            )
        assert self.proc.returncode == -signal.SIGKILL
        return [line for line in self.lines if line.endswith("\n")]

    def abandon(self) -> None:
        """Dispose of a child that never got work (or a failed test's child)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.pump.join()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --- what a child reported ------------------------------------------------------------------


@dataclass
class Call:
    """One `append` call the child started, and its ack if it returned."""

    call_id: int
    mode: str
    seq_first: int
    seq_last: int
    ack: tuple[int, int, str] | None = None  # (first_offset, last_offset, reached)


@dataclass
class Report:
    """Everything one child wrote before it was killed."""

    calls: list[Call] = field(default_factory=list)
    flushed_seq: int | None = None  # every seq below this was committed by a returned flush()
    started: bool = False

    @classmethod
    def parse(cls, lines: list[str]) -> Report:
        report = cls()
        for line in lines:
            word, *args = line.split()
            if word == "START":
                report.started = True
            elif word == "CALL":
                assert all(c.ack is not None for c in report.calls), f"two calls in flight: {line}"
                report.calls.append(Call(int(args[0]), args[1], int(args[2]), int(args[3])))
            elif word == "ACK":
                mode, first, last, s_first, s_last, reached, call_id = args
                call = report.calls[-1]
                assert call.ack is None, f"ack without its call: {line}"
                assert (call.call_id, call.mode, call.seq_first, call.seq_last) == (
                    int(call_id),
                    mode,
                    int(s_first),
                    int(s_last),
                ), f"ack {line!r} does not match its call {call}"
                call.ack = (int(first), int(last), reached)
            elif word == "FLUSHED":
                report.flushed_seq = int(args[0])
            elif word == "FLUSH":
                pass
            else:
                raise AssertionError(f"unexpected line from the child: {line!r}")
        return report


# --- the harness ----------------------------------------------------------------------------


@dataclass
class KillPlan:
    """When to kill: after the `occurrence`-th line starting with `prefix`, plus `delay` s."""

    prefix: str
    occurrence: int
    delay: float

    def __str__(self) -> str:
        return f"{self.delay * 1000:.0f} ms after {self.prefix} #{self.occurrence}"


class CrashHarness:
    """Runs kill/recover cycles on one log and keeps the model of what it must hold."""

    def __init__(self, tmp: Path, seed: int, profile: str) -> None:
        self.tmp = tmp
        self.root = tmp / "log"
        self.seed = seed
        self.profile = profile
        self.rng = random.Random(seed)
        self.offset_seqs: list[int] = []  # writer_seq of the record at each offset
        self.offset_calls: list[int] = []  # call_id of the record at each offset
        self.offset_extra: list[bool] = []  # whether the record at each offset has `extra`
        self.next_seq = 0
        self.next_call = 0
        self.cycle = 0
        self.context = ""
        # Commit-chain verification state (incremental).
        self.roots: list[str] = []
        self.committed_next = 0
        self.segments: list[dict[str, Any]] = []
        self.stats = {"kills": 0, "parent_recoveries": 0, "lost_memory_records": 0}
        self.stats |= {"inflight_visible": 0, "records_seen": 0}
        with ta.open(self.root) as log:
            log.create_stream(STREAM, schema=child_mod.SCHEMA)
        self.stream_dir = self.root / "streams" / encode_stream_name(STREAM)
        self.heads_dir = self.root / "_local" / "streams" / encode_stream_name(STREAM) / "heads"
        self._spare: ChildProcess | None = None
        self.verify_commits()

    # --- driving children ---------------------------------------------------------------

    def _spawn(self) -> ChildProcess:
        return ChildProcess(self.root, self.tmp / f"child-{self.cycle}-{time.monotonic_ns()}.err")

    def run(
        self,
        kills: int,
        make_cfg: Callable[[random.Random], dict[str, Any]],
        make_plan: Callable[[random.Random], KillPlan],
        recover_prob: float,
        full_check_every: int,
    ) -> None:
        """`kills` cycles of: start a child, kill it per plan, verify, maybe recover."""
        try:
            for i in range(kills):
                child = self._spare or self._spawn()
                self._spare = None
                cfg = {
                    **make_cfg(self.rng),
                    "seed": self.rng.randrange(1 << 32),
                    "seq": self.next_seq,
                    "call": self.next_call,
                    "profile": self.profile,
                    "max_seconds": 60,
                }
                plan = make_plan(self.rng)
                self.cycle = i
                self.context = (
                    f"[seed {self.seed}, cycle {i}, kill {plan}, cfg {cfg}] "
                    f"(rerun with TRANSIT_CRASH_SEED={self.seed})"
                )
                try:
                    child.go(cfg)
                    child.wait_for(plan.prefix, plan.occurrence)
                    if plan.delay:
                        time.sleep(plan.delay)
                    lines = child.kill()
                except AssertionError as e:
                    child.abandon()
                    raise self._fail(str(e)) from None
                self.stats["kills"] += 1
                if i + 1 < kills:
                    self._spare = self._spawn()  # imports overlap with the checks below
                stderr = child.stderr()
                assert not stderr.strip(), f"{self.context} child stderr:\n{stderr}"
                child.stderr_path.unlink()
                report = Report.parse(lines)
                self.check_crash(
                    report, extra=cfg.get("extra", False), recover=self.rng.random() < recover_prob
                )
                if (i + 1) % full_check_every == 0 or i + 1 == kills:
                    self.check_full()
        finally:
            if self._spare is not None:
                self._spare.abandon()
                self._spare = None

    # --- checks ---------------------------------------------------------------------------

    def _fail(self, message: str) -> AssertionError:
        return AssertionError(f"{self.context}\n{message}")

    def check_records(self, table: Any, start: int) -> None:
        """Rows of `table` (offsets from `start`) equal the model, payloads byte for byte."""
        n = table.num_rows
        offsets = table.column("_offset").to_pylist()
        if offsets != list(range(start, start + n)):
            raise self._fail(f"offsets are not dense from {start}: {_runs(offsets)}")
        seqs = table.column("writer_seq").to_pylist()
        calls = table.column("call_id").to_pylist()
        if seqs != self.offset_seqs[start : start + n]:
            raise self._fail("writer_seq differs from the model")
        if calls != self.offset_calls[start : start + n]:
            raise self._fail("call_id differs from the model")
        extras = self.offset_extra[start : start + n]
        want = [child_mod.extra_for(q) if e else None for q, e in zip(seqs, extras, strict=True)]
        has_extra = "extra" in table.column_names
        got = table.column("extra").to_pylist() if has_extra else [None] * n
        if got != want:
            raise self._fail("the evolved column `extra` differs from the model")
        streams = set(table.column("_stream").to_pylist())
        if n and streams != {STREAM}:
            raise self._fail(f"_stream holds {streams}")
        self._check_payloads(table, seqs)

    def _check_payloads(self, table: Any, seqs: list[int]) -> None:
        blobs = table.column("blob").to_pylist()
        headers = table.column("_headers").to_pylist()
        for seq, blob, head in zip(seqs, blobs, headers, strict=True):
            if blob != child_mod.blob_for(seq, self.profile):
                raise self._fail(f"record writer_seq={seq} has a wrong blob ({len(blob)} bytes)")
            want = child_mod.headers_for(seq)
            if (None if want is None else list(want.items())) != head:
                raise self._fail(f"record writer_seq={seq} has headers {head}, expected {want}")

    def check_crash(self, report: Report, *, extra: bool, recover: bool) -> None:
        """Check what a killed child left behind against what it reported."""
        n_prev = len(self.offset_seqs)
        seq_start = self.next_seq
        expected_seq = seq_start
        for i, call in enumerate(report.calls):
            if call.seq_first != expected_seq or call.call_id != self.next_call + i:
                raise self._fail(f"the child's calls are not contiguous: {call}")
            expected_seq = call.seq_last + 1
        attempted_end = expected_seq  # one past the last seq the child tried to append
        with ta.open(self.root) as log:
            stream = log.stream(STREAM)
            # Read-only first: a reader sees heads through their markers, without recovery.
            table = stream.read(start=n_prev)
            k = table.num_rows
            seqs = table.column("writer_seq").to_pylist()
            if seqs != list(range(seq_start, seq_start + k)):
                raise self._fail(
                    f"visible records after offset {n_prev} are not a prefix of what the child "
                    f"attempted (seqs {seq_start}..{attempted_end - 1}): {_runs(seqs)}"
                )
            end = seq_start + k
            if end > attempted_end:
                raise self._fail(f"{end - attempted_end} records were never attempted")
            if k and not any(c.seq_last == end - 1 for c in report.calls):
                raise self._fail(f"a call is partly visible: visible through seq {end - 1}")
            durable_end = seq_start
            for call in report.calls:
                if call.ack is not None:
                    first, last, reached = call.ack
                    want = (
                        n_prev + call.seq_first - seq_start,
                        n_prev + call.seq_last - seq_start,
                        call.mode,
                    )
                    if (first, last, reached) != want:
                        raise self._fail(f"ack {call.ack} of {call} should be {want}")
                    if call.mode in DURABLE_MODES:
                        durable_end = max(durable_end, call.seq_last + 1)
            if report.flushed_seq is not None:
                durable_end = max(durable_end, report.flushed_seq)
            if end < durable_end:
                lost = [c for c in report.calls if c.seq_last >= end and c.seq_first < durable_end]
                raise self._fail(
                    f"acknowledged records are missing: only seqs < {end} are visible but seqs "
                    f"< {durable_end} were acknowledged durable; lost calls: {lost[:5]}"
                )
            for call in report.calls:
                if call.seq_first >= end:
                    break
                for _ in range(call.seq_first, call.seq_last + 1):
                    self.offset_calls.append(call.call_id)
            self.offset_seqs.extend(range(seq_start, end))
            self.offset_extra.extend([extra] * k)
            self.check_records(table, n_prev)
            if stream.next_offset != n_prev + k:
                raise self._fail(f"next_offset {stream.next_offset} != {n_prev + k}")
            self.stats["records_seen"] += k
            self.stats["lost_memory_records"] += attempted_end - end
            inflight = report.calls and report.calls[-1].ack is None
            if inflight and report.calls[-1].seq_first < end:
                self.stats["inflight_visible"] += 1
            self.next_seq = attempted_end
            self.next_call += len(report.calls)
            if recover:
                self._recover_and_flush(stream, n_prev)
        if (self.root / "_local" / "streams" / encode_stream_name(STREAM) / "set-aside").exists():
            raise self._fail("recovery set head files aside")
        self.verify_commits()
        if self.committed_next > len(self.offset_seqs):
            raise self._fail(f"commits reach {self.committed_next} > {len(self.offset_seqs)}")

    def _recover_and_flush(self, stream: ta.Stream, n_prev: int) -> None:
        """Recover as a writer (by appending one record), flush, and check nothing changed."""
        self.stats["parent_recoveries"] += 1
        n = len(self.offset_seqs)
        row = child_mod.record(self.next_seq, self.next_call, self.profile)
        ack = stream.append(row, durability="local")
        if tuple(ack) != (n, n, "local"):
            raise self._fail(f"the parent's append after recovery got {ack}, expected offset {n}")
        self.offset_seqs.append(self.next_seq)
        self.offset_calls.append(self.next_call)
        self.offset_extra.append(False)
        self.next_seq += 1
        self.next_call += 1
        before = stream.read(start=n_prev)
        self.check_records(before, n_prev)
        stream.flush()
        after = stream.read(start=n_prev)
        if not after.equals(before):
            raise self._fail("reads differ before and after the parent's flush")
        leftovers = sorted(p.name for p in self.heads_dir.glob("*.arrow"))
        if leftovers:
            raise self._fail(f"head files remain after flush: {leftovers}")
        commits = stream.commits()
        if commits.column("last_offset").drop_null().to_pylist()[-1:] != [n]:
            raise self._fail(f"after flush the last commit does not end at offset {n}")

    def verify_commits(self) -> None:
        """Verify new commits: canonical JSON, no gap, root chain, segment offsets and hashes."""
        folder = self.stream_dir / "commits"
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".tmp-"))
        generations = [int(name.removesuffix(".json")) for name in names]
        if generations != list(range(len(generations))) or not all(
            name.endswith(".json") for name in names
        ):
            raise self._fail(f"commit files are not generations 0..G: {names[-5:]}")
        for g in range(len(self.roots), len(generations)):
            raw = (folder / f"{g:020d}.json").read_bytes()
            entry = json.loads(raw)
            if canonical(entry) != raw or _canonical(entry) != raw:
                raise self._fail(f"commit {g} is not canonical JSON")
            prev = self.roots[-1] if self.roots else None
            if (entry["generation"], entry["stream"], entry["prev_root"]) != (g, STREAM, prev):
                raise self._fail(f"commit {g} is not linked to generation {g - 1}: {entry}")
            # DESIGN §5, recomputed here independently and through the library.
            body = _canonical({k: v for k, v in entry.items() if k != "root"})
            root = blake3.blake3(bytes.fromhex(prev or "") + body).hexdigest()
            if not root == compute_root(entry, prev) == entry["root"]:
                raise self._fail(f"commit {g}: the root does not verify")
            for action in entry["actions"]:
                if action["type"] == "add_segment":
                    self._verify_segment(g, action)
            self.roots.append(entry["root"])

    def _verify_segment(self, generation: int, action: dict[str, Any]) -> None:
        first, last = action["first_offset"], action["last_offset"]
        if first != self.committed_next or last < first:
            raise self._fail(
                f"commit {generation}: segment {first}..{last} does not continue the stream at "
                f"{self.committed_next}"
            )
        if action["records"] != last - first + 1:
            raise self._fail(f"commit {generation}: records {action['records']} != range")
        self._hash_segment(action)
        self.committed_next = last + 1
        self.segments.append(action)

    def _hash_segment(self, action: dict[str, Any]) -> None:
        data = (self.root / action["path"]).read_bytes()
        found = blake3.blake3(data).hexdigest()
        if found != action["blake3"] or len(data) != action["bytes"]:
            raise self._fail(
                f"segment {action['path']}: blake3 {found} ({len(data)} bytes), committed "
                f"{action['blake3']} ({action['bytes']} bytes)"
            )

    def check_full(self) -> None:
        """The whole stream equals the model; the commit table matches the verified chain."""
        with ta.open(self.root) as log:
            stream = log.stream(STREAM)
            self.check_records(stream.read(), 0)
            if stream.next_offset != len(self.offset_seqs):
                raise self._fail(f"next_offset {stream.next_offset} != {len(self.offset_seqs)}")
            commits = stream.commits()
        self.verify_commits()
        if commits.column("root").to_pylist() != self.roots:
            raise self._fail("stream.commits() roots differ from the verified chain")
        for action in self.segments:
            self._hash_segment(action)


def _canonical(obj: Any) -> bytes:
    """DESIGN §5 canonical JSON (UTF-8, sorted keys, no insignificant whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _runs(values: list[int]) -> str:
    """Compact description of a list of ints as runs, for failure messages."""
    out: list[str] = []
    start = prev = None
    for v in values:
        if prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(f"{start}..{prev}" if start != prev else f"{start}")
        start = prev = v
    if start is not None:
        out.append(f"{start}..{prev}" if start != prev else f"{start}")
    return ", ".join(out[:20]) + (" ..." if len(out) > 20 else "")


# --- scenarios ------------------------------------------------------------------------------


def _mixed_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        "scenario": "mixed",
        "segment_max_records": rng.choice((50, 100, 200, 500)),
        "segment_max_bytes": rng.choice((32 << 10, 128 << 10, 1 << 20, 64 << 20)),
        "segment_max_age": rng.choice((0.05, 0.3, 60.0)),
        "mode_weights": rng.choice(((5, 1, 4), (1, 0, 9), (2, 3, 1), (1, 1, 1))),
        "max_batch": rng.choice((5, 30, 200)),
        "flush_prob": rng.choice((0.0, 0.01, 0.05)),
        "extra": rng.random() < 0.1,  # evolve the schema (once), then keep writing `extra`
    }


def _mixed_plan(rng: random.Random) -> KillPlan:
    r = rng.random()
    if r < 0.15:
        return KillPlan("START", 1, 0.0)  # during the first append's recovery
    if r < 0.25:
        return KillPlan("ACK", rng.randint(1, 3), 0.0)
    return KillPlan("START", 1, rng.uniform(0.0, 0.3))


def _run_mixed(tmp: Path, kills: int, full_check_every: int) -> CrashHarness:
    harness = CrashHarness(tmp, _seed(), "mixed")
    harness.run(kills, _mixed_cfg, _mixed_plan, recover_prob=0.5, full_check_every=full_check_every)
    assert harness.stats["kills"] == kills
    assert harness.stats["records_seen"] > 0, harness.context
    print(f"crash run (seed {harness.seed}): {harness.stats}")
    return harness


def _kill_env(default: int) -> int:
    return int(os.environ.get("TRANSIT_CRASH_KILLS", default))


@pytest.mark.crash
def test_sigkill_mixed_workload(tmp_path: Path) -> None:
    """50 SIGKILLs of a child appending in every mode, sizes and shapes, with rolls and seals.

    Proves, after every kill: dense offsets, every `local`/`tiered` ack present at its offset
    with its payload, nothing unacknowledged beyond the in-flight call, atomic calls, a commit
    chain that verifies with segment hashes, and (when the parent recovers) that sealing the
    recovered heads changes nothing.
    """
    _run_mixed(tmp_path, 50, full_check_every=10)


@pytest.mark.crash_long
def test_sigkill_mixed_workload_long(tmp_path: Path) -> None:
    """The same checks over 1,000 kills (`TRANSIT_CRASH_KILLS` overrides) on one log."""
    _run_mixed(tmp_path, _kill_env(1000), full_check_every=50)


def _seal_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        "scenario": "seal",
        "segment_max_records": 1_000_000,
        "segment_max_bytes": 1 << 30,
        "segment_max_age": 60.0,
    }


def _seal_plan(rng: random.Random) -> KillPlan:
    return KillPlan("FLUSH ", rng.randint(1, 2), rng.uniform(0.0, 0.06))


@pytest.mark.crash
def test_sigkill_while_sealing_big_head(tmp_path: Path) -> None:
    """Kills land while `flush()` seals a multi-megabyte head (encode, hash, upload, commit).

    Proves a roll interrupted at any point is recovered: the head is kept until its commit
    exists, an uncommitted segment file is ignored, and a flushed prefix is never lost.
    """
    harness = CrashHarness(tmp_path, _seed(), "big")
    harness.run(12, _seal_cfg, _seal_plan, recover_prob=0.3, full_check_every=4)
    assert harness.committed_next > 0, harness.context


def _rows_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        "scenario": "rows",
        "segment_max_records": rng.choice((20, 50, 100)),
        "segment_max_bytes": 64 << 20,
        "segment_max_age": rng.choice((0.05, 60.0)),
        "local_prob": rng.choice((0.1, 0.33)),
    }


def _rows_plan(rng: random.Random) -> KillPlan:
    return KillPlan("ACK", 1, rng.uniform(0.05, 0.4))


@pytest.mark.crash
def test_sigkill_per_record_appends(tmp_path: Path) -> None:
    """Kills during per-record `append(dict)` calls, mostly `memory` with some `local`.

    Buffered rows roll into pending heads that the sealer encodes while `local` appends make
    them durable, so sealing and group commit race on the same heads all the time. Proves the
    same contract as the mixed test, and that the child never fails on its own meanwhile.
    """
    harness = CrashHarness(tmp_path, _seed(), "mixed")
    harness.run(12, _rows_cfg, _rows_plan, recover_prob=0.5, full_check_every=4)
    assert harness.stats["records_seen"] > 0, harness.context


def _tiered_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        "scenario": "tiered",
        "segment_max_records": rng.choice((50, 1000)),
        "segment_max_bytes": 64 << 20,
        "segment_max_age": 60.0,
        "max_batch": 40,
    }


def _tiered_plan(rng: random.Random) -> KillPlan:
    return KillPlan("CALL", rng.randint(1, 6), rng.uniform(0.0, 0.02))


@pytest.mark.crash
def test_sigkill_during_tiered_wait(tmp_path: Path) -> None:
    """Kills land while a `tiered` append waits for its segment's commit.

    Proves every `tiered` ack is present after the crash, and that the in-flight call is
    either entirely committed/recovered or entirely absent.
    """
    harness = CrashHarness(tmp_path, _seed(), "mixed")
    harness.run(12, _tiered_cfg, _tiered_plan, recover_prob=0.5, full_check_every=4)
    assert harness.committed_next > 0, harness.context
