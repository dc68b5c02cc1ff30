"""What only the `file://` backend (`LocalStore`) promises, beyond the conformance suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from transit_arrow.storage import LocalStore, MemoryStore, ObjectStore, store_from_uri


def _temp_names(root: Path) -> list[str]:
    """Every leftover temporary file below `root`, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    """A fresh `LocalStore` below the test's temp dir."""
    return LocalStore(tmp_path / "root")


class TestNoTemporaryLeftovers:
    """Failed writes leave no `.tmp-` files behind."""

    def test_successful_writes(self, local: LocalStore) -> None:
        """After successful `put`s and `put_if_absent`s there is no temp file."""
        local.put("a/b", b"1")
        local.put("a/b", b"2")
        local.put_if_absent("a/c", b"3")
        assert _temp_names(local.root) == []
        assert sorted(os.listdir(local.root / "a")) == ["b", "c"]

    def test_put_if_absent_on_existing_key(self, local: LocalStore) -> None:
        """A `put_if_absent` refused because the key exists leaves no temp file."""
        local.put("a/k", b"old")
        with pytest.raises(FileExistsError):
            local.put_if_absent("a/k", b"new")
        assert _temp_names(local.root) == []

    def test_put_if_absent_race_losers(self, local: LocalStore) -> None:
        """The losers of a `put_if_absent` race (refused by `os.link`) remove their temp files."""
        barrier = threading.Barrier(8)
        refused: list[int] = []

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                local.put_if_absent("race/k", bytes([i]) * 100_000)
            except FileExistsError:
                refused.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(refused) == 7
        assert _temp_names(local.root) == []
        assert os.listdir(local.root / "race") == ["k"]

    def test_put_onto_a_folder(self, local: LocalStore) -> None:
        """A `put` that fails because the key is a folder leaves no temp file."""
        local.put("a/b", b"x")
        with pytest.raises(IsADirectoryError):
            local.put("a", b"y")
        assert _temp_names(local.root) == []

    def test_write_error(self, tmp_path: Path) -> None:
        """A write that fails midway (EFBIG, as ENOSPC would) leaves no temp file.

        The failure is real: a child process lowers its file size limit (RLIMIT_FSIZE) and
        ignores SIGXFSZ, so `write` returns EFBIG after 1 MiB.
        """
        script = textwrap.dedent(
            """
            import errno, resource, signal, sys
            from transit_arrow.storage import LocalStore

            store = LocalStore(sys.argv[1])
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
            for op in (store.put, store.put_if_absent):
                try:
                    op("d/" + op.__name__, bytes(2 << 20))
                except OSError as e:
                    assert e.errno == errno.EFBIG, e
                else:
                    raise AssertionError(op.__name__ + " did not fail")
            """
        )
        root = tmp_path / "root"
        (root / "d").mkdir(parents=True)
        subprocess.run([sys.executable, "-c", script, str(root)], check=True, timeout=60)
        assert sorted(os.listdir(root / "d")) == []


class TestPathTraversal:
    """Keys cannot name anything outside the store's root."""

    @pytest.mark.parametrize("key", ["../x", "a/../../x", "a/..", "..", "./x", "a/./b"])
    def test_rejected(self, local: LocalStore, key: str) -> None:
        """'.' and '..' components are refused by every operation, before touching the disk."""
        (local.root.parent / "x").write_bytes(b"outside")
        for call in (
            lambda: local.put(key, b"evil"),
            lambda: local.put_if_absent(key, b"evil"),
            lambda: local.get(key),
            lambda: local.get_range(key, 0, 1),
            lambda: local.head(key),
            lambda: local.delete(key),
            lambda: local.list(key),
            lambda: local.local_path(key),
        ):
            with pytest.raises(ValueError, match="invalid object path"):
                call()
        assert (local.root.parent / "x").read_bytes() == b"outside"
        assert not local.root.exists()

    def test_files_stay_below_root(self, local: LocalStore) -> None:
        """Keys map to files below the root, with '/' as the only separator."""
        local.put("a/b/c", b"x")
        assert local.local_path("a/b/c") == str(local.root / "a" / "b" / "c")
        assert (local.root / "a" / "b" / "c").read_bytes() == b"x"


class TestAtomicWrites:
    """Writes go to a temp file that is fsync'd, then renamed (or linked) into place.

    fsync itself cannot be observed from a test; what can be is that the target is never
    written in place: a new file replaces it whole.
    """

    def test_put_writes_the_file(self, local: LocalStore) -> None:
        """The object is a plain file holding exactly the bytes."""
        data = os.urandom(100_000)
        local.put("d/k", data)
        path = local.local_path("d/k")
        assert path is not None
        assert Path(path).read_bytes() == data

    def test_put_replaces_by_rename(self, local: LocalStore) -> None:
        """Replacing swaps in a new inode: an open reader keeps the whole old version."""
        local.put("k", b"old" * 10_000)
        path = Path(str(local.local_path("k")))
        old_inode = path.stat().st_ino
        with open(path, "rb") as old:
            local.put("k", b"new")
            assert old.read() == b"old" * 10_000
        assert path.read_bytes() == b"new"
        assert path.stat().st_ino != old_inode

    def test_put_if_absent_links_once(self, local: LocalStore) -> None:
        """`put_if_absent` publishes by hard link and removes the temp name (one link left)."""
        local.put_if_absent("c/0.json", b"{}")
        path = Path(str(local.local_path("c/0.json")))
        assert path.read_bytes() == b"{}"
        assert path.stat().st_nlink == 1
        assert os.listdir(path.parent) == ["0.json"]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths fsynced from now on (files and folders), in order."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


class TestPutUnreferenced:
    """A new segment is written in place and synced in the background; the commit that refers
    to it appears only once its data and folder entry are synced."""

    def test_written_in_place_and_synced_before_the_commit(
        self, local: LocalStore, synced: list[str]
    ) -> None:
        durable = local.put_unreferenced("s/segments/a.parquet", b"records")
        assert _temp_names(local.root) == []  # no temporary name: the file is new
        local.put_if_absent_after("s/commits/1.json", b"{}", [durable])
        segment = str(local.root / "s/segments/a.parquet")
        segments = str(local.root / "s/segments")
        commit_link = synced.index(str(local.root / "s/commits"))  # the commit's folder, last
        assert segment in synced[:commit_link] and segments in synced[:commit_link]
        assert (local.root / "s/segments/a.parquet").read_bytes() == b"records"
        assert oct((local.root / "s/segments/a.parquet").stat().st_mode & 0o777) == "0o644"

    def test_a_failed_sync_fails_the_commit_and_creates_nothing(
        self, local: LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_fsync = os.fsync

        def failing_fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".parquet"):
                raise OSError(5, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        durable = local.put_unreferenced("s/segments/a.parquet", b"records")
        with pytest.raises(OSError, match="Input/output"):
            local.put_if_absent_after("s/commits/1.json", b"{}", [durable])
        assert local.list("s/commits") == [] and _temp_names(local.root) == []

    def test_a_failed_write_removes_the_new_file(
        self, local: LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def full_disk(fd: int, data: object, offset: int) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "pwrite", full_disk)
        with pytest.raises(OSError, match="No space"):
            local.put_unreferenced("s/segments/a.parquet", b"records")
        assert local.list("s/segments") == []

    def test_many_writers_into_new_folders_at_once_all_finish(self, local: LocalStore) -> None:
        # Each new segment into a new folder queues fsyncs of its file and of three folders;
        # 24 at once outnumber the sync pool's threads many times over. No task may wait on
        # another task of the pool (the pool would hold waiters only): all of them finish.
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                local.put_unreferenced(f"streams/s{i}/segments/x.parquet", b"records")()
            except BaseException as e:  # re-raised in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(24)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # a liveness bound (a stuck pool never ends)
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not [t for t in threads if t.is_alive()] and not errors
        assert all(local.get(f"streams/s{i}/segments/x.parquet") == b"records" for i in range(24))

    def test_an_existing_file_is_replaced_atomically(self, local: LocalStore) -> None:
        # A committed segment written again (a retried seal) is never torn for its readers.
        local.put("s/segments/a.parquet", b"records")
        before = (local.root / "s/segments/a.parquet").stat().st_ino
        local.put_unreferenced("s/segments/a.parquet", b"records")()
        assert (local.root / "s/segments/a.parquet").stat().st_ino != before  # renamed over
        assert local.get("s/segments/a.parquet") == b"records"


class TestNewFolders:
    """A write that creates folders also fsyncs the folders their entries went into, so a new
    stream's first commit survives an OS crash with the folders that hold it."""

    @pytest.mark.parametrize("how", ["put", "put_if_absent", "put_unreferenced"])
    def test_the_parents_of_created_folders_are_synced(
        self, local: LocalStore, synced: list[str], how: str
    ) -> None:
        local.put("streams/a/commits/1.json", b"{}")
        synced.clear()
        durable = getattr(local, how)("streams/b/commits/1.json", b"{}")
        if durable is not None:
            durable()
        folders = {str(local.root / f) for f in ("streams", "streams/b", "streams/b/commits")}
        assert folders <= set(synced)
        synced.clear()
        getattr(local, how)("streams/b/commits/2.json", b"{}")  # existing folders: only its own
        assert str(local.root / "streams") not in synced
        assert str(local.root / "streams/b") not in synced


class TestStoreFromUri:
    """`store_from_uri` picks the backend by URI scheme."""

    def test_path(self, tmp_path: Path) -> None:
        """A plain path (str or `Path`) is a `LocalStore` rooted there."""
        for uri in (tmp_path / "p", str(tmp_path / "p")):
            store = store_from_uri(uri)
            assert isinstance(store, LocalStore)
            assert store.root == (tmp_path / "p").resolve()
            assert store.uri == (tmp_path / "p").resolve().as_uri()

    def test_relative_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path is resolved against the current directory."""
        monkeypatch.chdir(tmp_path)
        store = store_from_uri("data")
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "data").resolve()

    def test_file_uri(self, tmp_path: Path) -> None:
        """A `file://` URI (percent-encoded) is a `LocalStore` on its path."""
        folder = tmp_path / "with space%"
        store = store_from_uri(folder.as_uri())
        assert isinstance(store, LocalStore)
        assert store.root == folder.resolve()
        store.put("k", b"x")
        assert (folder / "k").read_bytes() == b"x"

    def test_memory_same_name_same_store(self) -> None:
        """`memory://name` is one process-wide store per name."""
        name = f"test-{uuid.uuid4().hex}"
        first = store_from_uri(f"memory://{name}")
        assert isinstance(first, MemoryStore)
        assert store_from_uri(f"memory://{name}") is first
        assert store_from_uri(f"memory://{name}/") is first
        first.put("k", b"shared")
        assert store_from_uri(f"memory://{name}").get("k") == b"shared"

    def test_memory_different_names(self) -> None:
        """Different names are different stores."""
        a: ObjectStore = store_from_uri(f"memory://a-{uuid.uuid4().hex}")
        b: ObjectStore = store_from_uri(f"memory://b-{uuid.uuid4().hex}")
        assert a is not b
        a.put("k", b"x")
        assert b.is_empty()

    def test_storage_options_need_s3(self, tmp_path: Path) -> None:
        """`storage_options` only configure remote backends; elsewhere they are an error."""
        for uri in (str(tmp_path), tmp_path.as_uri(), f"memory://{uuid.uuid4().hex}"):
            with pytest.raises(ValueError, match="storage_options"):
                store_from_uri(uri, {"region": "us-east-1"})

    @pytest.mark.parametrize("uri", ["ftp://host/x", "gs://bucket/x", "http://example.com/x"])
    def test_unsupported_scheme(self, uri: str) -> None:
        """An unknown scheme raises `ValueError` naming it."""
        scheme = uri.split("://", 1)[0]
        with pytest.raises(ValueError, match=f"unsupported URI scheme '{scheme}'"):
            store_from_uri(uri)
