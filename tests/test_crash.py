"""Crash tests with real processes (DESIGN §4 durability, §5 commit log; issue 10).

Children (`tests/crash_child.py`) append in a loop and report on a pipe every call they start,
every ack they get and every call that fails; the parent SIGKILLs them at a random moment,
reopens the log and checks the §4 contract against what they reported. Children are forked
from one pre-imported zygote process, so each starts in milliseconds and hundreds of kills fit
in a minute. Every kill is a SIGKILL of a real process, at a random point of its work.

After every kill of a single writer (scenarios mixed, damaged tails, outages, seals, per-record
appends, tiered waits):

1. offsets are dense: the stream holds exactly offsets 0..n-1;
2. every record acknowledged `local` or `tiered` (and everything before a returned `flush()`) is
   present, at its acknowledged offset, with its exact payload: 0 acknowledged records lost;
3. nothing else is visible: the records after the previous state are exactly a prefix of what
   the child attempted, ending at a call boundary (calls are atomic), no garbage, no duplicate:
   0 records visible that were never attempted (an in-flight or failed call may be visible
   whole: it was made durable before the kill or the failure was reported);
   `memory`-acked records may be lost, but then so is everything after them;
4. the commit log verifies: canonical JSON, generations 0..G with no gap, the BLAKE3 root chain
   recomputed, `add_segment` offsets continuing the stream, and every referenced segment file's
   BLAKE3 and size equal to its action;
5. after the parent's own recovery and flush everything is sealed and reads are unchanged;
6. nothing was set aside, and the writer logged no error.

Damaged tails: after each kill the parent damages the end of the newest head file before
checking: it cuts it anywhere in the unacknowledged last frame, flips bytes there, appends
garbage, a copy of an earlier frame or half of the last one. Outages: the child's store fails
every commit and segment upload now and then (calls that fail report it and are not
acknowledged). Take-overs: a second child opens the stream with `take_over=True` (in the same
local dir or another one) while the first appends, and both are killed at random moments;
then every acknowledged record of either is in the stream or in an orphaned head, never both,
the fencing writer's acknowledged records are all in the stream, and the stream verifies.

The default run makes 225 kills (about a minute on 2 cores): mixed 50, damaged tails 50,
outages 40, take-overs 30 cycles of 2 kills, and 15 each while a big head is sealed, during
per-record appends and while a `tiered` append waits. `pytest -m crash_long` makes 1,000 kills
(`TRANSIT_CRASH_KILLS` scales it). `TRANSIT_CRASH_SEED` fixes the random seed; every failure
message names the seed in use.
"""

from __future__ import annotations

import contextlib
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
import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.commit import canonical, compute_root
from transit_arrow.names import encode_stream_name
from transit_arrow.segments.head import load_head, orphan_records, parse_head_name

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


def _kills(default: int) -> int:
    """`default` scaled by `TRANSIT_CRASH_KILLS` / 1000 (for the long run)."""
    value = os.environ.get("TRANSIT_CRASH_KILLS")
    return max(1, round(default * int(value) / 1000)) if value else default


# --- the zygote and its children ----------------------------------------------------------------


class Zygote:
    """The pre-imported process that forks children (see `crash_child.py`)."""

    def __init__(self, tmp: Path) -> None:
        self.stderr_path = tmp / f"zygote-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: dict[str, list[str]] = {}
        self.pids: dict[str, int] = {}
        self.exits: dict[int, int] = {}
        self.ready = False
        self.eof = False
        self.cond = threading.Condition()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        self._wait(lambda: self.ready, "READY")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode()
            word, _, rest = line.partition(" ")
            with self.cond:
                if word == "READY\n":
                    self.ready = True
                elif word == "PID":
                    tag, pid = rest.split()
                    self.pids[tag] = int(pid)
                elif word == "EXIT":
                    pid, code = rest.split()
                    self.exits[int(pid)] = int(code)
                else:
                    self.lines.setdefault(word, []).append(rest)
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + EVENT_TIMEOUT
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise AssertionError(f"zygote: no {what} ({self.stderr()[-2000:]})")
                self.cond.wait(left)

    def fork(self, tag: str, cfg: dict[str, Any]) -> ForkedChild:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**cfg, "tag": tag}).encode() + b"\n")
        self.proc.stdin.flush()
        self._wait(lambda: tag in self.pids, f"PID of {tag}")
        return ForkedChild(self, tag, self.pids[tag])

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        with self.cond:
            alive = [pid for pid in self.pids.values() if pid not in self.exits]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.pump.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class ForkedChild:
    """One child: given work at fork time, then killed."""

    def __init__(self, zygote: Zygote, tag: str, pid: int) -> None:
        self.zygote = zygote
        self.tag = tag
        self.pid = pid

    def _lines(self) -> list[str]:
        return self.zygote.lines.get(self.tag, [])

    def wait_for(self, prefix: str, occurrence: int = 1) -> None:
        """Block until the child has written `occurrence` lines starting with `prefix`."""
        z = self.zygote
        deadline = time.monotonic() + EVENT_TIMEOUT
        with z.cond:
            while True:
                lines = self._lines()
                if sum(1 for line in lines if line.startswith(prefix)) >= occurrence:
                    return
                errors = [line for line in lines if line.startswith("ERROR")]
                if errors or self.pid in z.exits or z.eof:
                    raise AssertionError(
                        f"child {self.tag} ended before {prefix!r} #{occurrence}: {errors} "
                        f"{lines[-5:]}\n{z.stderr()[-3000:]}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"child {self.tag} never wrote {prefix!r} #{occurrence}")
                z.cond.wait(left)

    def kill(self) -> list[str]:
        """SIGKILL the child (which must still be running) and return every line it wrote."""
        z = self.zygote
        with z.cond:
            if self.pid in z.exits:
                raise AssertionError(
                    f"child {self.tag} exited by itself (status {z.exits[self.pid]}) before the "
                    f"kill: {self._lines()[-5:]}\n{z.stderr()[-3000:]}"
                )
        os.kill(self.pid, signal.SIGKILL)
        z._wait(lambda: self.pid in z.exits, f"EXIT of {self.tag}")
        assert z.exits[self.pid] == -signal.SIGKILL, z.exits[self.pid]
        with z.cond:
            return list(self._lines())


# --- what a child reported ------------------------------------------------------------------


@dataclass
class Call:
    """One `append` call the child started, and its ack (or failure) if it returned."""

    call_id: int
    mode: str
    seq_first: int
    seq_last: int
    ack: tuple[int, int, str] | None = None  # (first_offset, last_offset, reached)
    failed: str | None = None  # the error type, when the call raised
    refused: bool = False  # it raised before appending anything

    @property
    def seqs(self) -> range:
        return range(self.seq_first, self.seq_last + 1)


@dataclass
class Report:
    """Everything one child wrote before it was killed."""

    calls: list[Call] = field(default_factory=list)
    flushed_seq: int | None = None  # every seq below this was committed by a returned flush()
    started: bool = False
    fenced: bool = False
    logs: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, lines: list[str], allowed_failures: tuple[str, ...] = ()) -> Report:
        report = cls()
        for line in lines:
            word, *args = line.split()
            last = report.calls[-1] if report.calls else None
            if word == "START":
                report.started = True
            elif word == "CALL":
                assert last is None or last.ack or last.failed, f"two calls in flight: {line}"
                report.calls.append(Call(int(args[0]), args[1], int(args[2]), int(args[3])))
            elif word == "ACK":
                mode, first, end, s_first, s_last, reached, call_id = args
                assert last is not None and last.ack is None, f"ack without its call: {line}"
                assert (last.call_id, last.mode, last.seq_first, last.seq_last) == (
                    int(call_id),
                    mode,
                    int(s_first),
                    int(s_last),
                ), f"ack {line!r} does not match its call {last}"
                last.ack = (int(first), int(end), reached)
            elif word == "FAIL":
                assert last is not None and last.call_id == int(args[0]), line
                assert args[1] in allowed_failures, f"unexpected failure: {line}"
                last.failed = args[1]
                last.refused = args[2] == "0"
            elif word == "FLUSHED":
                report.flushed_seq = int(args[0])
            elif word == "FENCED":
                report.fenced = True
            elif word == "LOG":
                report.logs.append(line)
            elif word in ("FLUSH", "FLUSHFAIL", "OUTAGE"):
                pass
            else:
                raise AssertionError(f"unexpected line from the child: {line!r}")
        return report

    def appended(self) -> list[Call]:
        """The calls whose records joined the stream in this order (refused ones did not)."""
        return [c for c in self.calls if not c.refused]

    def durable_count(self) -> int:
        """How many of the appended records, from the first, must survive: those of calls
        acknowledged `local`/`tiered`, and everything before them or a returned flush()."""
        need = count = 0
        for call in self.appended():
            count += len(call.seqs)
            if call.ack is not None and call.mode in DURABLE_MODES:
                need = count
            if self.flushed_seq is not None and call.seq_last < self.flushed_seq:
                need = max(need, count)
        return need


# --- the single-writer harness ------------------------------------------------------------------


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

    def __init__(self, tmp: Path, seed: int, profile: str, zygote: Zygote) -> None:
        self.tmp = tmp
        self.root = tmp / "log"
        self.seed = seed
        self.profile = profile
        self.zygote = zygote
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
        self.stats |= {"inflight_visible": 0, "records_seen": 0, "failed_calls": 0}
        self.stats |= {"damaged_tails": 0}
        with ta.open(self.root) as log:
            log.create_stream(STREAM, schema=child_mod.SCHEMA)
        self.stream_dir = self.root / "streams" / encode_stream_name(STREAM)
        local = self.root / "_local" / "streams" / encode_stream_name(STREAM)
        self.heads_dir = local / "heads"
        self.aside_dir = local / "set-aside"
        self.verify_commits()

    # --- driving children ---------------------------------------------------------------

    def run(
        self,
        kills: int,
        make_cfg: Callable[[random.Random], dict[str, Any]],
        make_plan: Callable[[random.Random], KillPlan],
        recover_prob: float,
        full_check_every: int,
        damage: bool = False,
    ) -> None:
        """`kills` cycles of: fork a child, kill it per plan, maybe damage, verify, recover."""
        for i in range(kills):
            cfg = {
                **make_cfg(self.rng),
                "root": str(self.root),
                "stream": STREAM,
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
            errors_before = len(self.zygote.stderr())
            child = self.zygote.fork(f"c{i}-{time.monotonic_ns()}", cfg)
            try:
                child.wait_for(plan.prefix, plan.occurrence)
                if plan.delay:
                    time.sleep(plan.delay)
                lines = child.kill()
            except AssertionError as e:
                raise self._fail(str(e)) from None
            self.stats["kills"] += 1
            stderr = self.zygote.stderr()[errors_before:]
            assert not stderr.strip(), f"{self.context} child stderr:\n{stderr}"
            allowed = ("StorageError",) if cfg["scenario"] == "outage" else ()
            report = Report.parse(lines, allowed)
            errors = [line for line in report.logs if " ERROR " in f" {line} "]
            if errors:
                raise self._fail(f"the writer logged errors: {errors[:3]}")
            if damage:
                self.damage_tail(report)
            self.check_crash(
                report, extra=cfg.get("extra", False), recover=self.rng.random() < recover_prob
            )
            if (i + 1) % full_check_every == 0 or i + 1 == kills:
                self.check_full()

    # --- damaging the tail of the newest head ------------------------------------------------

    def damage_tail(self, report: Report) -> None:
        """Damage the newest head file after what the child acknowledged (a torn write, as a
        crash or a bad disk leaves it): never a byte of a frame holding an acked record."""
        files = sorted(
            (p for p in self.heads_dir.glob("*.arrow") if parse_head_name(p.name)),
            key=lambda p: parse_head_name(p.name) or (0, None),
        )
        if not files:
            return
        path = files[-1]
        head = load_head(path)
        durable_offset = len(self.offset_seqs) + report.durable_count()
        protect = head.valid_bytes
        if head.frames:
            last = head.frames[-1]
            last_first = head.end_offset - last.records
            protect = last.start if last_first >= durable_offset else last.end
        data = bytearray(path.read_bytes())
        rng = self.rng
        kind = rng.choice(("cut", "flip", "garbage", "replay", "partial"))
        if kind == "cut" and len(data) > protect:
            data = data[: rng.randint(protect, len(data))]
        elif kind == "flip" and len(data) > protect:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(protect, len(data))] ^= rng.randint(1, 255)
        elif kind == "replay" and head.frames:
            frame = rng.choice(head.frames)
            data += data[frame.start : frame.end]
        elif kind == "partial" and head.frames:
            frame = head.frames[-1]
            data += data[frame.start : frame.start + (frame.end - frame.start) // 2]
        else:
            data += rng.randbytes(rng.randint(1, 2000))
        path.write_bytes(bytes(data))
        self.stats["damaged_tails"] += 1

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
        self.stats["failed_calls"] += sum(1 for c in report.calls if c.failed)
        appended = report.appended()
        order = [s for call in appended for s in call.seqs]  # seqs in offset order
        with ta.open(self.root) as log:
            stream = log.stream(STREAM)
            # Read-only first: a reader sees the valid frames of the heads, without recovery.
            table = stream.read(start=n_prev)
            k = table.num_rows
            seqs = table.column("writer_seq").to_pylist()
            if seqs != order[:k]:
                raise self._fail(
                    f"visible records after offset {n_prev} are not a prefix of what the child "
                    f"appended (seqs {seq_start}..{attempted_end - 1}): {_runs(seqs)}"
                )
            if k and not any(c.seq_last == seqs[-1] for c in appended):
                raise self._fail(f"a call is partly visible: visible through seq {seqs[-1]}")
            at = n_prev
            for call in appended:
                if call.ack is not None:
                    first, last, reached = call.ack
                    want = (at, at + len(call.seqs) - 1, call.mode)
                    if (first, last, reached) != want:
                        raise self._fail(f"ack {call.ack} of {call} should be {want}")
                at += len(call.seqs)
            durable = report.durable_count()
            if k < durable:
                lost = [c for c in appended if c.ack is not None and c.seq_last not in seqs]
                raise self._fail(
                    f"acknowledged records are missing: only {k} records are visible but "
                    f"{durable} were acknowledged durable; lost calls: {lost[:5]}"
                )
            by_seq = {s: call.call_id for call in appended for s in call.seqs}
            self.offset_seqs.extend(seqs)
            self.offset_calls.extend(by_seq[s] for s in seqs)
            self.offset_extra.extend([extra] * k)
            self.check_records(table, n_prev)
            if stream.next_offset != n_prev + k:
                raise self._fail(f"next_offset {stream.next_offset} != {n_prev + k}")
            self.stats["records_seen"] += k
            self.stats["lost_memory_records"] += len(order) - k
            inflight = report.calls and report.calls[-1].ack is None
            if inflight and k and seqs[-1] == report.calls[-1].seq_last:
                self.stats["inflight_visible"] += 1
            self.next_seq = attempted_end
            self.next_call += len(report.calls)
            if recover:
                self._recover_and_flush(stream, n_prev)
        if self.aside_dir.exists() and any(self.aside_dir.iterdir()):
            raise self._fail(f"recovery set head files aside: {os.listdir(self.aside_dir)}")
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
        leftovers = sorted(p.name for p in self.heads_dir.glob("*.arrow") if p.stat().st_size)
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


@pytest.fixture
def zygote(tmp_path: Path) -> Any:
    """The process children are forked from (one per test)."""
    z = Zygote(tmp_path)
    try:
        yield z
    finally:
        z.close()


# --- single-writer scenarios ----------------------------------------------------------------


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
    return KillPlan("START", 1, rng.uniform(0.0, 0.15))


def _run(
    tmp: Path,
    zygote: Zygote,
    kills: int,
    cfg: Callable[[random.Random], dict[str, Any]],
    plan: Callable[[random.Random], KillPlan],
    *,
    profile: str = "mixed",
    recover_prob: float = 0.5,
    full_check_every: int = 10,
    damage: bool = False,
) -> CrashHarness:
    harness = CrashHarness(tmp, _seed(), profile, zygote)
    harness.run(kills, cfg, plan, recover_prob, full_check_every, damage=damage)
    assert harness.stats["kills"] == kills
    print(f"crash run (seed {harness.seed}): {harness.stats}")
    return harness


@pytest.mark.crash
def test_sigkill_mixed_workload(tmp_path: Path, zygote: Zygote) -> None:
    """50 SIGKILLs of a child appending in every mode, sizes and shapes, with rolls and seals.

    Proves, after every kill: dense offsets, every `local`/`tiered` ack present at its offset
    with its payload, nothing unacknowledged beyond the in-flight call, atomic calls, a commit
    chain that verifies with segment hashes, and (when the parent recovers) that sealing the
    recovered heads changes nothing.
    """
    harness = _run(tmp_path, zygote, _kills(50), _mixed_cfg, _mixed_plan)
    assert harness.stats["records_seen"] > 0, harness.context


@pytest.mark.crash
def test_sigkill_with_damaged_head_tails(tmp_path: Path, zygote: Zygote) -> None:
    """50 kills of the mixed workload, each followed by random damage to the end of the newest
    head after its acknowledged frames (cut, flipped bytes, garbage, a replayed or half
    frame): recovery cuts exactly the damaged tail and keeps every acknowledged record."""
    harness = _run(tmp_path, zygote, _kills(50), _mixed_cfg, _mixed_plan, damage=True)
    # A kill leaves a head to damage only some of the time (often none is open yet on a busy
    # machine): go on killing, up to 150 more, until a tail was damaged.
    for _ in range(3):
        if harness.stats["damaged_tails"]:
            break
        harness.run(_kills(50), _mixed_cfg, _mixed_plan, 0.5, 10, damage=True)
    assert harness.stats["damaged_tails"] > 0 and harness.stats["records_seen"] > 0


def _outage_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        **_mixed_cfg(rng),
        "scenario": "outage",
        "segment_max_records": rng.choice((10, 30, 100)),
        "segment_max_age": rng.choice((0.05, 0.3)),
        "mode_weights": rng.choice(((3, 2, 3), (1, 1, 1), (4, 1, 1))),
        "max_batch": rng.choice((5, 30)),
        "outage_on": rng.choice((0.1, 0.3)),
        "outage_off": rng.choice((0.05, 0.3)),
        "seal_retries": rng.choice((0, 1, 2)),  # fail waiting calls within the kill window
    }


def _outage_plan(rng: random.Random) -> KillPlan:
    if rng.random() < 0.6:
        return KillPlan("OUTAGE on", 1, rng.uniform(0.0, 0.3))
    return KillPlan("START", 1, rng.uniform(0.0, 0.2))


@pytest.mark.crash
def test_sigkill_during_store_outages(tmp_path: Path, zygote: Zygote) -> None:
    """40 kills of a child whose store fails every commit and upload now and then: `tiered`
    appends and flushes fail while it is down (and say so), `local` ones go on until the
    backpressure limit, seals are retried. After each kill every acknowledged record is there,
    a failed call is whole or absent, and the commit chain verifies."""
    harness = _run(tmp_path, zygote, _kills(40), _outage_cfg, _outage_plan)
    assert harness.stats["records_seen"] > 0, harness.context


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
def test_sigkill_while_sealing_big_head(tmp_path: Path, zygote: Zygote) -> None:
    """Kills land while `flush()` seals a multi-megabyte head (encode, hash, upload, commit).

    Proves a roll interrupted at any point is recovered: the head is kept until its commit
    exists, an uncommitted segment file is ignored, and a flushed prefix is never lost.
    """
    harness = _run(
        tmp_path, zygote, _kills(15), _seal_cfg, _seal_plan, profile="big", recover_prob=0.3,
        full_check_every=5,
    )  # fmt: skip
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
    return KillPlan("ACK", 1, rng.uniform(0.02, 0.2))


@pytest.mark.crash
def test_sigkill_per_record_appends(tmp_path: Path, zygote: Zygote) -> None:
    """Kills during per-record `append(dict)` calls, mostly `memory` with some `local`.

    Buffered rows roll into pending heads that the sealer encodes while `local` appends make
    them durable, so sealing and group commit race on the same heads all the time. Proves the
    same contract as the mixed test, and that the child never fails on its own meanwhile.
    """
    harness = _run(tmp_path, zygote, _kills(15), _rows_cfg, _rows_plan, full_check_every=5)
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
def test_sigkill_during_tiered_wait(tmp_path: Path, zygote: Zygote) -> None:
    """Kills land while a `tiered` append waits for its segment's commit.

    Proves every `tiered` ack is present after the crash, and that the in-flight call is
    either entirely committed/recovered or entirely absent.
    """
    harness = _run(tmp_path, zygote, _kills(15), _tiered_cfg, _tiered_plan, full_check_every=5)
    assert harness.committed_next > 0, harness.context


def _bulk_cfg(rng: random.Random) -> dict[str, Any]:
    return {
        "scenario": "tiered",
        "segment_max_records": rng.choice((4, 9)),
        "segment_max_bytes": rng.choice((64 << 20, 24 << 10)),
        "segment_max_age": 60.0,
        "max_batch": 40,
    }


@pytest.mark.crash
def test_sigkill_during_bulk_tiered_appends(tmp_path: Path, zygote: Zygote) -> None:
    """Kills land while `tiered` appends that fill a segment by themselves are written
    straight to Parquet (several segments encoded in parallel, one commit, no IPC head).

    Proves every acknowledged bulk append is present after the crash, the in-flight one is
    entirely committed or entirely absent, and segment files of an interrupted commit are
    never part of the stream.
    """
    harness = _run(tmp_path, zygote, _kills(15), _bulk_cfg, _tiered_plan, full_check_every=5)
    assert harness.committed_next > 0, harness.context


# --- take-overs ---------------------------------------------------------------------------------

B_SEQ = 1_000_000  # the fencing writer's sequence numbers start here


class TakeoverHarness:
    """Cycles of: a writer A appends; a writer B takes over (`take_over=True`, in A's local
    dir or its own) while A appends; both are killed at random moments; then each local dir
    is recovered and the stream checked. Each cycle uses a fresh stream."""

    def __init__(self, tmp: Path, seed: int, zygote: Zygote) -> None:
        self.tmp = tmp
        self.root = tmp / "log"
        self.seed = seed
        self.rng = random.Random(seed)
        self.zygote = zygote
        self.context = ""
        self.stats = {"kills": 0, "fenced_noticed": 0, "orphaned_acks": 0, "b_acks": 0}
        with ta.open(self.root):
            pass

    def _cfg(self, name: str, seq: int, **more: Any) -> dict[str, Any]:
        rng = self.rng
        return {
            "scenario": "mixed",
            "root": str(self.root),
            "stream": name,
            "seed": rng.randrange(1 << 32),
            "seq": seq,
            "call": seq,
            "profile": "mixed",
            "max_seconds": 60,
            "segment_max_records": rng.choice((5, 20, 100)),
            "segment_max_bytes": 64 << 20,
            "segment_max_age": rng.choice((0.05, 60.0)),
            "mode_weights": rng.choice(((5, 1, 4), (2, 3, 1), (1, 1, 1))),
            "max_batch": rng.choice((3, 20)),
            "flush_prob": 0.02,
            "fenceable": True,
            **more,
        }

    def run(self, cycles: int) -> None:
        for i in range(cycles):
            self.cycle(i)

    def cycle(self, i: int) -> None:
        rng = self.rng
        name = f"takeover/{i}"
        with ta.open(self.root) as log:
            log.create_stream(name, schema=child_mod.SCHEMA)
        b_dir = None if rng.random() < 0.5 else str(self.tmp / f"b{i}")
        a_cfg = self._cfg(name, 0)
        b_cfg = self._cfg(name, B_SEQ, scenario="takeover", take_over=True, local_dir=b_dir)
        a_acks, b_wait = rng.randint(1, 4), rng.choice((None, ("START", 1), ("ACK", 2)))
        delay_b, kill_a_first = rng.uniform(0.0, 0.08), rng.random() < 0.3
        self.context = (
            f"[seed {self.seed}, cycle {i}, B in {'A dir' if b_dir is None else b_dir}, A acks "
            f"{a_acks}, B waits for {b_wait} + {delay_b:.3f} s, A killed first {kill_a_first}] "
            f"(rerun with TRANSIT_CRASH_SEED={self.seed})"
        )
        errors_before = len(self.zygote.stderr())
        a = self.zygote.fork(f"A{i}-{time.monotonic_ns()}", a_cfg)
        try:
            a.wait_for("ACK", a_acks)
            b = self.zygote.fork(f"B{i}-{time.monotonic_ns()}", b_cfg)
            if b_wait is not None:
                b.wait_for(*b_wait)
            time.sleep(delay_b)
            if kill_a_first:
                a_lines, b_lines = a.kill(), b.kill()
            else:
                b_lines, a_lines = b.kill(), a.kill()
        except AssertionError as e:
            raise AssertionError(f"{self.context}\n{e}") from None
        self.stats["kills"] += 2
        stderr = self.zygote.stderr()[errors_before:]
        assert not stderr.strip(), f"{self.context} child stderr:\n{stderr}"
        a_report = Report.parse(a_lines, ("FencedError",))
        b_report = Report.parse(b_lines, ("FencedError",))
        self.stats["fenced_noticed"] += a_report.fenced
        self.check(name, a_report, b_report, b_dir)

    def check(self, name: str, a: Report, b: Report, b_dir: str | None) -> None:
        attempted = {s for r in (a, b) for c in r.calls for s in range(c.seq_first, c.seq_last + 1)}
        durable = {
            s
            for r in (a, b)
            for c in r.calls
            if c.ack is not None and c.mode in DURABLE_MODES
            for s in range(c.seq_first, c.seq_last + 1)
        }
        b_durable = {s for s in durable if s >= B_SEQ}
        dirs: list[str | None] = [None] if b_dir is None else [None, b_dir]
        for local in dirs:  # readers first: they change nothing, and see no gap
            with ta.open(self.root, local_dir=local) as log:
                self._check_table(log.stream(name).read(), attempted, set())
        sentinels = set()
        for k, local in enumerate(reversed(dirs)):  # recovery: a writer in each local dir
            with ta.open(self.root, local_dir=local) as log:
                seq = -1 - k
                log.stream(name).append(child_mod.record(seq, seq, "mixed"), durability="local")
                sentinels.add(seq)
        orphaned: list[int] = []
        with ta.open(self.root, local_dir=self.tmp / "check") as log:
            final = self._check_table(log.stream(name).read(), attempted, sentinels)
            report = log.verify(name, deep=True)
            assert report.ok, f"{self.context}\n{report}"
        for local in dirs:
            with ta.open(self.root, local_dir=local) as log:
                for row in log.orphaned_heads(name).to_pylist():
                    assert row["set_aside"], f"{self.context}: a head was left behind: {row}"
                    # a gap: a later head of a writer whose earlier head was superseded
                    assert row["kind"] in ("fenced", "superseded", "gap"), f"{self.context}: {row}"
                    _, batches = orphan_records(Path(row["path"]))
                    orphaned += [s for t in batches for s in t.column("writer_seq").to_pylist()]
        in_stream = set(final)
        lost = durable - in_stream - set(orphaned)
        assert not lost, f"{self.context}: acknowledged records lost: {sorted(lost)[:10]}"
        twice = durable & in_stream & set(orphaned)
        assert not twice, f"{self.context}: acked records both in the stream and orphaned: {twice}"
        assert not (set(orphaned) - attempted), f"{self.context}: orphans never attempted"
        missing_b = b_durable - in_stream
        assert not missing_b, f"{self.context}: the fencing writer's acks are missing: {missing_b}"
        self.stats["orphaned_acks"] += len(durable & set(orphaned))
        self.stats["b_acks"] += len(b_durable)

    def _check_table(self, table: pa.Table, attempted: set[int], extra: set[int]) -> list[int]:
        offsets = table.column("_offset").to_pylist()
        assert offsets == list(range(len(offsets))), f"{self.context}: {_runs(offsets)}"
        seqs = table.column("writer_seq").to_pylist()
        assert len(set(seqs)) == len(seqs), f"{self.context}: duplicate records {_runs(seqs)}"
        unknown = set(seqs) - attempted - extra
        assert not unknown, f"{self.context}: records never attempted: {sorted(unknown)[:10]}"
        for seq, blob in zip(seqs, table.column("blob").to_pylist(), strict=True):
            assert blob == child_mod.blob_for(seq, "mixed"), f"{self.context}: blob of {seq}"
        return [int(s) for s in seqs]


@pytest.mark.crash
def test_sigkill_during_take_over(tmp_path: Path, zygote: Zygote) -> None:
    """30 cycles of two writers: A appends, B takes over (same local dir or another) while A
    appends, both are SIGKILLed at random points (during B's open, fence or recovery, or
    while both append). Every acknowledged record is in the stream or set aside as an
    orphan (never both), B's are all in the stream, the stream verifies deep."""
    harness = TakeoverHarness(tmp_path, _seed(), zygote)
    harness.run(_kills(30))
    print(f"take-over run (seed {harness.seed}): {harness.stats}")
    assert harness.stats["kills"] == 2 * _kills(30)


class ThreadsHarness:
    """Kill cycles of a child whose threads append single records `local` at once (syncs
    overlap and are shared; heads roll and are sealed meanwhile), checking after each kill:
    offsets dense, no duplicate, nothing visible that was never attempted, each thread's
    records a prefix of its calls in call order (at most its in-flight call more), every
    acknowledged record at its acknowledged offset with its exact payload, the committed
    records unchanged, then the parent's recovery and flush change no read."""

    def __init__(self, tmp: Path, seed: int, zygote: Zygote) -> None:
        self.root = tmp / "log"
        self.seed = seed
        self.rng = random.Random(seed)
        self.zygote = zygote
        self.seqs: list[int] = []  # writer_seq at each offset so far
        self.next_seq = 0
        self.context = ""
        self.stats = {"kills": 0, "acked": 0, "inflight_visible": 0, "recoveries": 0}
        with ta.open(self.root) as log:
            log.create_stream(STREAM, schema=child_mod.SCHEMA)
        local = self.root / "_local" / "streams" / encode_stream_name(STREAM)
        self.aside_dir = local / "set-aside"

    def run(self, kills: int) -> None:
        for i in range(kills):
            threads = self.rng.choice((2, 4, 8))
            cfg = {
                "scenario": "threads",
                "threads": threads,
                "root": str(self.root),
                "stream": STREAM,
                "seed": self.rng.randrange(1 << 32),
                "seq": self.next_seq,
                "call": 0,
                "profile": "mixed",
                "max_seconds": 60,
                "segment_max_records": self.rng.choice((20, 100, 1000)),
                "segment_max_bytes": self.rng.choice((64 << 10, 64 << 20)),
                "segment_max_age": self.rng.choice((0.05, 60.0)),
            }
            # Mostly while the threads append (after some acks), now and then during the
            # writer's open and recovery.
            if self.rng.random() < 0.2:
                plan = KillPlan("START", 1, self.rng.uniform(0.0, 0.05))
            else:
                plan = KillPlan("TACK", self.rng.randint(1, 60), self.rng.uniform(0.0, 0.05))
            self.context = (
                f"[seed {self.seed}, cycle {i}, kill {plan}, cfg {cfg}] (rerun with "
                f"TRANSIT_CRASH_SEED={self.seed})"
            )
            errors_before = len(self.zygote.stderr())
            child = self.zygote.fork(f"t{i}-{time.monotonic_ns()}", cfg)
            child.wait_for(plan.prefix, plan.occurrence)
            time.sleep(plan.delay)
            lines = child.kill()
            self.stats["kills"] += 1
            stderr = self.zygote.stderr()[errors_before:]
            assert not stderr.strip(), f"{self.context} child stderr:\n{stderr}"
            self.check(lines, threads)

    def check(self, lines: list[str], threads: int) -> None:
        called: dict[int, list[int]] = {}  # thread -> its seqs, in call order
        acked: dict[int, tuple[int, str]] = {}  # seq -> (offset, durability reached)
        for line in lines:
            word, *args = line.split()
            if word == "TCALL":
                seq = int(args[0])
                called.setdefault((seq - self.next_seq) % threads, []).append(seq)
            elif word == "TACK":
                acked[int(args[0])] = (int(args[1]), args[2])
            elif word not in ("START", "LOG"):
                raise AssertionError(f"{self.context}: unexpected line {line!r}")
        n_prev = len(self.seqs)
        with ta.open(self.root) as log:
            stream = log.stream(STREAM)
            table = stream.read()  # read-only: the heads' valid frames, no recovery
            offsets = table.column("_offset").to_pylist()
            assert offsets == list(range(len(offsets))), f"{self.context}: {_runs(offsets)}"
            seqs = [int(s) for s in table.column("writer_seq").to_pylist()]
            assert seqs[:n_prev] == self.seqs, f"{self.context}: earlier records changed"
            new = seqs[n_prev:]
            assert len(set(new)) == len(new), f"{self.context}: duplicates {_runs(new)}"
            for seq, blob in zip(seqs, table.column("blob").to_pylist(), strict=True):
                assert blob == child_mod.blob_for(seq, "mixed"), f"{self.context}: blob {seq}"
            at = {seq: n_prev + k for k, seq in enumerate(new)}
            for t, mine in called.items():
                visible = [s for s in new if (s - self.next_seq) % threads == t]
                # A thread has one call in flight at a time: its visible records are its
                # calls in order, maybe without the last one (not acknowledged).
                assert visible in (mine, mine[:-1]), (
                    f"{self.context}: thread {t} called {_runs(mine)} but {_runs(visible)} "
                    "are visible"
                )
                if len(visible) == len(mine) and mine[-1] not in acked:
                    self.stats["inflight_visible"] += 1
            unknown = set(new) - {s for mine in called.values() for s in mine}
            assert not unknown, f"{self.context}: never attempted: {sorted(unknown)[:10]}"
            for seq, (offset, reached) in acked.items():
                assert reached == "local", f"{self.context}: {seq} acked {reached}"
                assert at.get(seq) == offset, (
                    f"{self.context}: acknowledged record {seq} (offset {offset}) is "
                    f"{'at ' + str(at[seq]) if seq in at else 'lost'}"
                )
            self.stats["acked"] += len(acked)
            self.seqs = seqs
            self.next_seq = max([self.next_seq - 1, *(s for m in called.values() for s in m)]) + 1
            if self.rng.random() < 0.3:  # recover as a writer, flush, reads unchanged
                self.stats["recoveries"] += 1
                row = child_mod.record(self.next_seq, self.next_seq, "mixed")
                assert stream.append(row, durability="local").first_offset == len(seqs)
                self.seqs.append(self.next_seq)
                self.next_seq += 1
                before = stream.read()
                stream.flush()
                assert stream.read().equals(before), f"{self.context}: flush changed reads"
        if self.aside_dir.exists() and any(self.aside_dir.iterdir()):
            raise AssertionError(f"{self.context}: set aside: {os.listdir(self.aside_dir)}")


@pytest.mark.crash
def test_sigkill_concurrent_local_appenders(tmp_path: Path, zygote: Zygote) -> None:
    """20 SIGKILLs of a child whose 2, 4 or 8 threads append single records `local` at once
    (overlapping, shared syncs; heads rolled and sealed meanwhile): 0 acknowledged records
    lost, each at its acknowledged offset, nothing visible that was never attempted, no
    duplicate, and the parent's recovery and flush change no read."""
    harness = ThreadsHarness(tmp_path, _seed(), zygote)
    harness.run(_kills(20))
    print(f"threads crash run (seed {harness.seed}): {harness.stats}")
    assert harness.stats["kills"] == _kills(20) and harness.stats["acked"] > 0


@pytest.mark.crash_long
def test_sigkill_1000_kills(tmp_path: Path, zygote: Zygote) -> None:
    """1,000 kills over every scenario (`TRANSIT_CRASH_KILLS` scales it)."""
    total = 0
    for scenario, (count, cfg, plan, extra) in {
        "mixed": (350, _mixed_cfg, _mixed_plan, {}),
        "damage": (200, _mixed_cfg, _mixed_plan, {"damage": True}),
        "outage": (150, _outage_cfg, _outage_plan, {}),
        "seal": (35, _seal_cfg, _seal_plan, {"profile": "big", "full_check_every": 5}),
        "rows": (35, _rows_cfg, _rows_plan, {}),
        "tiered": (30, _tiered_cfg, _tiered_plan, {}),
    }.items():
        folder = tmp_path / scenario
        folder.mkdir()
        total += _run(folder, zygote, _kills(count), cfg, plan, **extra).stats["kills"]
    (tmp_path / "takeover").mkdir()
    takeover = TakeoverHarness(tmp_path / "takeover", _seed(), zygote)
    takeover.run(_kills(100))
    total += takeover.stats["kills"]
    print(f"long crash run: {total} kills")
    planned = sum(map(_kills, (350, 200, 150, 35, 35, 30))) + 2 * _kills(100)
    assert total == planned and (total >= 1000 or "TRANSIT_CRASH_KILLS" in os.environ)
