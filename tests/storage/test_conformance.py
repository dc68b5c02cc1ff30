"""The `ObjectStore` contract, run against every backend of the `store` fixture (STYLE 8, 9)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from transit_arrow.storage import ObjectInfo, ObjectStore

ALL_BYTES = bytes(range(256)) * 4
TEN_MB = 10 * 1024 * 1024


def _backend(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["store"])


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run `target(i)` in `count` threads and re-raise the first exception any of them hit."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # collected and re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


class TestGetPut:
    """`put` then `get` returns exactly the bytes written."""

    @pytest.mark.parametrize(
        "data",
        [b"", b"x", ALL_BYTES, bytes(range(255, -1, -1))],
        ids=["empty", "one-byte", "all-byte-values", "all-byte-values-reversed"],
    )
    def test_round_trip(self, store: ObjectStore, data: bytes) -> None:
        """Small objects, including the empty one and every byte value, round-trip exactly."""
        store.put("k", data)
        got = store.get("k")
        assert isinstance(got, bytes)
        assert got == data

    def test_ten_megabytes(self, store: ObjectStore) -> None:
        """A 10 MB object of random bytes round-trips exactly."""
        data = os.urandom(TEN_MB)
        store.put("big/object.bin", data)
        assert store.get("big/object.bin") == data
        assert store.head("big/object.bin").size == TEN_MB

    @pytest.mark.parametrize("kind", [bytearray, memoryview])
    def test_accepts_bytes_like(self, store: ObjectStore, kind: type) -> None:
        """`put` and `put_if_absent` accept any contiguous bytes-like object."""
        store.put("a", kind(ALL_BYTES))
        store.put_if_absent("b", kind(ALL_BYTES))
        assert store.get("a") == ALL_BYTES
        assert store.get("b") == ALL_BYTES

    def test_stored_bytes_are_a_copy(self, store: ObjectStore) -> None:
        """Mutating the caller's buffer after `put` does not change the stored object."""
        buf = bytearray(b"original")
        store.put("k", buf)
        buf[:] = b"mutated!"
        assert store.get("k") == b"original"

    def test_nested_keys(self, store: ObjectStore) -> None:
        """Keys with many '/'-separated parts are independent objects."""
        keys = ["a", "b/c", "b/d/e", "b/d/f/g/h/i.json"]
        for i, key in enumerate(keys):
            store.put(key, str(i).encode())
        for i, key in enumerate(keys):
            assert store.get(key) == str(i).encode()

    def test_get_missing_raises_file_not_found(self, store: ObjectStore) -> None:
        """Reading an absent key raises the builtin `FileNotFoundError`."""
        with pytest.raises(FileNotFoundError):
            store.get("missing")
        with pytest.raises(FileNotFoundError):
            store.get("missing/folder/key")

    def test_get_folder_raises_file_not_found(self, store: ObjectStore) -> None:
        """A folder (a key prefix) is not an object."""
        store.put("folder/key", b"x")
        with pytest.raises(FileNotFoundError):
            store.get("folder")

    def test_get_below_an_object_raises_file_not_found(
        self, store: ObjectStore, request: pytest.FixtureRequest
    ) -> None:
        """A key whose 'parent' is an object is absent, like any other absent key."""
        store.put("obj", b"x")
        with pytest.raises(FileNotFoundError):
            store.get("obj/child")
        with pytest.raises(FileNotFoundError):
            store.head("obj/child")
        assert not store.exists("obj/child")


class TestPutReplaces:
    """`put` creates or replaces an object atomically."""

    def test_replace(self, store: ObjectStore) -> None:
        """A second `put` replaces the content and the size, longer or shorter."""
        store.put("k", b"first version")
        store.put("k", b"v2")
        assert store.get("k") == b"v2"
        assert store.head("k").size == 2
        store.put("k", ALL_BYTES)
        assert store.get("k") == ALL_BYTES
        assert store.list("") == ["k"]

    def test_readers_see_old_or_new_bytes(self, store: ObjectStore) -> None:
        """While one thread keeps replacing an object, readers only ever see a whole version."""
        versions = [bytes([i]) * 200_000 for i in range(3)]
        store.put("k", versions[0])
        done = threading.Event()

        def write(_: int) -> None:
            try:
                for i in range(60):
                    store.put("k", versions[i % len(versions)])
            finally:
                done.set()

        def read(_: int) -> None:
            while not done.is_set():
                assert store.get("k") in versions

        def work(i: int) -> None:
            (write if i == 0 else read)(i)

        _run_threads(3, work)


class TestGetRange:
    """`get_range(path, start, end)` returns bytes `[start, end)`, shorter at the end."""

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 1024), (0, 1), (10, 20), (255, 257), (1023, 1024), (100, 100), (0, 0)],
    )
    def test_inside(self, store: ObjectStore, start: int, end: int) -> None:
        """A range inside the object, including an empty one, is exact."""
        store.put("k", ALL_BYTES)
        assert store.get_range("k", start, end) == ALL_BYTES[start:end]

    @pytest.mark.parametrize(("start", "end"), [(1000, 2000), (1024, 1030), (5000, 6000)])
    def test_past_end(self, store: ObjectStore, start: int, end: int) -> None:
        """A range reaching past the end is cut short (empty when it starts past the end)."""
        store.put("k", ALL_BYTES)
        assert store.get_range("k", start, end) == ALL_BYTES[start:end]

    def test_empty_object(self, store: ObjectStore) -> None:
        """Any range of an empty object is empty."""
        store.put("k", b"")
        assert store.get_range("k", 0, 10) == b""

    def test_missing_raises_file_not_found(self, store: ObjectStore) -> None:
        """A range of an absent key raises `FileNotFoundError`."""
        with pytest.raises(FileNotFoundError):
            store.get_range("missing", 0, 10)


class TestPutIfAbsent:
    """`put_if_absent` creates an object, or raises `FileExistsError` and changes nothing."""

    def test_creates(self, store: ObjectStore) -> None:
        """An absent key is created with the given bytes."""
        store.put_if_absent("a/b/c.json", b"{}")
        assert store.get("a/b/c.json") == b"{}"

    def test_existing_raises_and_keeps_content(self, store: ObjectStore) -> None:
        """A present key raises `FileExistsError` and keeps its old bytes."""
        store.put_if_absent("k", b"old")
        with pytest.raises(FileExistsError):
            store.put_if_absent("k", b"new content")
        assert store.get("k") == b"old"
        assert store.head("k").size == 3
        assert store.list("") == ["k"]

    def test_existing_from_put_raises(self, store: ObjectStore) -> None:
        """An object created by `put` also blocks `put_if_absent`."""
        store.put("k", b"old")
        with pytest.raises(FileExistsError):
            store.put_if_absent("k", b"new")
        assert store.get("k") == b"old"

    def test_after_delete_creates_again(self, store: ObjectStore) -> None:
        """Deleting a key makes it absent again."""
        store.put_if_absent("k", b"one")
        store.delete("k")
        store.put_if_absent("k", b"two")
        assert store.get("k") == b"two"

    def test_concurrent_exactly_one_wins(self, store: ObjectStore) -> None:
        """Sixteen threads racing on one key: exactly one succeeds and its bytes are stored."""
        threads = 16
        barrier = threading.Barrier(threads)
        winners: list[int] = []
        losers: list[int] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                store.put_if_absent("commits/00000000000000000001.json", f"writer {i}".encode())
            except FileExistsError:
                with lock:
                    losers.append(i)
            else:
                with lock:
                    winners.append(i)

        _run_threads(threads, attempt)
        assert len(winners) == 1, winners
        assert len(losers) == threads - 1
        assert store.get("commits/00000000000000000001.json") == f"writer {winners[0]}".encode()
        assert store.list("commits") == ["00000000000000000001.json"]


class TestPutUnreferenced:
    """`put_unreferenced` stores an object nothing refers to yet; its `Durable` returns once
    the object is durable; `put_if_absent_after` makes an object appear only after those."""

    def test_round_trip_once_durable(self, store: ObjectStore) -> None:
        durable = store.put_unreferenced("s/segments/a.parquet", ALL_BYTES)
        durable()
        assert store.get("s/segments/a.parquet") == ALL_BYTES
        assert store.list("s/segments") == ["a.parquet"]

    def test_rewriting_the_same_bytes_over_a_torn_or_longer_file(self, store: ObjectStore) -> None:
        """An interrupted attempt left a torn file, or a longer one, at the path: a new put
        leaves exactly the new bytes (and a committed file written again stays whole)."""
        store.put("k", ALL_BYTES[:100])
        store.put_unreferenced("k", ALL_BYTES)()
        assert store.get("k") == ALL_BYTES
        store.put_unreferenced("k", ALL_BYTES[:10])()
        assert store.get("k") == ALL_BYTES[:10] and store.head("k").size == 10

    def test_the_object_appears_only_after_every_durable(self, store: ObjectStore) -> None:
        seen: list[bool] = []

        def first() -> None:
            seen.append(store.exists("commits/1.json"))

        segment = store.put_unreferenced("segments/x", b"records")
        store.put_if_absent_after("commits/1.json", b"{}", [segment, first, first])
        assert seen == [False, False]
        assert store.get("commits/1.json") == b"{}"

    def test_a_failing_durable_creates_nothing(self, store: ObjectStore) -> None:
        def fails() -> None:
            raise OSError("the segment could not be synced")

        with pytest.raises(OSError, match="could not be synced"):
            store.put_if_absent_after("commits/1.json", b"{}", [fails])
        assert not store.exists("commits/1.json")
        assert store.list("commits") == []
        store.put_if_absent("commits/1.json", b"{}")  # the slot is still free

    def test_an_existing_object_raises_and_keeps_content(self, store: ObjectStore) -> None:
        store.put_if_absent("k", b"old")
        with pytest.raises(FileExistsError):
            store.put_if_absent_after("k", b"new", [store.put_unreferenced("seg", b"x")])
        assert store.get("k") == b"old"


class TestList:
    """`list(prefix)`: sorted child names of a folder, sub-folders as 'name/'."""

    def test_children_sorted(self, store: ObjectStore) -> None:
        """Objects directly under a folder come back by name, sorted."""
        for name in ["b", "a", "c.json", "B", "a-1", "0"]:
            store.put(f"dir/{name}", b"x")
        assert store.list("dir") == sorted(["b", "a", "c.json", "B", "a-1", "0"])

    def test_sub_folders(self, store: ObjectStore) -> None:
        """Sub-folders appear once each, as 'name/', sorted together with objects."""
        for key in ["s/x/1", "s/x/2", "s/y/z/3", "s/w", "s/x-file"]:
            store.put(key, b"x")
        listing = store.list("s")
        assert listing == sorted(listing)
        assert listing == sorted(["w", "x/", "x-file", "y/"])
        assert store.list("s/y") == ["z/"]
        assert store.list("s/y/z") == ["3"]

    def test_trailing_slash(self, store: ObjectStore) -> None:
        """A prefix with a trailing '/' lists the same folder."""
        store.put("f/a", b"x")
        store.put("f/g/b", b"x")
        assert store.list("f/") == store.list("f") == ["a", "g/"]

    def test_root(self, store: ObjectStore) -> None:
        """'' lists the root folder."""
        store.put("top", b"x")
        store.put("streams/a/commits/0.json", b"x")
        store.put("_transit.json", b"x")
        assert store.list("") == sorted(["_transit.json", "streams/", "top"])

    def test_missing_folder_is_empty(self, store: ObjectStore) -> None:
        """A folder that holds nothing lists as `[]`, in an empty or a non-empty store."""
        assert store.list("") == []
        assert store.list("nothing") == []
        store.put("a/b", b"x")
        assert store.list("nothing/here") == []
        assert store.list("a/b/c") == []

    def test_object_is_not_a_folder(self, store: ObjectStore) -> None:
        """Listing an object's key as a folder gives `[]`."""
        store.put("a/b", b"x")
        assert store.list("a/b") == []

    def test_no_partial_name_match(self, store: ObjectStore) -> None:
        """A prefix matches whole folder names only: 'a' does not list 'ab/'."""
        store.put("ab/x", b"x")
        store.put("a.json", b"x")
        assert store.list("a") == []

    def test_deleted_object_disappears(self, store: ObjectStore) -> None:
        """A deleted object is no longer listed."""
        store.put("d/keep", b"x")
        store.put("d/drop", b"x")
        store.delete("d/drop")
        assert store.list("d") == ["keep"]

    def test_emptied_folder_disappears(
        self, store: ObjectStore, request: pytest.FixtureRequest
    ) -> None:
        """Folders exist only through their objects: deleting the last one removes the folder."""
        store.put("d/e/only", b"x")
        store.delete("d/e/only")
        assert store.list("d") == []
        assert store.list("") == []
        assert store.is_empty()

    def test_no_temporary_names_visible(self, store: ObjectStore) -> None:
        """While objects are being written, a listing shows only whole, committed objects."""
        keys = [f"{i:04d}.json" for i in range(40)]
        done = threading.Event()
        seen: set[str] = set()

        def write() -> None:
            try:
                for i, key in enumerate(keys):
                    data = bytes(50_000)
                    if i % 2:
                        store.put(f"w/{key}", data)
                    else:
                        store.put_if_absent(f"w/{key}", data)
            finally:
                done.set()

        def read() -> None:
            while not done.is_set():
                listing = store.list("w")
                seen.update(listing)
                for name in listing:
                    assert name in keys, f"unexpected name {name!r} in a listing"
                    # A listed object is whole: readers never see a partial write.
                    assert store.head(f"w/{name}").size == 50_000

        _run_threads(2, lambda i: (write if i == 0 else read)())
        assert store.list("w") == keys


class TestHead:
    """`head(path)` reports the object's size."""

    @pytest.mark.parametrize("size", [0, 1, 1024, 70_000])
    def test_size(self, store: ObjectStore, size: int) -> None:
        """The size is the exact byte length."""
        store.put("a/b", bytes(size))
        info = store.head("a/b")
        assert isinstance(info, ObjectInfo)
        assert (info.path, info.size) == ("a/b", size)

    def test_modified(self, store: ObjectStore) -> None:
        """`modified`, when the backend reports it, is the POSIX time of the last write."""
        # File systems stamp with a coarse clock, so allow some slack either way.
        slack = 2.0
        before = time.time()
        store.put("k", b"x")
        store.put_if_absent("j", b"x")
        after = time.time()
        for key in ("k", "j"):
            modified = store.head(key).modified
            if modified is not None:
                assert before - slack <= modified <= after + slack

    def test_missing_raises_file_not_found(self, store: ObjectStore) -> None:
        """An absent key raises `FileNotFoundError`."""
        with pytest.raises(FileNotFoundError):
            store.head("missing")

    def test_folder_raises_file_not_found(self, store: ObjectStore) -> None:
        """A folder is not an object."""
        store.put("folder/key", b"x")
        with pytest.raises(FileNotFoundError):
            store.head("folder")


class TestDelete:
    """`delete(path)` removes an object."""

    def test_delete(self, store: ObjectStore) -> None:
        """A deleted object is gone; its siblings are not."""
        store.put("d/a", b"x")
        store.put("d/b", b"y")
        store.delete("d/a")
        with pytest.raises(FileNotFoundError):
            store.get("d/a")
        assert not store.exists("d/a")
        assert store.get("d/b") == b"y"

    def test_missing_raises_file_not_found(self, store: ObjectStore) -> None:
        """Deleting an absent key raises `FileNotFoundError`."""
        with pytest.raises(FileNotFoundError):
            store.delete("missing")
        store.put("k", b"x")
        store.delete("k")
        with pytest.raises(FileNotFoundError):
            store.delete("k")


class TestExists:
    """`exists(path)` is True exactly for objects."""

    def test_exists(self, store: ObjectStore) -> None:
        """Objects exist; absent keys and folders do not."""
        assert not store.exists("k")
        store.put("k", b"")
        store.put("f/x", b"x")
        assert store.exists("k")
        assert store.exists("f/x")
        assert not store.exists("f")
        assert not store.exists("f/y")


class TestSpecialCharacters:
    """Keys with '%' and '~' (stream folders are percent-encoded and may carry a hash)."""

    @pytest.mark.parametrize(
        "key",
        [
            "streams/a%2Fb%2Fc/commits/00000000000000000000.json",
            "streams/long~0123456789abcdef/head.json",
            "100%",
            "%25",
            "%2e%2e",
            "~",
            "a%2F..%2Fb/x",
        ],
    )
    def test_round_trip(self, store: ObjectStore, key: str) -> None:
        """Such keys round-trip through every operation, literally."""
        store.put(key, key.encode())
        assert store.get(key) == key.encode()
        assert store.get_range(key, 1, 3) == key.encode()[1:3]
        assert store.head(key).size == len(key.encode())
        assert store.exists(key)
        folder, _, name = key.rpartition("/")
        assert store.list(folder) == [name]
        with pytest.raises(FileExistsError):
            store.put_if_absent(key, b"other")
        store.delete(key)
        assert not store.exists(key)

    def test_not_decoded(self, store: ObjectStore) -> None:
        """'%2F' is not a '/': 'a%2Fb/x' and 'a/b/x' are different objects."""
        store.put("s/a%2Fb/x", b"encoded")
        store.put("s/a/b/x", b"nested")
        store.put("s/a%252Fb/x", b"double")
        assert store.list("s") == sorted(["a%2Fb/", "a/", "a%252Fb/"])
        assert store.get("s/a%2Fb/x") == b"encoded"
        assert store.get("s/a/b/x") == b"nested"
        assert store.get("s/a%252Fb/x") == b"double"
        assert store.list("s/a%2Fb") == ["x"]


class TestIsEmpty:
    """`is_empty()` is True exactly when the root holds nothing."""

    def test_is_empty(self, store: ObjectStore) -> None:
        """A fresh store is empty; one object anywhere makes it non-empty."""
        assert store.is_empty()
        store.put("deep/down/key", b"")
        assert not store.is_empty()

    def test_empty_after_deleting_top_level_object(self, store: ObjectStore) -> None:
        """Deleting the only (top-level) object empties the store again."""
        store.put("k", b"x")
        store.delete("k")
        assert store.is_empty()
