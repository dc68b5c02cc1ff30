"""`file://` backend: objects are files; every write is temp file + fsync + atomic rename/link,
except an object nothing refers to yet (`put_unreferenced`: a segment before its commit),
which is written in place while its file and folder are synced in the background."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .base import Bytes, Durable, ObjectInfo, ObjectStore, already_durable

__all__ = ["LocalStore", "fsync_dir", "make_folder", "sync_folders", "write_file_atomic"]

_TMP_PREFIX = ".tmp-"

T = TypeVar("T")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename or link inside it survives an OS crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: Bytes, durable: bool = True) -> Path:
    tmp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def make_folder(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents. Returns the folders whose entries changed (the
    parent of each folder that was missing), which must be fsynced for the new folders, and
    so what is put in them, to survive an OS crash; empty when `folder` existed."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        # Made by a concurrent writer meanwhile: its entry is still synced below, since that
        # writer may not have synced it yet.
        with contextlib.suppress(FileExistsError):
            new.mkdir()
    return [new.parent for new in missing]


def sync_folders(folders: Sequence[Path]) -> None:
    """fsync every folder of `folders` (new entries in them survive an OS crash), all at once.
    Not from a task of the sync pool (it waits for tasks it queues there)."""
    if len(folders) == 1:
        fsync_dir(folders[0])
        return
    _wait([_in_background(fsync_dir, folder) for folder in folders])


def write_file_atomic(path: Path, data: Bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` durably: temp + fsync + rename + fsync of the folder (and of
    the parents of folders it had to create).

    `durable=False` skips the fsyncs (still atomic: readers see the old file or the whole new
    one while the machine runs), for copies that are checked before use and can be fetched
    again, such as the segment cache's: after an OS crash such a file may be missing or torn,
    which its check detects."""
    created = make_folder(path.parent)
    tmp = _write_temp(path.parent, data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        sync_folders([path.parent, *created])


_syncers: tuple[int, ThreadPoolExecutor] | None = None
_syncers_lock = threading.Lock()


def _sync_pool() -> ThreadPoolExecutor:
    """This process's threads for background fsyncs (made anew in a forked child, which
    inherits the parent's pool without its threads)."""
    global _syncers
    with _syncers_lock:
        if _syncers is None or _syncers[0] != os.getpid():
            _syncers = (os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="transit-fsync"))
        return _syncers[1]


def _in_background(sync: Callable[[T], None], arg: T) -> Future[None] | None:
    """`sync(arg)` on the sync pool; done here (None) when the interpreter is exiting (a close
    in an `atexit` hook), when the pool takes no more work."""
    try:
        return _sync_pool().submit(sync, arg)
    except RuntimeError:
        sync(arg)
        return None


def _wait(futures: Sequence[Future[None] | None]) -> None:
    """Wait for every future of `futures` (None: done already), raising the first error."""
    for future in futures:
        if future is not None:
            future.result()


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: Bytes) -> int:
    view = memoryview(data).cast("B")
    written = 0
    while written < view.nbytes:
        written += os.pwrite(fd, view[written:], written)
    return written


class LocalStore(ObjectStore):
    """Objects stored as files below a root folder."""

    remote = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self.uri = self.root.as_uri()

    def _file(self, path: str) -> str:
        # Plain strings: reads of metadata call this per object, and pathlib costs ~10x more.
        parts = [p for p in path.split("/") if p]
        if "." in parts or ".." in parts:
            raise ValueError(f"invalid object path {path!r}")
        return "/".join([self._root, *parts])

    def _path(self, path: str) -> Path:
        return Path(self._file(path))

    def local_path(self, path: str) -> str | None:
        return self._file(path)

    def get(self, path: str) -> bytes:
        try:
            with open(self._file(path), "rb") as f:
                return f.read()
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(path) from None

    def get_range(self, path: str, start: int, end: int) -> bytes:
        try:
            with open(self._file(path), "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except (NotADirectoryError, IsADirectoryError):
            raise FileNotFoundError(path) from None

    def put(self, path: str, data: Bytes) -> None:
        write_file_atomic(self._path(path), data)

    def put_if_absent(self, path: str, data: Bytes) -> None:
        self.put_if_absent_after(path, data, ())

    def put_unreferenced(self, path: str, data: Bytes) -> Durable:
        """See `ObjectStore.put_unreferenced`. A new file is written at its final name and its
        data and folder entry are fsynced at once in the background: one sync's wait, where
        temp + fsync + rename + fsync of the folder is two in a row. A file already there (an
        interrupted attempt's, or a committed one written again) is replaced atomically, as
        by `put`, so bytes a commit refers to are never torn."""
        target = self._path(path)
        created = make_folder(target.parent)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            write_file_atomic(target, data)
            return already_durable
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)  # ours (O_EXCL), and nothing refers to it
            raise
        # One task per fsync, none waiting on another: a task that waited for tasks it queued
        # could hold every thread of the pool while what it waits for cannot start.
        synced = [_in_background(_fsync_and_close, fd)]
        synced += [_in_background(fsync_dir, folder) for folder in [target.parent, *created]]
        return lambda: _wait(synced)

    def put_if_absent_after(self, path: str, data: Bytes, after: Sequence[Durable]) -> None:
        """See `ObjectStore.put_if_absent_after`: the file is written and fsynced under a
        temporary name while the objects of `after` sync, then linked into place."""
        target = self._path(path)
        created = make_folder(target.parent)
        if target.exists():
            raise FileExistsError(path)
        tmp = _write_temp(target.parent, data)
        try:
            for durable in after:
                durable()
            # link() fails if the target exists, atomically: the put-if-absent primitive.
            os.link(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        sync_folders([target.parent, *created])

    def list(self, prefix: str) -> list[str]:
        folder = self._file(prefix) if prefix.strip("/") else self._root
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            e.name + "/" if e.is_dir() else e.name
            for e in entries
            if not e.name.startswith(_TMP_PREFIX)
        )

    def head(self, path: str) -> ObjectInfo:
        try:
            st = os.stat(self._file(path))
        except NotADirectoryError:
            raise FileNotFoundError(path) from None
        if stat.S_ISDIR(st.st_mode):
            raise FileNotFoundError(path)
        return ObjectInfo(path, st.st_size, st.st_mtime)

    def delete(self, path: str) -> None:
        p = self._path(path)
        try:
            if p.is_dir():
                raise FileNotFoundError(path)
            p.unlink()
        except NotADirectoryError:
            raise FileNotFoundError(path) from None
        # Folders exist only to hold objects: drop the ones this delete emptied.
        parent = p.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
