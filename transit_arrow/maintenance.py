"""Maintenance: garbage collection of orphaned segments and eager hydration (DESIGN §4, §10)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from .compaction import materialization_garbage, releasable_segments
from .engine.catalog import Catalog
from .engine.replay import replay_spans
from .errors import IntegrityError, StorageError
from .layout import segments_folder
from .manifest import SegmentRef
from .segments.prefetch import DEFAULT_WORKERS, prefetch

__all__ = ["GcReport", "HydrateReport", "collect_garbage", "hydrate"]


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
    #: Streams whose history could not be read (nothing of theirs was fetched), and why.
    errors: dict[str, str] = field(default_factory=dict)


def _stream_folders(catalog: Catalog) -> list[str]:
    return [f"streams/{f[:-1]}" for f in catalog.store.list("streams") if f.endswith("/")]


def collect_garbage(catalog: Catalog, *, min_age: float, dry_run: bool) -> GcReport:
    """Remove segment files that no commit of any stream references.

    Files younger than `min_age` seconds are kept: a writer may have uploaded one and not yet
    committed it. Every generation's references count (time travel reads old generations),
    and a branch's history is referenced by its parent's commits, so nothing a branch still
    uses can be removed. The exception: segments a compaction or retention released at least
    `min_age` seconds ago that no stream's latest replay, no pinned ancestry and no recorded
    checkpoint needs; and materialization state no checkpoint of the current definition names.
    """
    report = GcReport(dry_run=dry_run)
    reachable: set[str] = set()
    for name in catalog.names():
        reachable |= catalog.referenced_segments(name)
    # Compaction and retention (DESIGN §10): files they released that nothing reachable needs.
    reachable -= releasable_segments(catalog, min_age=min_age)
    report.referenced = len(reachable)
    now = time.time()
    for folder in _stream_folders(catalog):
        prefix = segments_folder(folder)
        for entry in catalog.store.list(prefix):
            path = f"{prefix}/{entry}"
            if entry.endswith("/") or path in reachable:
                continue
            try:
                info = catalog.store.head(path)
            except FileNotFoundError:
                continue
            if info.modified is not None and now - info.modified < min_age:
                report.kept_young.append(path)
                continue
            report.removed.append(path)
            report.removed_bytes += info.size
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    catalog.store.delete(path)
    for path in materialization_garbage(catalog, min_age=min_age):  # unreferenced state
        report.removed.append(path)
        report.removed_bytes += catalog.store.head(path).size
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                catalog.store.delete(path)
    return report


def hydrate(catalog: Catalog, *, progress: bool, workers: int = DEFAULT_WORKERS) -> HydrateReport:
    """Fetch (and verify) every segment every stream's replay needs into the local cache,
    `workers` at a time."""
    start = time.perf_counter()
    report = HydrateReport()
    needed: dict[str, tuple[SegmentRef, str]] = {}
    manifests, errors = catalog.manifests()
    report.errors = {name: str(e) for name, e in errors.items()}
    for name, manifest in manifests.items():
        report.streams += 1
        try:
            spans = replay_spans(catalog, manifest)
        except (IntegrityError, StorageError) as e:  # an ancestor is damaged
            report.errors[name] = str(e)
            continue
        for span in spans:
            for seg in span.manifest.segments:
                needed.setdefault(seg.path, (seg, span.origin))
    report.segments = len(needed)
    if catalog.store.local_path("") is None:
        before_bytes, before = catalog.cache.fetched_bytes, catalog.cache.fetches
        # A bounded pool fetches (and verifies) segments in parallel; the bar counts bytes.
        prefetch(catalog, list(needed.values()), workers=workers, progress=progress, desc="hydrate")
        report.fetched = catalog.cache.fetches - before
        report.fetched_bytes = catalog.cache.fetched_bytes - before_bytes
    report.seconds = time.perf_counter() - start
    return report
