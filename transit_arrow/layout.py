"""Every on-disk path of the log (DESIGN §3), in one place.

Object store (relative to the log's root)::

    _transit.json                                          format marker
    streams/<enc>/commits/<generation:020d>.json           the commit log
    streams/<enc>/segments/<first>-<last>-<b3[:16]>.parquet sealed segments
    streams/<enc>/checkpoints/<generation:020d>-<kind>.json checkpoints
    streams/<enc>/writer/<epoch:020d>.json                 writer leases
    deleted/<enc>.json                                     tombstones of deleted streams
    streams/<enc>/snapshots/<generation:020d>.parquet      folded manifests (DESIGN §5)
    materializations/<enc>/...                             materialization definitions/state
    cursors/<enc(name)>/<enc(stream)>/<generation:020d>.json durable cursor positions

Local dir (per machine)::

    streams/<enc>/heads/       unsealed Arrow IPC heads
    streams/<enc>/set-aside/   heads recovery could not use (kept, never deleted)
    streams/<enc>/writer.lock  the flock of this machine's writer
    cache/                     verified copies of remote segments
"""

from __future__ import annotations

from pathlib import Path

from .names import encode_stream_name

__all__ = [
    "MARKER",
    "checkpoint_path",
    "checkpoints_folder",
    "commit_path",
    "commits_folder",
    "cursor_folder",
    "cursor_path",
    "cursors_folder",
    "heads_dir",
    "local_stream_dir",
    "materialization_folder",
    "segment_path",
    "segments_folder",
    "set_aside_dir",
    "snapshot_path",
    "snapshots_folder",
    "stream_folder",
    "tombstone_path",
    "writer_folder",
]

MARKER = "_transit.json"
STREAMS = "streams"
MATERIALIZATIONS = "materializations"
CURSORS = "cursors"


def stream_folder(name: str) -> str:
    """The store folder of stream `name`."""
    return f"{STREAMS}/{encode_stream_name(name)}"


def commits_folder(folder: str) -> str:
    """The commit log folder of a stream folder."""
    return f"{folder}/commits"


def commit_path(folder: str, generation: int) -> str:
    """The commit of `generation` in a stream folder."""
    return f"{folder}/commits/{generation:020d}.json"


def segments_folder(folder: str) -> str:
    """The segment folder of a stream folder."""
    return f"{folder}/segments"


def segment_path(folder: str, first: int, last: int, digest: str) -> str:
    """`<folder>/segments/<first:020d>-<last:020d>-<blake3[:16]>.parquet`."""
    return f"{folder}/segments/{first:020d}-{last:020d}-{digest[:16]}.parquet"


DELETED = "deleted"


def tombstone_path(name: str) -> str:
    """The marker of a deleted stream (written after its `delete` commit): one folder for all,
    so listing the streams costs one more LIST, not one request per stream."""
    return f"{DELETED}/{encode_stream_name(name)}.json"


def checkpoints_folder(folder: str) -> str:
    """The checkpoint folder of a stream folder."""
    return f"{folder}/checkpoints"


def checkpoint_path(folder: str, generation: int, kind: str) -> str:
    """A checkpoint of `generation` with label `kind`."""
    return f"{folder}/checkpoints/{generation:020d}-{kind}.json"


def snapshots_folder(folder: str) -> str:
    """The folder of a stream's folded manifest snapshots (DESIGN §5)."""
    return f"{folder}/snapshots"


def snapshot_path(folder: str, generation: int) -> str:
    """The snapshot folding generations `0..generation` of a stream folder."""
    return f"{folder}/snapshots/{generation:020d}.parquet"


def writer_folder(folder: str) -> str:
    """The writer-lease folder of a stream folder."""
    return f"{folder}/writer"


def materialization_folder(name: str) -> str:
    """The store folder of materialization `name`."""
    return f"{MATERIALIZATIONS}/{encode_stream_name(name)}"


def cursors_folder(name: str | None = None) -> str:
    """The store folder of every cursor, or of the cursors named `name` (one per stream)."""
    return CURSORS if name is None else f"{CURSORS}/{encode_stream_name(name)}"


def cursor_folder(name: str, stream: str) -> str:
    """The store folder of cursor `name` on `stream`: one file per committed generation."""
    return f"{cursors_folder(name)}/{encode_stream_name(stream)}"


def cursor_path(name: str, stream: str, generation: int) -> str:
    """Generation `generation` of cursor `name` on `stream`."""
    return f"{cursor_folder(name, stream)}/{generation:020d}.json"


def local_stream_dir(local_dir: Path, name: str) -> Path:
    """The local folder of stream `name` (heads, set-aside heads, the writer lock)."""
    return local_dir / STREAMS / encode_stream_name(name)


def heads_dir(local_dir: Path, name: str) -> Path:
    """Where stream `name`'s unsealed heads live."""
    return local_stream_dir(local_dir, name) / "heads"


def set_aside_dir(local_dir: Path, name: str) -> Path:
    """Where heads that recovery could not use are kept."""
    return local_stream_dir(local_dir, name) / "set-aside"
