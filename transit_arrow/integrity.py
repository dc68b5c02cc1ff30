"""Checkpoints and verification (DESIGN §10).

A checkpoint `{stream, generation, head_offset, root}` names a prefix of a stream's history by
the root of its hash chain. `verify` recomputes every commit's root from the bytes in the store
(never from caches), from generation 0 through the target generation, for the stream and every
position its history references (branch parents, merge parents and bases, recursively), and
checks each reference's pinned root; `deep=True` also re-hashes every segment file.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3
import pyarrow as pa

from .commit import CommitLog, canonical, check_commit, compute_root, now_rfc3339
from .engine.catalog import Catalog
from .engine.replay import references
from .errors import IntegrityError, InvalidInputError
from .layout import checkpoint_path, checkpoints_folder, commit_path, commits_folder
from .manifest import Manifest

__all__ = ["Checkpoint", "VerifyEntry", "VerifyReport", "verify"]

_KIND_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Checkpoint:
    """A verifiable claim about a prefix of a stream's history.

    Attributes:
        stream: the stream's name.
        generation: the commit generation the claim is about.
        head_offset: the last committed offset at that generation (-1 when empty).
        root: the BLAKE3 root of the commit chain at that generation.
        kind: a free label ("manual", "eval-start", ...).
        created_at: when the checkpoint was taken (RFC 3339).
    """

    stream: str
    generation: int
    head_offset: int
    root: str
    kind: str = "manual"
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON text."""
        return canonical(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Inverse of `to_dict` (raises `InvalidInputError` on missing fields)."""
        try:
            return cls(
                stream=str(data["stream"]),
                generation=int(data["generation"]),
                head_offset=int(data["head_offset"]),
                root=str(data["root"]),
                kind=str(data.get("kind", "manual")),
                created_at=str(data.get("created_at", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"not a checkpoint: {data!r} ({e})") from e

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidInputError(f"checkpoint is not valid JSON: {e}") from e
        return cls.from_dict(data)


def checkpoint_kind(kind: object) -> str:
    """Validate a checkpoint kind (used in file names)."""
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise InvalidInputError(
            f"checkpoint kind must be 1-64 characters from letters, digits, '.', '_', '-', "
            f"not {kind!r}"
        )
    return kind


def save_checkpoint(catalog: Catalog, manifest: Manifest, kind: str) -> Checkpoint:
    """Record a checkpoint of `manifest` under `streams/<enc>/checkpoints/` and return it."""
    cp = Checkpoint(
        stream=manifest.stream,
        generation=manifest.generation,
        head_offset=manifest.next_offset - 1,
        root=manifest.root,
        kind=checkpoint_kind(kind),
        created_at=now_rfc3339(),
    )
    path = checkpoint_path(catalog.stream_folder(manifest.stream), cp.generation, cp.kind)
    try:
        catalog.store.put_if_absent(path, canonical(cp.to_dict()))
    except FileExistsError:
        return Checkpoint.from_json(catalog.store.get(path))  # the same claim, taken earlier
    return cp


def list_checkpoints(catalog: Catalog, name: str) -> list[Checkpoint]:
    """Every recorded checkpoint of stream `name`, oldest first."""
    folder = checkpoints_folder(catalog.stream_folder(name))
    return [
        Checkpoint.from_json(catalog.store.get(f"{folder}/{entry}"))
        for entry in catalog.store.list(folder)
        if entry.endswith(".json")
    ]


@dataclass
class VerifyEntry:
    """One check: what was checked, and on failure the file and expected vs found hashes."""

    stream: str
    check: str  # "commits", "pin", "checkpoint" or "segment"
    ok: bool
    object: str
    detail: str
    expected: str | None = None
    found: str | None = None


@dataclass
class VerifyReport:
    """The result of `Log.verify`: `ok` is True only if every entry is."""

    target: str
    deep: bool
    entries: list[VerifyEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(e.ok for e in self.entries)

    @property
    def failures(self) -> list[VerifyEntry]:
        """The entries that failed."""
        return [e for e in self.entries if not e.ok]

    def to_arrow(self) -> pa.Table:
        """The entries as an Arrow table."""
        return pa.Table.from_pylist([asdict(e) for e in self.entries], schema=_REPORT_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "target": self.target,
            "deep": self.deep,
            "ok": self.ok,
            "entries": [asdict(e) for e in self.entries],
        }

    def __str__(self) -> str:
        lines = [f"verify {self.target}: {'OK' if self.ok else 'FAILED'}"]
        for e in self.entries:
            mark = "ok  " if e.ok else "FAIL"
            line = f"  {mark} {e.check:<10} {e.stream}: {e.detail}"
            if not e.ok:
                line += f" [{e.object}]"
                if e.expected or e.found:
                    line += f" (expected {e.expected}, found {e.found})"
            lines.append(line)
        return "\n".join(lines)


_REPORT_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("stream", pa.string()),
        ("check", pa.string()),
        ("ok", pa.bool_()),
        ("object", pa.string()),
        ("detail", pa.string()),
        ("expected", pa.string()),
        ("found", pa.string()),
    ]
)


class _Verifier:
    def __init__(self, catalog: Catalog, deep: bool, report: VerifyReport) -> None:
        self.catalog = catalog
        self.deep = deep
        self.report = report
        self.done: dict[tuple[str, int], Manifest | None] = {}
        self.hashed: set[str] = set()

    def add(self, entry: VerifyEntry) -> None:
        self.report.entries.append(entry)

    def stream(self, name: str, through: int | None) -> Manifest | None:
        """Verify `name`'s chain through generation `through` (latest if None) and its refs."""
        store = self.catalog.store
        folder = self.catalog.stream_folder(name)
        commit_log = CommitLog(store, name, folder)
        if through is None:
            gens = commit_log.generations()
            through = len(gens) - 1
            if through < 0:
                self.add(VerifyEntry(name, "commits", False, folder, "stream has no commits"))
                return None
        key = (name, through)
        if key in self.done:
            return self.done[key]
        self.done[key] = None
        manifest = self._chain(name, commit_log, through)
        self.done[key] = manifest
        if manifest is None:
            return None
        for relation, pos in references(manifest):
            ref = self.stream(pos.stream, pos.generation)
            where = commit_path(self.catalog.stream_folder(pos.stream), pos.generation)
            if ref is None:
                continue
            ok = ref.root == pos.root
            self.add(
                VerifyEntry(
                    name,
                    "pin",
                    ok,
                    where,
                    f"{relation} {pos} pinned at generation {pos.generation}",
                    expected=pos.root,
                    found=ref.root,
                )
            )
        if self.deep:
            for seg in manifest.segments:
                self._segment(name, seg.path, seg.blake3, seg.bytes)
        return manifest

    def _chain(self, name: str, commit_log: CommitLog, through: int) -> Manifest | None:
        manifest: Manifest | None = None
        prev: str | None = None
        for g in range(through + 1):
            path = commit_log.path(g)
            try:
                raw = self.catalog.store.get(path)
            except FileNotFoundError:
                self.add(VerifyEntry(name, "commits", False, path, f"commit {g} is missing"))
                return None
            try:
                entry = json.loads(raw)
                check_commit(entry, name, g, prev, path)
                if canonical(entry) != raw:
                    raise IntegrityError(f"commit {path} is not in canonical form")
                manifest = Manifest.initial(entry) if manifest is None else manifest.apply(entry)
            except (ValueError, IntegrityError) as e:
                expected, found = self._commit_roots(commit_log, g, raw, prev)
                self.add(
                    VerifyEntry(name, "commits", False, path, f"commit {g}: {e}", expected, found)
                )
                return None
            prev = entry["root"]
        assert manifest is not None
        self.add(
            VerifyEntry(
                name,
                "commits",
                True,
                commits_folder(self.catalog.stream_folder(name)),
                f"root chain of generations 0..{through} recomputed",
                found=manifest.root,
            )
        )
        return manifest

    def _commit_roots(
        self, commit_log: CommitLog, g: int, raw: bytes, prev: str | None
    ) -> tuple[str | None, str]:
        """The root the chain records for commit `g`, and the root its bytes now give.

        The chain records it in the next commit's `prev_root` (else the commit's own `root`
        field); an unparseable file's found value is the BLAKE3 of its bytes.
        """
        expected: str | None = None
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            expected = json.loads(self.catalog.store.get(commit_log.path(g + 1)))["prev_root"]
        raw_hash = blake3.blake3(raw).hexdigest()
        try:
            entry = json.loads(raw)
            stored = entry.get("root") if isinstance(entry, dict) else None
            if expected is None:
                expected = stored
            found = compute_root(entry, prev)
        except (ValueError, TypeError, AttributeError):
            return expected, raw_hash  # unparseable: the hash of the bytes found
        # The content hashes as recorded, so the damage is in the root field or the encoding.
        for candidate in (found, stored, raw_hash):
            if candidate != expected and isinstance(candidate, str) and _HEX.fullmatch(candidate):
                return expected, candidate
        return expected, raw_hash

    def _segment(self, name: str, path: str, expected: str, size: int) -> None:
        if path in self.hashed:
            return
        self.hashed.add(path)
        try:
            data = self.catalog.store.get(path)
        except FileNotFoundError:
            self.add(VerifyEntry(name, "segment", False, path, "segment file is missing", expected))
            return
        found = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
        ok = found == expected and len(data) == size
        detail = "BLAKE3 of the file bytes" + (
            "" if len(data) == size else f"; {len(data)} bytes, expected {size}"
        )
        self.add(VerifyEntry(name, "segment", ok, path, detail, expected, found))


def verify(
    catalog: Catalog, name: str, generation: int | None, root: str | None, deep: bool
) -> VerifyReport:
    """Verify stream `name` through `generation`; with `root`, also that it is the chain's."""
    target = name if generation is None else f"{name}@g{generation}"
    report = VerifyReport(target=target, deep=deep)
    verifier = _Verifier(catalog, deep, report)
    manifest = verifier.stream(name, generation)
    if root is not None and manifest is not None:
        report.entries.append(
            VerifyEntry(
                name,
                "checkpoint",
                manifest.root == root,
                commit_path(catalog.stream_folder(name), manifest.generation),
                f"checkpoint root at generation {manifest.generation}",
                expected=root,
                found=manifest.root,
            )
        )
    return report
