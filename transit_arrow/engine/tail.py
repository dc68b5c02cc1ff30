"""Live tails: a stream's records as they are appended, in offset order (DESIGN §8).

A `Tail` yields the records of a stream's replay from an offset on: first what is already
there (its ancestors' history for a branch, committed segments, unsealed heads), then each new
record as it becomes visible, in offset order, with no gap and no duplicate. It reads through
the same `ReplayPlan` as `Stream.read`, so a record sealed between two reads is found in its
segment at the same offset; each batch's first `_offset` is checked against the expected one,
and a read that would skip an offset is retried instead of served.

Waiting is never a busy poll:

- **In-process** writers notify the catalog's condition after every append and every seal
  commit (`Catalog.notify_changed`); a tail waits on it.
- **Other processes on this machine** append to head files under the local dir and commit to
  the store. One watcher thread per process (`_Hub`) holds one Linux inotify instance watching
  each tailed stream's heads folder and, for a store on the local filesystem, its commit
  folder; an event turns into `notify_changed`, which wakes the tails.
- **Elsewhere** (a store without local files, such as S3, written from another machine; or no
  inotify) the watcher checks the stream's commit log every `poll_interval` seconds (default
  0.1 s), without waking tails unless the stream changed.

Across processes a tail sees what `read()` would: the verified frames of the head files and
committed segments. It reads each head file incrementally (`segments.head_reader`): a wake-up
reads and hashes only the frames written since the last one, so the cost of a new record does
not grow with the head. In the writer's own process it sees records once they are in the
in-memory head, like `read()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from ..errors import IntegrityError, InvalidInputError, LogClosedError, StorageError
from ..layout import commits_folder, heads_dir, stream_folder
from ..manifest import Manifest
from ..segments.head import HeadBatches, fenced_epoch
from ..segments.head_reader import HeadsReader, chain
from ..typing import Durability
from .catalog import Catalog
from .read import ReplayPlan

__all__ = ["DEFAULT_POLL_INTERVAL", "Tail", "check_tail_args"]

_log = logging.getLogger("transit_arrow")

#: Seconds between checks of a stream's commit log where no inotify watch can see it.
DEFAULT_POLL_INTERVAL = 0.1

# A tail held back by its durability (records appended in this process, not yet durable at the
# level asked) looks again after this long, doubling up to the maximum while nothing new comes:
# the writer notifies appends and commits, not syncs.
_DURABLE_POLL = 0.002
_DURABLE_POLL_MAX = 0.1

# A read that raced a seal in another process (a head removed between listing and reading it,
# or a manifest older than the heads) is retried this many times before waiting for a change.
_RACE_RETRIES = 5
_RACE_PAUSE = 0.002

# inotify(7) constants (linux/inotify.h).
_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_MASK = (
    _IN_MODIFY
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
_EVENT = struct.Struct("iIII")


def check_tail_args(start: object, timeout: object) -> tuple[int, float | None]:
    """Validate `tail`'s arguments: `start` an offset >= 0 (None: 0), `timeout` seconds >= 0
    or None."""
    if start is None:
        start = 0
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidInputError(f"start must be an offset >= 0, not {start!r}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidInputError(f"timeout must be a number of seconds or None, not {timeout!r}")
        if not timeout >= 0:
            raise InvalidInputError(f"timeout must be >= 0 seconds, not {timeout!r}")
        timeout = float(timeout)
    return start, timeout


# --- the watcher ---------------------------------------------------------------------------


class _Inotify:
    """A non-blocking inotify instance (Linux), through libc with ctypes."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._init = libc.inotify_init1
        self._add = libc.inotify_add_watch
        self._rm = libc.inotify_rm_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._init(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd: int = fd

    def add(self, path: Path) -> int:
        wd = int(self._add(self.fd, os.fsencode(path), _MASK))
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}")
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)  # fails harmlessly for a watch the kernel already dropped

    def read(self) -> list[tuple[int, int]]:
        """The pending events as (watch descriptor, mask); [] when there are none."""
        out: list[tuple[int, int]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, pos)
                out.append((wd, mask))
                pos += _EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


@dataclass(eq=False)
class _Subscription:
    """What one tail asks the hub to watch, and how to tell it."""

    targets: tuple[Path, ...]  # folders whose changes matter (they may not exist yet)
    notify: Callable[[], None]  # called (in the hub thread) when they may have changed
    poll: Callable[[], bool] | None  # checked every `interval`; True means "changed"
    interval: float
    due: float = 0.0
    watched: dict[Path, int] = field(default_factory=dict)  # folder -> watch descriptor


class _Hub:
    """One thread and one inotify instance per process, shared by every tail.

    The thread lives while there are subscriptions. Events on a watched folder call the
    subscriptions' `notify`; a subscription whose target folder does not exist yet watches its
    nearest existing parent and is re-armed when something is created there. Where inotify is
    unavailable, every subscription is polled instead.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.subs: set[_Subscription] = set()
        self.by_wd: dict[int, set[_Subscription]] = {}
        self.thread: threading.Thread | None = None
        self.inotify: _Inotify | None = None
        self.wake_r, self.wake_w = -1, -1
        self.warned = False

    # -- subscriptions (any thread) ------------------------------------------------------

    def subscribe(self, sub: _Subscription) -> _Subscription:
        with self.lock:
            if self.thread is None:
                self._start()
            if self.inotify is None and sub.poll is None:
                sub.poll = _always  # no inotify: rescan on every poll
            sub.due = time.monotonic() + sub.interval
            self.subs.add(sub)
            self._arm(sub)
            self._wake()
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        with self.lock:
            if sub not in self.subs:
                return
            self.subs.discard(sub)
            for wd in sub.watched.values():
                self._release(sub, wd)
            sub.watched.clear()
            self._wake()

    # -- internals (caller holds `lock`) ----------------------------------------------------

    def _start(self) -> None:
        try:
            self.inotify = _Inotify()
        except (OSError, AttributeError) as e:  # not Linux, or out of inotify instances
            self.inotify = None
            if not self.warned:
                self.warned = True
                _log.warning("inotify is unavailable (%s): tails poll for changes instead", e)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.thread = threading.Thread(target=self._run, name="transit-tail-watch", daemon=True)
        self.thread.start()

    def _arm(self, sub: _Subscription) -> None:
        """Watch each target folder, or its nearest existing parent until it exists."""
        if self.inotify is None:
            return
        wanted: dict[Path, int] = {}
        for target in sub.targets:
            path = target
            while True:
                if path in wanted:
                    break
                try:
                    wanted[path] = self.inotify.add(path)
                    break
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ENOTDIR) or path.parent == path:
                        _log.warning("cannot watch %s (%s): polling it instead", path, e)
                        if sub.poll is None:
                            sub.poll = _always
                        break
                    path = path.parent
        for path, wd in sub.watched.items():
            if wanted.get(path) != wd:
                self._release(sub, wd)
        for wd in wanted.values():
            self.by_wd.setdefault(wd, set()).add(sub)
        sub.watched = wanted

    def _release(self, sub: _Subscription, wd: int) -> None:
        subs = self.by_wd.get(wd)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.by_wd[wd]
            if self.inotify is not None:
                self.inotify.remove(wd)

    def _wake(self) -> None:
        """Make the thread look at the subscriptions again (caller holds `lock`)."""
        if self.wake_w >= 0:
            with contextlib.suppress(OSError):  # a full pipe already wakes it
                os.write(self.wake_w, b"x")

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.subs:
                    self._stop()
                    return
                now = time.monotonic()
                polled = [s for s in self.subs if s.poll is not None]
                timeout = max(0.0, min(s.due for s in polled) - now) if polled else None
                fds = [self.wake_r] + ([self.inotify.fd] if self.inotify is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            to_notify: set[_Subscription] = set()
            with self.lock:
                if self.inotify is not None and self.inotify.fd in ready:
                    for wd, mask in self.inotify.read():
                        if mask & _IN_Q_OVERFLOW:
                            to_notify |= self.subs
                            continue
                        for sub in list(self.by_wd.get(wd, ())):
                            to_notify.add(sub)
                            gone = mask & (_IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF)
                            if gone or set(sub.watched) != set(sub.targets):
                                self._arm(sub)  # a target appeared, or a watch went away
                now = time.monotonic()
                due = [s for s in self.subs if s.poll is not None and s.due <= now]
                for sub in due:
                    sub.due = now + sub.interval
            for sub in due:
                assert sub.poll is not None
                try:
                    if sub.poll():
                        to_notify.add(sub)
                except Exception as e:  # a flaky store must not kill the watcher
                    _log.debug("tail poll failed: %r", e)
            for sub in to_notify:
                try:
                    sub.notify()
                except Exception as e:
                    _log.debug("tail notification failed: %r", e)

    def _stop(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.wake_r = self.wake_w = -1
        self.by_wd.clear()
        self.thread = None

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, watches and descriptors."""
        for fd in (self.wake_r, self.wake_w, self.inotify.fd if self.inotify else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._reset()


def _always() -> bool:
    return True


_HUB = _Hub()
os.register_at_fork(after_in_child=_HUB.reset_after_fork)


# --- the tail ------------------------------------------------------------------------------


class _Stop(Exception):
    """The tail ends (its log was closed, or it was closed)."""


class Tail:
    """An iterator of a stream's record batches from an offset on, as they are appended.

    Get one from `Stream.tail` (or `Cursor.tail`). Batches have the stream's read schema as of
    when they were read (a column added later appears in later batches).

    `durability` is the level a record must have reached before the tail yields it:
    `memory` (the default) yields what this process's writer holds as soon as it is appended,
    like `read()`; `local` only records synced to the head files (or committed), `tiered`
    only committed ones. A tail that serves other machines (the Flight server) asks for the
    level its appenders are acknowledged at, so it never shows a record that a crash could
    take back. Records another process writes are seen once written to its head files
    (`memory` and `local`) or committed (`tiered`). Iteration ends after
    `timeout` seconds without a new record (never when `timeout` is None), when the tail is
    closed (`close()`, from any thread, or leaving a `with` block) or when its log is closed.
    A tail dropped without closing releases its watch when it is garbage collected.
    """

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        start: int,
        *,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        durability: Durability = "memory",
    ) -> None:
        # The generator references the follower, never this object: dropping the last
        # reference to a tail frees it at once (no cycle), which releases its watch.
        self._follower = _Follower(catalog, name, start, timeout, poll_interval, durability)
        self._runner: Generator[pa.RecordBatch, None, None] = self._follower.run()

    @property
    def name(self) -> str:
        """The stream."""
        return self._follower.name

    @property
    def position(self) -> int:
        """The offset of the next record the tail will yield (resume from it)."""
        return self._follower.position

    def __repr__(self) -> str:
        return f"<Tail of {self.name!r} at offset {self.position}>"

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._runner)

    def __enter__(self) -> Tail:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the tail: a waiting `next()` returns (StopIteration) promptly. Thread-safe."""
        self._follower.close()
        with contextlib.suppress(ValueError):  # iterating in another thread: it stops by itself
            self._runner.close()


class _Follower:
    """A tail's state and loop (see `Tail`)."""

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        start: int,
        timeout: float | None,
        poll_interval: float,
        durability: Durability,
    ) -> None:
        self.catalog = catalog
        self.name = name
        self.position = start
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.durability = durability
        self.held_back = False  # the last read stopped at the durable end, short of the end
        self.closed = False
        # Where the head holding `position` was last cut: (head start, batches skipped, the
        # offset after them), so a long head is not walked from its start on every read.
        self._cut = (-1, 0, 0)
        # The heads another process writes, each read from where the last read stopped.
        self._files = HeadsReader(heads_dir(catalog.local_dir, name))
        self._fenced = (-1, 0)  # (generation, the epoch fenced as of it)

    def close(self) -> None:
        self.closed = True
        self.catalog.wake_all()

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> Generator[pa.RecordBatch, None, None]:
        sub = _HUB.subscribe(self._subscription())
        try:
            idle_since = time.monotonic()
            hold = _DURABLE_POLL
            while True:
                seen = self.catalog.version(self.name)
                got = False
                try:
                    for batch in self._read_new():
                        got = True
                        yield batch
                except _Stop:
                    return
                if got:
                    idle_since = time.monotonic()
                    hold = _DURABLE_POLL
                    if self.catalog.version(self.name) != seen:
                        continue  # changed while we read: read again at once
                remaining = None
                if self.timeout is not None:
                    remaining = idle_since + self.timeout - time.monotonic()
                    if remaining <= 0:
                        return
                if self.held_back:
                    remaining = hold if remaining is None else min(remaining, hold)
                    hold = min(2 * hold, _DURABLE_POLL_MAX)
                if not self._wait(seen, remaining):
                    return
        finally:
            _HUB.unsubscribe(sub)

    def _wait(self, seen: int, timeout: float | None) -> bool:
        """Wait for a change of the stream; False when the tail or its log was closed."""
        catalog = self.catalog
        catalog.wait_changed(self.name, seen, timeout, stop=lambda: self.closed)
        return not (self.closed or catalog.closed)

    def _subscription(self) -> _Subscription:
        catalog, name = self.catalog, self.name
        targets = [heads_dir(catalog.local_dir, name)]
        commits = catalog.store.local_path(commits_folder(stream_folder(name)))
        poll: Callable[[], bool] | None = None
        if commits is not None:
            targets.append(Path(commits))
        else:
            poll = _GenerationPoll(catalog, name)

        def notify() -> None:
            # This process's writer notifies by itself, and reads use its memory, not files.
            if not catalog.closed and not catalog.has_writer(name):
                catalog.notify_changed(name)

        return _Subscription(tuple(targets), notify, poll, self.poll_interval)

    # --- reading ----------------------------------------------------------------------------

    def _state(self) -> tuple[ReplayPlan, int] | None:
        """A plan of the records from `position` on and the offset after them (None: none)."""
        if self.closed:
            raise _Stop
        durable: int | None = None  # the end of what may be yielded (None: all of it)
        try:
            writer = self.catalog.writers.get(self.name)
            if writer is not None:
                if self.durability == "local":
                    durable = writer.durable_next  # read first: it only grows
                manifest, heads = self.catalog.live_state(self.name)
                heads = self._cut_heads(heads)
            else:
                manifest, heads = self._files_state()
        except LogClosedError:
            raise _Stop from None
        if self.durability == "tiered":
            durable, heads = manifest.next_offset, []
        end = manifest.next_offset
        if heads:
            start, _, batches = heads[-1]
            end = start + sum(b.num_rows for b in batches)  # only batches after the cut
        self.held_back = durable is not None and end > max(durable, manifest.next_offset)
        if self.held_back:
            assert durable is not None
            end = max(durable, manifest.next_offset)
        if end <= self.position:
            return None
        return ReplayPlan.of(self.catalog, self.name, manifest, heads), end

    def _files_state(self) -> tuple[Manifest, HeadBatches]:
        """`Catalog.live_state` for a stream another process writes, reading only what its
        head files gained since the last call, and only the batches from `position` on."""
        catalog = self.catalog
        catalog.check_open()
        # Heads first, then the manifest: a head sealed meanwhile is either read here or (its
        # file is removed only after its commit exists) in the manifest: no gap; one in both
        # is dropped by `chain`, which starts at the manifest's end: no duplicate.
        readers = self._files.refresh()
        manifest = catalog.manifest(self.name, refresh=True)
        if not readers:
            return manifest, []
        if self._fenced[0] != manifest.generation:
            self._fenced = manifest.generation, fenced_epoch(catalog.commits(self.name))
        return manifest, chain(readers, manifest.next_offset, self._fenced[1], self.position)

    def _cut_heads(self, heads: HeadBatches) -> HeadBatches:
        """The heads without the batches wholly before `position` (remembering the cut)."""
        position = self.position
        out: HeadBatches = []
        for i, (start, user, batches) in enumerate(heads):
            following = heads[i + 1][0] if i + 1 < len(heads) else None
            if following is not None and following <= position:
                continue  # this whole head is before `position`
            if start >= position or not batches:
                out.append((start, user, batches))
                continue
            cut_start, skipped, offset = self._cut
            if cut_start != start or not _starts_at(batches, skipped, offset):
                skipped, offset = 0, start
            while skipped < len(batches) and offset + batches[skipped].num_rows <= position:
                offset += batches[skipped].num_rows
                skipped += 1
            self._cut = (start, skipped, offset)
            out.append((offset, user, batches[skipped:]))
        return out

    def _read_new(self) -> Iterator[pa.RecordBatch]:
        """Every record from `position` to the stream's current end, in order."""
        for attempt in range(_RACE_RETRIES + 1):
            try:
                state = self._state()
            except (FileNotFoundError, IntegrityError, StorageError):
                # Another process sealed (and removed) a head while we read it: read again.
                if attempt == _RACE_RETRIES:
                    raise
                time.sleep(_RACE_PAUSE)
                continue
            if state is None:
                return
            plan, end = state
            _, batches = plan.batches(self.position, end, None)
            for batch in batches:
                n = batch.num_rows
                if not n:
                    continue
                offsets = batch.column("_offset")
                first = offsets[0].as_py()
                if first < self.position:  # never expected; never served twice either
                    batch = batch.slice(self.position - first)
                    if not batch.num_rows:
                        continue
                    first, offsets = self.position, batch.column("_offset")
                if first != self.position:
                    break  # a gap: the heads were read after a seal the manifest missed
                self.position = offsets[-1].as_py() + 1
                yield batch
            if self.position >= end:
                return
            time.sleep(_RACE_PAUSE * attempt)
        # Still short of the end the plan promised: wait for the next change and read again.


def _starts_at(batches: list[pa.RecordBatch], index: int, offset: int) -> bool:
    """Whether `batches[index]` holds `offset` first (or `batches[index - 1]` ends just before
    it), as a remembered cut says; batches without `_offset` cannot say otherwise."""
    if index > len(batches):
        return False
    i, at, want = (index, 0, offset) if index < len(batches) else (index - 1, -1, offset - 1)
    if i < 0:
        return True
    column = batches[i].schema.get_field_index("_offset")
    return column < 0 or batches[i].column(column)[at].as_py() == want


class _GenerationPoll:
    """Checks whether a stream's latest committed generation changed (for remote stores)."""

    def __init__(self, catalog: Catalog, name: str) -> None:
        self.catalog = catalog
        self.name = name
        self.generation = -1

    def __call__(self) -> bool:
        if self.catalog.closed or self.catalog.has_writer(self.name):
            return False
        generation = self.catalog.manifest(self.name, refresh=True).generation
        changed = generation != self.generation
        self.generation = generation
        return changed
