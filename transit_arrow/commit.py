"""Commit log: canonical JSON entries chained by BLAKE3 roots, created put-if-absent (DESIGN §5)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import blake3

from .errors import CommitConflictError, IntegrityError, StorageError
from .layout import commit_path, commits_folder
from .storage import ObjectStore
from .storage.base import Durable

__all__ = ["CommitLog", "canonical", "compute_root", "now_rfc3339"]

FORMAT = 1
Commit = dict[str, Any]
#: Commits `CommitLog.prefetch` fetches at once.
PREFETCH_THREADS = 8


def canonical(obj: Any) -> bytes:
    """Canonical JSON: UTF-8, sorted keys, no insignificant whitespace."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def compute_root(entry: Commit, prev_root: str | None) -> str:
    """`blake3(bytes.fromhex(prev_root or "") + canonical(entry without "root"))` as hex."""
    body = {k: v for k, v in entry.items() if k != "root"}
    return blake3.blake3(bytes.fromhex(prev_root or "") + canonical(body)).hexdigest()


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds and a 'Z' suffix."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def writer_identity(writer_id: str, epoch: int) -> dict[str, Any]:
    """What a commit records about the process that wrote it."""
    return {"id": writer_id, "epoch": epoch, "host": socket.gethostname(), "pid": os.getpid()}


class CommitLog:
    """The commit log of one stream: `streams/<enc>/commits/<generation:020d>.json`."""

    def __init__(self, store: ObjectStore, stream: str, folder: str) -> None:
        self.store = store
        self.stream = stream
        self.folder = commits_folder(folder)
        self.stream_folder = folder
        self._fetched: dict[int, bytes] = {}

    def prefetch(self, generations: Iterable[int]) -> None:
        """Fetch these commits' bytes concurrently for the `read`s that follow (each is still
        checked there, in chain order). Only for remote stores (`ObjectStore.remote`), where
        each is a request: a fold through generation 20 then waits for about one round trip,
        not twenty. A commit that cannot be fetched is left to `read`, which raises the right
        error."""
        wanted = [g for g in generations if g not in self._fetched]
        if len(wanted) < 2 or not self.store.remote:
            return

        def fetch(generation: int) -> None:
            with contextlib.suppress(Exception):  # `read` fetches it again and reports
                self._fetched[generation] = self.store.get(self.path(generation))

        with ThreadPoolExecutor(min(PREFETCH_THREADS, len(wanted))) as pool:
            list(pool.map(fetch, wanted))

    def path(self, generation: int) -> str:
        """Store path of the commit with this generation."""
        return commit_path(self.stream_folder, generation)

    def generations(self, after: int = -1) -> list[int]:
        """Sorted generations present in the store, greater than `after`."""
        try:
            names = self.store.list(self.folder)
        except OSError as e:
            raise StorageError(f"cannot list {self.store.uri}/{self.folder}: {e}") from e
        out = []
        for name in names:
            stem, _, ext = name.partition(".")
            if ext == "json" and stem.isdigit() and int(stem) > after:
                out.append(int(stem))
        return sorted(out)

    def read(self, generation: int, prev_root: str | None) -> Commit:
        """Read and check one commit: its fields, its place in the chain and its root."""
        path = self.path(generation)
        try:
            data = self._fetched.pop(generation, None) or self.store.get(path)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StorageError(f"cannot read {self.store.uri}/{path}: {e}") from e
        try:
            entry = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IntegrityError(f"commit {self.store.uri}/{path} is not valid JSON: {e}") from e
        where = f"{self.store.uri}/{path}"
        check_commit(entry, self.stream, generation, prev_root, where, data)
        return entry  # type: ignore[no-any-return]

    def create(
        self,
        generation: int,
        prev_root: str | None,
        actions: list[dict[str, Any]],
        writer: dict[str, Any],
        *,
        after: Sequence[Durable] = (),
    ) -> Commit:
        """Create commit `generation` put-if-absent; `CommitConflictError` if it exists.

        `after`: the `Durable`s of the new segments it adds (`Catalog.put_new_segment`): the
        commit appears only once they returned, and not at all if one raises."""
        entry: Commit = {
            "format": FORMAT,
            "stream": self.stream,
            "generation": generation,
            "prev_root": prev_root,
            "time": now_rfc3339(),
            "writer": writer,
            "actions": actions,
        }
        entry["root"] = compute_root(entry, prev_root)
        path = self.path(generation)
        try:
            self.store.put_if_absent_after(path, canonical(entry), after)
        except FileExistsError:
            raise CommitConflictError(
                f"commit {generation} of stream {self.stream!r} already exists: another writer "
                "committed first; reopen the stream to see its state"
            ) from None
        except OSError as e:
            raise StorageError(f"cannot create {self.store.uri}/{path}: {e}") from e
        return entry


def check_commit(
    entry: Any,
    stream: str,
    generation: int,
    prev_root: str | None,
    where: str,
    data: bytes | None = None,
) -> None:
    """Raise `IntegrityError` unless `entry` is a well-formed commit at this chain position
    (and, given the `data` it was parsed from, unless those are its canonical bytes)."""
    if not isinstance(entry, dict):
        raise IntegrityError(f"commit {where} is not a JSON object")
    for key, expected in (
        ("format", FORMAT),
        ("stream", stream),
        ("generation", generation),
        ("prev_root", prev_root),
    ):
        if entry.get(key) != expected:
            raise IntegrityError(
                f"commit {where}: {key} is {entry.get(key)!r}, expected {expected!r}"
            )
    if not isinstance(entry.get("actions"), list):
        raise IntegrityError(f"commit {where} has no action list")
    try:
        canon = canonical(entry) if data is not None else None
        found = _root_of(canon, entry, prev_root) if canon == data else None
        if found is None:
            found = compute_root(entry, prev_root)
    except (ValueError, TypeError) as e:  # NaN, Infinity: not canonical JSON
        raise IntegrityError(f"commit {where} holds values canonical JSON cannot: {e}") from e
    if entry.get("root") != found:
        raise IntegrityError(
            f"commit {where}: root mismatch, expected {entry.get('root')!r}, found {found!r}"
        )
    if data is not None and canon != data:
        raise IntegrityError(f"commit {where} is not in canonical JSON form (bytes changed)")


def _root_of(data: bytes | None, entry: Commit, prev_root: str | None) -> str | None:
    """`compute_root(entry, prev_root)` from `data`, the canonical bytes of `entry`, without
    serializing the entry again: canonical JSON sorts keys, so the body's bytes are `data`
    without the top-level `"root"` member, its last occurrence (the members after it, stream,
    time and writer, cannot hold that root: it hashes them). None when it does not apply."""
    root = entry.get("root")
    if data is None or not isinstance(root, str):
        return None
    member = b',"root":' + canonical(root)
    at = data.rfind(member)
    if at < 0:
        return None
    body = data[:at] + data[at + len(member) :]
    return blake3.blake3(bytes.fromhex(prev_root or "") + body).hexdigest()
