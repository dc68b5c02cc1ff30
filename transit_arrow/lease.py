"""Writer leases: at most one writer per stream, across processes and machines (DESIGN §5).

A lease is an epoch-numbered object `streams/<enc>/writer/<epoch:020d>.json` created
put-if-absent, so epochs only grow and two writers can never both acquire the same epoch. The
newest epoch is the current lease; a clean close writes the next epoch as a release. Taking
over a live (or unknown) writer's lease also writes a `fence` commit, so the old writer's next
commit attempt fails and it learns it was fenced (its local head files stay on disk).

On one machine, `flock`s in the local working dir say who is alive without waiting for a
timeout (the OS drops them when a process dies):

- `<local>/streams/<enc>/writer.lock` is held by the writer that owns the stream's local dir;
  a second writer there gets `WriterBusyError` unless it takes over;
- `<local>/streams/<enc>/heads/<epoch:020d>.lock` is held by the writer of lease `epoch` for as
  long as it lives. The lease record names it, so a writer on the same machine knows whether
  the holder is alive (a free lock: it crashed, its lease is stale), and recovery knows which
  head files belong to a live writer (one that was fenced but has not noticed yet: a
  `take_over=True` writer may share its local dir).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .commit import canonical, now_rfc3339
from .errors import StorageError, WriterBusyError
from .storage import ObjectStore

__all__ = ["EpochLock", "Lease", "LocalLock", "epoch_lock_path"]


class LocalLock:
    """An exclusive, non-blocking `flock` on `<folder>/writer.lock`.

    A writer whose open is refused (`discard`) removes the lock file and the folders it
    created for it, so a refusal leaves the local dir as it was. The file is removed while
    locked; whoever opened it just before locks a removed file, notices (its inode is not the
    path's any more) and opens again.
    """

    def __init__(self, folder: Path, stream: str) -> None:
        self.created = _make_dirs(folder)
        self.path = folder / "writer.lock"
        self.created_file = False
        while True:
            fd, created = _open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                self._remove_dirs()
                raise WriterBusyError(
                    f"stream {stream!r} is being written by another process on this machine "
                    f"({holder or 'unknown'}) using the same local dir {folder}; close it "
                    "first, or take over from a process with a different local_dir"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it meanwhile: lock the path's file
        self._fd = fd
        self.created_file = created
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        """Release after a refused open: remove the lock file and folders this lock created."""
        if self._fd >= 0 and self.created_file:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.release()
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):  # not empty: something else uses it now
                folder.rmdir()
        self.created = []


def _make_dirs(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, outermost first."""
    missing = []
    at = folder
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """Open (creating it if needed) a lock file: `(fd, whether this call created it)`."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            continue  # removed meanwhile


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def epoch_lock_path(heads_dir: Path, epoch: int) -> Path:
    """The liveness lock of the writer holding lease `epoch`, in its heads folder."""
    return heads_dir / f"{epoch:020d}.lock"


class EpochLock:
    """The `flock` a writer holds on `<heads>/<epoch>.lock` while it lives."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WriterBusyError(f"the writer lock {path} is held by another writer") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}".encode(), 0)

    def release(self) -> None:
        """Drop the lock (the file stays: its being free tells that this writer is gone)."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def probe(path: Path) -> bool | None:
        """True if a live process holds the lock, False if it is free, None if there is no
        such lock file."""
        try:
            fd = os.open(path, os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's own lock
        return False

    @staticmethod
    def clean(heads_dir: Path, below: int) -> None:
        """Remove the free lock files of epochs below `below` (writers that are gone)."""
        try:
            names = os.listdir(heads_dir)
        except FileNotFoundError:
            return
        for name in names:
            stem = name.removesuffix(".lock")
            if name.endswith(".lock") and stem.isdigit() and int(stem) < below:
                path = heads_dir / name
                if EpochLock.probe(path) is False:
                    path.unlink(missing_ok=True)


def _holder_alive(holder: dict[str, Any], local_dir: str, local_lock_held: bool) -> bool:
    """Whether the lease holder `holder` (a lease record's) is a live writer, as far as this
    machine can tell; a holder on another machine is presumed alive."""
    if holder.get("host") != socket.gethostname():
        return True
    lock = holder.get("lock")
    if isinstance(lock, str):
        held = EpochLock.probe(Path(lock))
        if held is not None:
            return held
    elif local_lock_held and holder.get("local_dir") == local_dir:
        return False  # a writer of an older version that held this dir's writer.lock
    return _pid_alive(int(holder.get("pid", -1)))


@dataclass
class Lease:
    """The lease this process holds on one stream."""

    store: ObjectStore
    folder: str
    epoch: int
    writer_id: str
    fenced_previous: dict[str, Any] | None
    lock: EpochLock | None = None

    @staticmethod
    def _epochs(store: ObjectStore, folder: str) -> list[int]:
        try:
            names = store.list(f"{folder}/writer")
        except OSError as e:
            raise StorageError(f"cannot list writer leases of {folder}: {e}") from e
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    @classmethod
    def current_epoch(cls, store: ObjectStore, folder: str) -> int:
        """The newest lease epoch (0 when none was ever taken)."""
        epochs = cls._epochs(store, folder)
        return epochs[-1] if epochs else 0

    @classmethod
    def acquire(
        cls,
        store: ObjectStore,
        folder: str,
        stream: str,
        writer_id: str,
        local_dir: str,
        *,
        take_over: bool,
        local_lock_held: bool,
    ) -> Lease:
        """Acquire the lease, or raise `WriterBusyError` naming the holder and the way out."""
        epochs = cls._epochs(store, folder)
        latest = epochs[-1] if epochs else 0
        fenced: dict[str, Any] | None = None
        if latest:
            record = json.loads(store.get(f"{folder}/writer/{latest:020d}.json"))
            holder = record.get("holder")
            if not record.get("released") and holder is not None:
                alive = _holder_alive(holder, local_dir, local_lock_held)
                if alive and not take_over:
                    raise WriterBusyError(
                        f"stream {stream!r} is held by writer {holder.get('id')} "
                        f"(host {holder.get('host')}, pid {holder.get('pid')}, epoch {latest}, "
                        f"since {record.get('acquired_at')}); pass take_over=True to fence it"
                    )
                if alive:
                    fenced = {"epoch": latest, **holder}
        epoch = latest + 1
        # Hold the liveness lock before the record naming it exists, so nobody ever finds the
        # record with its lock free while this writer lives.
        lock_path = epoch_lock_path(Path(local_dir) / "heads", epoch)
        lock = EpochLock(lock_path)
        record = {
            "epoch": epoch,
            "holder": {
                "id": writer_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "local_dir": local_dir,
                "lock": str(lock_path),
            },
            "acquired_at": now_rfc3339(),
        }
        try:
            store.put_if_absent(f"{folder}/writer/{epoch:020d}.json", canonical(record))
        except FileExistsError:
            lock.release()
            raise WriterBusyError(
                f"stream {stream!r}: another writer acquired the lease at the same moment "
                f"(epoch {epoch}); retry, or pass take_over=True"
            ) from None
        except OSError as e:
            lock.release()
            raise StorageError(f"cannot write the writer lease of {stream!r}: {e}") from e
        return cls(store, folder, epoch, writer_id, fenced, lock)

    def is_current(self) -> bool:
        """False once a newer epoch exists (this writer was fenced or released)."""
        return self.current_epoch(self.store, self.folder) == self.epoch

    def release_lock(self) -> None:
        """Drop the liveness lock (this writer is done with the stream, cleanly or not)."""
        if self.lock is not None:
            self.lock.release()

    def release(self) -> None:
        """Write the release record (epoch + 1); harmless if someone took over already."""
        record = {"epoch": self.epoch + 1, "released": True, "released_at": now_rfc3339()}
        # Someone may have taken over already; the release is then moot.
        with contextlib.suppress(FileExistsError, OSError):
            self.store.put_if_absent(
                f"{self.folder}/writer/{self.epoch + 1:020d}.json", canonical(record)
            )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
