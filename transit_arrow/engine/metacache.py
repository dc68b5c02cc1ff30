"""The local metadata cache: every stream's folded latest state in one file (issue 16).

Opening a log of 10,000 streams would read and hash one commit per stream; this cache lets a
fresh handle skip that for the streams that did not change. It lives in the log's local dir
(`<local>/metadata.json`), next to the heads and the verified segment cache, and holds, per
stream, the manifest some handle folded from commits it read and checked, with the identity
(`size, mtime_ns, ctime_ns, inode, device`) its latest commit file (and commit 0) had when
read. A stream's entry is used only while both files keep that identity and the next commit
does not exist: two or three `stat`s instead of reads, JSON parsing and root hashing. Commit
files are created once and never rewritten, so a changed identity means something happened
(tampering, a copy, a recreated stream): the stream is then folded from its commits as
without the cache. Commits after a cached generation are read and chained from the cached
root.

The cache is only a shortcut to state the commits already gave: it is rebuilt from them
whenever it is missing, damaged (its BLAKE3 does not match), of another version or of
another log, and it is never trusted in part. `verify()` never reads it. Only local-folder
stores use it (a `stat` identity means nothing for an object store).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blake3

from ..commit import canonical
from ..errors import StorageError
from ..manifest import Manifest, segment_refs
from ..record import schema_from_json, schema_to_json
from ..storage.local import write_file_atomic

__all__ = ["CACHE_FILE", "MAX_LAG", "MetaCache", "StatKey", "stat_key"]

#: The cache file, relative to the log's local dir.
CACHE_FILE = "metadata.json"
_KIND = "transit-arrow local metadata cache"
_VERSION = 1
#: A stream this many commits past its entry makes the next `save` rewrite the file.
MAX_LAG = 32

StatKey = tuple[int, int, int, int, int]


def stat_key(path: str) -> StatKey | None:
    """The identity of the file at `path` (None when there is none).

    Raises:
        StorageError: the file cannot be looked up for another reason.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StorageError(f"cannot look up {path}: {e}") from e
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _commit_file(root: str, folder: str, generation: int) -> str:
    return f"{root}/{folder}/commits/{generation:020d}.json"


class MetaCache:
    """The metadata cache of one log handle: what was loaded from the file, the identities of
    the commit files this handle read, and the writing of a new file."""

    def __init__(self, local_dir: Path, uri: str, root: str) -> None:
        self.file = local_dir / CACHE_FILE
        self.uri = uri
        #: The store's root folder (commit files are `<root>/<store path>`).
        self.root = root
        self._entries: dict[str, dict[str, Any]] | None = None
        self._schemas: list[str] = []
        self._parsed: dict[int, Any] = {}
        # Per stream: the identity of commit 0 and of the latest commit read (generation, key).
        self._first: dict[str, StatKey] = {}
        self._latest: dict[str, tuple[int, StatKey]] = {}
        # The streams whose entry this handle checked against the files, by its generation.
        self._hits: dict[str, int] = {}

    # --- reading --------------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = {}
            try:
                data = self.file.read_bytes()
                head, _, body = data.partition(b"\n")
                header = json.loads(head)
                if (
                    header.get("kind") == _KIND
                    and header.get("version") == _VERSION
                    and header.get("log") == self.uri
                    and header.get("blake3") == blake3.blake3(body).hexdigest()
                ):
                    content = json.loads(body)
                    schemas, entries = content["schemas"], content["streams"]
                    if isinstance(schemas, list) and isinstance(entries, dict):
                        self._schemas, self._entries = schemas, entries
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                pass  # missing or damaged: rebuilt from the commits
        return self._entries

    def lookup(self, name: str, folder: str) -> Manifest | None:
        """The cached latest manifest of stream `name` (store folder `folder`) when its commit
        files still have the identities they had when it was folded, else None."""
        entry = self._load().get(name)
        if entry is None:
            return None
        try:
            g = entry["generation"]
            latest: StatKey = tuple(entry["latest"])
            first: StatKey = tuple(entry["first"]) if g else latest
            if stat_key(_commit_file(self.root, folder, g)) != latest:
                return None
            if g and stat_key(_commit_file(self.root, folder, 0)) != first:
                return None
            manifest = self._manifest(name, entry)
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # an entry this version cannot use: fold from the commits
        self._first[name] = first
        self._latest[name] = (g, latest)
        self._hits[name] = g
        return manifest

    def _schema(self, index: int | None) -> Any:
        if index is None:
            return None
        found = self._parsed.get(index)
        if found is None:
            found = self._parsed[index] = schema_from_json(self._schemas[index])
        return found

    def _manifest(self, name: str, entry: dict[str, Any]) -> Manifest:
        create = dict(entry["create"])
        if create.get("schema") is not None:
            create["schema"] = self._schemas[create["schema"]]
        return Manifest(
            stream=name,
            generation=int(entry["generation"]),
            root=str(entry["root"]),
            create=create,
            schema=self._schema(entry["schema"]),
            segments=segment_refs(entry["segments"]),
            next_offset=int(entry["next_offset"]),
            writer_epoch=int(entry["writer_epoch"]),
            commit_times=(entry["time"],) if entry["time"] is not None else (),
            deleted=bool(entry["deleted"]),
        )

    # --- what this handle read ------------------------------------------------------------

    def probe(self, name: str, folder: str, generation: int) -> StatKey | None:
        """The identity of commit `generation` of `name` before it is read (None when it does
        not exist); remembered as the stream's latest (or first) commit file."""
        key = stat_key(_commit_file(self.root, folder, generation))
        if key is not None:
            if generation == 0:
                self._first[name] = key
            self._latest[name] = (generation, key)
        return key

    def wrote(self, name: str, folder: str, generation: int) -> None:
        """Remember the identity of a commit this process just created."""
        self.probe(name, folder, generation)

    def forget(self, name: str) -> None:
        """Forget what this handle knows of `name`'s files (it was deleted)."""
        self._first.pop(name, None)
        self._latest.pop(name, None)
        self._hits.pop(name, None)

    # --- writing --------------------------------------------------------------------------

    def save(self, manifests: dict[str, Manifest]) -> None:
        """Write the cache for these latest manifests (every readable stream), atomically,
        when it lacks a stream, holds one that is gone or damaged, is `MAX_LAG` or more
        commits behind on one, or behind on at least one in eight. A stream a few commits
        behind costs a fresh handle those few reads (chained from the cached root), not a
        rewrite of the whole file on every change. Streams whose commit identities this
        handle does not know are left out (they are folded from their commits next time)."""
        old = self._load()
        must = len(old) != len(manifests)
        behind = 0
        for name, manifest in manifests.items():
            hit = self._hits.get(name)
            lag = -1 if hit is None else manifest.generation - hit
            if not 0 <= lag < MAX_LAG:
                must = True
                break
            behind += lag > 0
        if not must and behind * 8 < len(manifests):
            return
        entries: dict[str, dict[str, Any]] = {}
        index: dict[str, int] = {}
        schemas: list[str] = []
        for name, manifest in manifests.items():
            if self._hits.get(name) == manifest.generation:
                entries[name] = self._reindexed(old[name], index, schemas)
                continue
            built = self._entry(name, manifest, index, schemas)
            if built is not None:
                entries[name] = built
        body = json.dumps({"schemas": schemas, "streams": entries}, separators=(",", ":"))
        data = body.encode()
        header = {
            "kind": _KIND,
            "version": _VERSION,
            "log": self.uri,
            "blake3": blake3.blake3(data).hexdigest(),
        }
        try:
            write_file_atomic(self.file, canonical(header) + b"\n" + data)
        except OSError:
            return  # a cache: the log works without it
        self._entries, self._schemas, self._parsed = entries, schemas, {}
        self._hits = {name: entry["generation"] for name, entry in entries.items()}

    def _reindexed(
        self, entry: dict[str, Any], index: dict[str, int], schemas: list[str]
    ) -> dict[str, Any]:
        """A loaded entry with its schema indexes into the new file's schema list."""
        entry = dict(entry)
        if entry["schema"] is not None:
            entry["schema"] = _index(self._schemas[entry["schema"]], index, schemas)
        if entry["create"].get("schema") is not None:
            create = dict(entry["create"])
            create["schema"] = _index(self._schemas[create["schema"]], index, schemas)
            entry["create"] = create
        return entry

    def _entry(
        self, name: str, manifest: Manifest, index: dict[str, int], schemas: list[str]
    ) -> dict[str, Any] | None:
        latest = self._latest.get(name)
        first = self._first.get(name)
        g = manifest.generation
        if latest is None or latest[0] != g or (g and first is None):
            return None
        create = dict(manifest.create)
        if create.get("schema") is not None:
            create["schema"] = _index(create["schema"], index, schemas)
        schema = manifest.schema
        return {
            "generation": g,
            "root": manifest.root,
            "time": manifest.commit_times[-1] if manifest.commit_times else None,
            "create": create,
            "schema": _index(schema_to_json(schema), index, schemas) if schema else None,
            "segments": [list(s.__dict__.values()) for s in manifest.segments],
            "next_offset": manifest.next_offset,
            "writer_epoch": manifest.writer_epoch,
            "deleted": manifest.deleted,
            "latest": list(latest[1]),
            "first": list(first) if g and first is not None else None,
        }


def _index(schema: str, index: dict[str, int], schemas: list[str]) -> int:
    found = index.get(schema)
    if found is None:
        found = index[schema] = len(schemas)
        schemas.append(schema)
    return found
