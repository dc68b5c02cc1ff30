"""Segment files checked against the BLAKE3 their commit records, once per version of the file.

Every read path (`read`, `reader`, `scan`, DuckDB views, materializations, the CLI) goes
through `check` before it opens a segment. The first use of a file hashes all of its bytes
(memory-mapped, multithreaded BLAKE3: well over 1 GB/s); the result is remembered in this
process, keyed by the file's identity `(path, size, mtime_ns, ctime_ns, inode, device)`. Later
uses cost one `stat`: any rewrite, truncation, replacement or `touch` of the file changes that
key, and the file is hashed again before it is served. A mismatch raises `IntegrityError`
naming the file and both hashes, and is not remembered (a repaired file reads again).

The registry also keeps the parsed footers of the verified files a read opened (`footer` /
`keep_footer`, at most `FOOTERS` of them), under the same identity: a later read of an
unchanged file skips parsing its footer again (a tenth of the work of reading a segment of
1,000 records). A footer is only ever served for the identity and digest it was read under.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import blake3

from ..errors import IntegrityError

__all__ = [
    "FOOTERS",
    "PARALLEL_HASH_BYTES",
    "VerifiedFiles",
    "check",
    "hash_bytes",
    "hash_file",
    "registry",
]

_Key = tuple[int, int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


#: Inputs at least this big are hashed on every core. Below it one thread is faster: BLAKE3's
#: thread pool costs more to wake than it saves (about 55 vs 21 µs for 100 KB), and its idle
#: workers spin in `sched_yield`, which made verifying 500 small segments spend seconds in the
#: kernel on 2 cores.
PARALLEL_HASH_BYTES = 8 * 1024 * 1024
#: Parsed footers kept (the oldest kept is dropped first): a few KB each.
FOOTERS = 4096


def _threads(size: int) -> int:
    return blake3.blake3.AUTO if size >= PARALLEL_HASH_BYTES else 1


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3 hex digest of `data` (on every core for inputs of 8 MiB or more)."""
    return str(blake3.blake3(data, max_threads=_threads(len(data))).hexdigest())


def hash_file(path: str) -> str:
    """The BLAKE3 of a file's bytes (memory-mapped; on every core for files of 8 MiB or more)."""
    size = os.path.getsize(path)
    hasher = blake3.blake3(max_threads=_threads(size))
    if size == 0:
        return str(hasher.hexdigest())  # an empty file cannot be mapped
    hasher.update_mmap(path)
    return str(hasher.hexdigest())


@dataclass
class _Entry:
    key: _Key
    digest: str


class VerifiedFiles:
    """The files this process has hashed, by path, with the identity they had then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _Entry] = {}
        # Path -> (identity, digest, parsed footer) of verified files, oldest first.
        self._footers: dict[str, tuple[_Key, str, Any]] = {}
        #: Bytes hashed so far (first touches and re-checks of changed files).
        self.hashed_bytes = 0
        #: Files hashed so far.
        self.hashed_files = 0

    def check(self, path: str, expected: str, size: int, *, what: str) -> None:
        """Raise `IntegrityError` unless the file at `path` holds exactly the `size` bytes
        whose BLAKE3 is `expected`; `what` names the file in the message (e.g. "segment
        s3://b/log/streams/x/segments/…parquet of stream 'x'")."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise IntegrityError(f"{what} is referenced by a commit but missing") from None
        except OSError as e:
            raise IntegrityError(f"{what} cannot be read: {e}") from e
        key = _key(st)
        with self._lock:
            entry = self._files.get(path)
        if entry is not None and entry.key == key and entry.digest == expected:
            return
        if st.st_size != size:
            self.forget(path)  # whatever was verified there before, it is not this file
            found = _try_hash(path)
            raise IntegrityError(
                f"{what} does not match its commit: expected BLAKE3 {expected} ({size} bytes), "
                f"found {found} ({st.st_size} bytes); nothing was read from it"
            )
        try:
            found = hash_file(path)
            after = _key(os.stat(path))
        except OSError as e:
            raise IntegrityError(f"{what} cannot be read: {e}") from e
        with self._lock:
            self.hashed_bytes += st.st_size
            self.hashed_files += 1
            if found == expected and after == key:
                self._files[path] = _Entry(key, found)
            else:
                self._files.pop(path, None)
                self._footers.pop(path, None)
        if found != expected:
            raise IntegrityError(
                f"{what} does not match its commit: expected BLAKE3 {expected}, found {found} "
                f"({size} bytes); nothing was read from it"
            )

    def remember(self, path: str, digest: str) -> None:
        """Record a file this process has just written from bytes whose BLAKE3 it checked."""
        try:
            key = _key(os.stat(path))
        except OSError:
            return
        with self._lock:
            self._files[path] = _Entry(key, digest)

    def retouch(self, path: str, digest: str) -> None:
        """Re-key a verified file after this process changed only its times (an LRU touch)."""
        try:
            key = _key(os.stat(path))
        except OSError:
            return
        with self._lock:
            entry = self._files.get(path)
            if entry is not None and entry.digest == digest:
                entry.key = key

    def footer(self, path: str, digest: str) -> Any:
        """The footer kept for `path` (see `keep_footer`) if the file is remembered as
        verified with `digest` and the identity it had when the footer was kept, else None.
        Call it right after `check`: like the check, it trusts the identity seen then."""
        with self._lock:
            entry = self._files.get(path)
            kept = self._footers.get(path)
        if entry is None or kept is None or entry.digest != digest:
            return None
        key, kept_digest, footer = kept
        return footer if key == entry.key and kept_digest == digest else None

    def keep_footer(self, path: str, digest: str, footer: Any) -> None:
        """Keep the footer parsed from the file at `path`, just checked to hold `digest`."""
        with self._lock:
            entry = self._files.get(path)
            if entry is None or entry.digest != digest:
                return
            self._footers.pop(path, None)
            self._footers[path] = (entry.key, digest, footer)
            while len(self._footers) > FOOTERS:
                del self._footers[next(iter(self._footers))]

    def forget_footers(self) -> None:
        """Drop every kept footer (the files stay remembered as verified)."""
        with self._lock:
            self._footers.clear()

    def forget(self, path: str | None = None) -> None:
        """Drop what is remembered about `path` (every file when None)."""
        with self._lock:
            if path is None:
                self._files.clear()
                self._footers.clear()
            else:
                self._files.pop(path, None)
                self._footers.pop(path, None)

    def known(self, path: str) -> bool:
        """Whether `path` is remembered as verified (with the identity it had then)."""
        with self._lock:
            return path in self._files


def _try_hash(path: str) -> str:
    try:
        return hash_file(path)
    except OSError as e:
        return f"unreadable ({e.strerror})"


#: The process-wide registry: a file verified by one log handle is verified for all.
registry = VerifiedFiles()


def check(path: str, expected: str, size: int, *, what: str) -> None:
    """`registry.check(...)`: see `VerifiedFiles.check`."""
    registry.check(path, expected, size, what=what)
