"""Maintenance: garbage collection of orphaned segments and eager hydration (DESIGN §4, §10)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import StorageError
from .manifest import SegmentRef
from .replay import replay_spans

if TYPE_CHECKING:
    from .log import Log

__all__ = ["GcReport", "HydrateReport", "collect_garbage", "hydrate", "referenced_segments"]


@dataclass
class GcReport:
    """What `Log.gc` removed (or would remove, with `dry_run`)."""

    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    kept_young: list[str] = field(default_factory=list)
    referenced: int = 0
    dry_run: bool = False


@dataclass
class HydrateReport:
    """What `Log.hydrate` fetched into the local cache."""

    streams: int = 0
    segments: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0


def referenced_segments(log: Log, name: str) -> set[str]:
    """Every segment path any commit of stream `name` (any generation) references."""
    return {
        action["path"]
        for commit in log._commits(name)
        for action in commit["actions"]
        if action.get("type") == "add_segment"
    }


def _stream_folders(log: Log) -> list[str]:
    try:
        return [f[:-1] for f in log.store.list("streams") if f.endswith("/")]
    except OSError as e:
        raise StorageError(f"cannot list streams of {log.uri}: {e}") from e


def collect_garbage(log: Log, *, min_age: float, dry_run: bool) -> GcReport:
    """Remove segment files that no commit of any stream references.

    Files younger than `min_age` seconds are kept: a writer may have uploaded one and not yet
    committed it. Every generation's references count (time travel reads old generations),
    and a branch's history is referenced by its parent's commits, so nothing a branch still
    uses can be removed.
    """
    report = GcReport(dry_run=dry_run)
    reachable: set[str] = set()
    for name in log._stream_names():
        reachable |= referenced_segments(log, name)
    report.referenced = len(reachable)
    now = time.time()
    for folder in _stream_folders(log):
        prefix = f"streams/{folder}/segments"
        for entry in log.store.list(prefix):
            path = f"{prefix}/{entry}"
            if entry.endswith("/") or path in reachable:
                continue
            try:
                info = log.store.head(path)
            except FileNotFoundError:
                continue
            if info.modified is not None and now - info.modified < min_age:
                report.kept_young.append(path)
                continue
            report.removed.append(path)
            report.removed_bytes += info.size
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    log.store.delete(path)
    return report


def hydrate(log: Log, *, progress: bool) -> HydrateReport:
    """Fetch (and verify) every segment every stream's replay needs into the local cache."""
    start = time.perf_counter()
    report = HydrateReport()
    needed: dict[str, SegmentRef] = {}
    for name in log._stream_names():
        report.streams += 1
        for span in replay_spans(log, log._manifest(name, refresh=True)):
            for seg in span.manifest.segments:
                needed.setdefault(seg.path, seg)
    report.segments = len(needed)
    if log.store.local_path("") is None:
        before_bytes, before = log.cache.fetched_bytes, log.cache.fetches
        items = list(needed.values())
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), unit="segment", desc="hydrate")
        for seg in items:
            log._segment_local_path(seg)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        report.fetched = log.cache.fetches - before
        report.fetched_bytes = log.cache.fetched_bytes - before_bytes
    report.seconds = time.perf_counter() - start
    return report
