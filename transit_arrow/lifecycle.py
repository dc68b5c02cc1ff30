"""Notebook lifecycle: idempotent creation (`exist_ok`), deleting a stream nothing depends on,
dropping a materialization (issue 14).

A notebook is re-run from the top many times: `create_stream`, `branch` and `materialize` with
`exist_ok=True` return what exists when it is what the call would create, and refuse (saying
what differs) when it is not, so a changed cell never silently reuses a different object.
"""

from __future__ import annotations

import json
from typing import Any

from .commit import CommitLog, canonical, now_rfc3339, writer_identity
from .engine.catalog import Catalog
from .errors import AlreadyExistsError, InvalidInputError, NotFoundError
from .layout import materialization_folder, tombstone_path
from .lineage import children_table, parse_position
from .manifest import Manifest
from .names import validate_stream_name

__all__ = [
    "check_existing_branch",
    "check_existing_materialization",
    "check_existing_root",
    "delete_stream",
    "drop_materialization",
]


def _refuse(name: str, what: str, differences: list[str]) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"{what} {name!r} already exists and differs from this call ({'; '.join(differences)}); "
        "use another name, or drop/delete the existing one first"
    )


def _metadata_differences(manifest: Manifest, metadata: dict[str, Any]) -> list[str]:
    existing = manifest.create.get("metadata") or {}
    out = []
    for key in ("actor", "reason", "labels"):
        if (existing.get(key) or None) != (metadata.get(key) or None):
            out.append(f"{key} is {existing.get(key)!r}, not {metadata.get(key)!r}")
    return out


def check_existing_root(
    catalog: Catalog, name: str, schema_json: Any, metadata: dict[str, Any]
) -> Manifest:
    """The existing stream `name` if `create_stream(name, ...)` would have created it (a root
    with the same schema, when one is given, and the same metadata); else `AlreadyExistsError`."""
    manifest = catalog.manifest_at(name, 0)
    differences = []
    if manifest.kind != "root":
        differences.append(f"it is a {manifest.kind}, not a root stream")
    if schema_json is not None and manifest.create.get("schema") != schema_json:
        differences.append("its schema differs")
    differences += _metadata_differences(manifest, metadata)
    if differences:
        raise _refuse(name, "stream", differences)
    return catalog.manifest(name)


def check_existing_branch(
    catalog: Catalog, name: str, at: object, default_parent: str | None, metadata: dict[str, Any]
) -> Manifest:
    """The existing stream `name` if it is a branch of the same parent (at the same offset,
    when `at` names one) with the same metadata; else `AlreadyExistsError`."""
    parent, offset = parse_position(at, default_parent)
    manifest = catalog.manifest_at(name, 0)
    pinned = manifest.create.get("parent") or {}
    differences = []
    if manifest.kind != "branch":
        differences.append(f"it is a {manifest.kind}, not a branch")
    elif pinned.get("stream") != parent:
        differences.append(f"it branches {pinned.get('stream')!r}, not {parent!r}")
    elif offset is not None and pinned.get("offset") != offset:
        differences.append(f"it forks at {pinned.get('offset')}, not {offset}")
    differences += _metadata_differences(manifest, metadata)
    if differences:
        raise _refuse(name, "stream", differences)
    return catalog.manifest(name)


def check_existing_materialization(catalog: Catalog, name: str, definition: dict[str, Any]) -> bool:
    """True if materialization `name` exists with exactly `definition`; False if it does not
    exist; `AlreadyExistsError` (naming what differs) if it exists with another one."""
    path = f"{materialization_folder(validate_stream_name(name))}/definition.json"
    try:
        existing = json.loads(catalog.store.get(path))
    except FileNotFoundError:
        return False
    differences = [
        f"{key} is {existing.get(key)!r}, not {value!r}"
        for key, value in definition.items()
        if existing.get(key) != value
    ]
    if differences:
        raise _refuse(name, "materialization", differences)
    return True


def _remove_tree(catalog: Catalog, folder: str) -> int:
    removed = 0
    for entry in catalog.store.list(folder):
        path = f"{folder}/{entry.rstrip('/')}"
        if entry.endswith("/"):
            removed += _remove_tree(catalog, path)
        else:
            try:
                catalog.store.delete(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def drop_materialization(catalog: Catalog, name: str) -> int:
    """Remove materialization `name`: its definition first (so nothing opens it half-gone),
    then its checkpoints and state files. Returns the number of files removed."""
    folder = materialization_folder(validate_stream_name(name))
    definition = f"{folder}/definition.json"
    try:
        catalog.store.delete(definition)
    except FileNotFoundError:
        raise NotFoundError(f"there is no materialization {name!r} in {catalog.uri}") from None
    return 1 + _remove_tree(catalog, folder)


def delete_stream(catalog: Catalog, name: str, *, reason: str | None = None) -> Manifest:
    """Delete stream `name`, which nothing may depend on.

    Refused (nothing changed) while a branch or merge references it, naming them. Otherwise a
    `delete` commit records the deletion in the stream's own history (put-if-absent, so a
    concurrent commit makes it fail cleanly), then a tombstone hides the stream from listings;
    `Log.gc` frees its segment files once they are older than its `min_age`. The name cannot
    be reused: its history stays in the store.
    """
    validate_stream_name(name)
    if reason is not None and not isinstance(reason, str):
        raise InvalidInputError(f"reason must be a string, not {reason!r}")
    if not catalog.exists(name) or name not in catalog.names():
        raise catalog.not_found(name)
    dependants = sorted(
        {str(s) for s in children_table(catalog, name).column("stream").to_pylist()}
    )
    if dependants:
        raise InvalidInputError(
            f"stream {name!r} cannot be deleted: {', '.join(map(repr, dependants))} "
            "branch from or merge it; delete those first"
        )
    if catalog.has_writer(name):
        raise InvalidInputError(
            f"stream {name!r} is being written by this process; close it (stream.close()) first"
        )
    manifest = catalog.manifest(name)
    action = {"type": "delete", "reason": reason, "deleted_at": now_rfc3339()}
    log = CommitLog(catalog.store, name, catalog.stream_folder(name))
    commit = log.create(
        manifest.generation + 1, manifest.root, [action], writer_identity("deleter", 0)
    )
    deleted = catalog.remember(name, commit)
    record = {"stream": name, "generation": commit["generation"], "root": commit["root"]}
    catalog.store.put(tombstone_path(name), canonical(record))
    catalog.forget(name)
    return deleted
