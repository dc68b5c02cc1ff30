"""Checkpoints and verification (DESIGN §10).

A checkpoint `{stream, generation, head_offset, root}` names a prefix of a stream's history by
the root of its hash chain. `verify` recomputes every commit's root from the bytes in the store
(never from caches), from generation 0 through the target generation, for the stream and every
position its history references (branch parents, merge parents and bases, recursively), and
checks each reference's pinned root; `deep=True` also re-hashes every segment file. For a
checkpoint it checks every field against that history: the generation exists, its root is the
chain's and its head offset is the generation's last offset.

A checkpoint may carry an Ed25519 signature (`sign_checkpoint`, through the `cryptography`
library: the `sign` extra) over its canonical bytes (`Checkpoint.signed_bytes`); `verify` then
checks the signature, and with `trusted_keys` that the signer is one of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3
import pyarrow as pa

from .commit import CommitLog, canonical, check_commit, compute_root, now_rfc3339
from .compaction import compaction_checks
from .engine.catalog import Catalog
from .engine.replay import references
from .errors import IntegrityError, InvalidInputError, MissingExtraError
from .layout import checkpoint_path, checkpoints_folder, commit_path, commits_folder
from .manifest import Manifest
from .segments.verified import hash_bytes

__all__ = [
    "Checkpoint",
    "VerifyEntry",
    "VerifyReport",
    "load_private_key",
    "load_public_key",
    "sign_checkpoint",
    "verify",
]

_KIND_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")
#: Prefixed to the canonical JSON a signature covers, so it can mean nothing else.
SIGNING_CONTEXT = b"transit-arrow checkpoint v1\n"


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
        public_key: for a signed checkpoint, the signer's Ed25519 public key (64 hex digits).
        signature: for a signed checkpoint, the Ed25519 signature (128 hex digits) of
            `signed_bytes()`.
    """

    stream: str
    generation: int
    head_offset: int
    root: str
    kind: str = "manual"
    created_at: str = ""
    public_key: str | None = None
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the signature fields only when signed)."""
        data = asdict(self)
        for name in ("public_key", "signature"):
            if data[name] is None:
                del data[name]
        return data

    def signed_bytes(self) -> bytes:
        """What a signature covers: a fixed context line, then the canonical JSON of every
        field but `signature` (the signer's `public_key` included)."""
        data = self.to_dict()
        data.pop("signature", None)
        return SIGNING_CONTEXT + canonical(data)

    @property
    def unsigned(self) -> Checkpoint:
        """This checkpoint without its signature fields."""
        return dataclasses.replace(self, public_key=None, signature=None)

    def to_json(self) -> str:
        """Canonical JSON text."""
        return canonical(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Inverse of `to_dict` (raises `InvalidInputError` on missing fields)."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"not a checkpoint: {data!r} (expected a JSON object)")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InvalidInputError(f"not a checkpoint: unknown field(s) {unknown}")
        try:
            cp = cls(
                stream=_text_field(data, "stream"),
                generation=_int_field(data, "generation"),
                head_offset=_int_field(data, "head_offset"),
                root=_text_field(data, "root"),
                kind=_text_field(data, "kind", "manual"),
                created_at=_text_field(data, "created_at", ""),
                public_key=_optional_hex(data, "public_key", _HEX),
                signature=_optional_hex(data, "signature", _SIGNATURE),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"not a checkpoint: {_short(data)} ({e})") from e
        if (cp.public_key is None) != (cp.signature is None):
            raise InvalidInputError("not a checkpoint: public_key and signature go together")
        return cp

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise InvalidInputError(f"checkpoint is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


def _text_field(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default) if default is not None else data[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _int_field(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    return value


def _optional_hex(data: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{name} must be {pattern.pattern} hex digits, not {_short(value)}")
    return value


# --- signatures (the `sign` extra) ------------------------------------------------------------


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise MissingExtraError(
            'signed checkpoints need the cryptography library: pip install "transit-arrow[sign]"'
        ) from e
    return ed25519


def _serialization() -> Any:
    _ed25519()
    from cryptography.hazmat.primitives import serialization

    return serialization


def load_private_key(key: object) -> Any:
    """An Ed25519 private key from a `cryptography` key object, PEM (PKCS#8, as written by
    `openssl genpkey -algorithm ed25519`), the 32 raw bytes of the seed, or 64 hex digits of it.

    Raises:
        InvalidInputError: not an Ed25519 private key in one of those forms.
        MissingExtraError: the `sign` extra is not installed.
    """
    ed25519 = _ed25519()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    data = _key_bytes(key, "private")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            loaded = _serialization().load_pem_private_key(data, password=None)
        else:
            loaded = ed25519.Ed25519PrivateKey.from_private_bytes(_raw32(data, "private"))
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"not an Ed25519 private key: {e}") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise InvalidInputError(f"not an Ed25519 private key: a {type(loaded).__name__}")
    return loaded


def load_public_key(key: object) -> Any:
    """An Ed25519 public key from a `cryptography` key object, PEM (SubjectPublicKeyInfo, as
    written by `openssl pkey -pubout`), its 32 raw bytes, or 64 hex digits of them.

    Raises:
        InvalidInputError: not an Ed25519 public key in one of those forms.
        MissingExtraError: the `sign` extra is not installed.
    """
    ed25519 = _ed25519()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    data = _key_bytes(key, "public")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            loaded = _serialization().load_pem_public_key(data)
        else:
            loaded = ed25519.Ed25519PublicKey.from_public_bytes(_raw32(data, "public"))
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"not an Ed25519 public key: {e}") from None
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise InvalidInputError(f"not an Ed25519 public key: a {type(loaded).__name__}")
    return loaded


def _key_bytes(key: object, what: str) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise InvalidInputError(
        f"an Ed25519 {what} key is a cryptography key object, PEM, 32 raw bytes or 64 hex "
        f"digits, not a {type(key).__name__}"
    )


def _raw32(data: bytes, what: str) -> bytes:
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ValueError(f"expected PEM, 32 raw bytes or 64 hex digits ({len(data)} bytes given)")


def public_key_hex(key: Any) -> str:
    """The 64 hex digits of an Ed25519 public key's raw bytes (its id in checkpoints)."""
    serialization = _serialization()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bytes(raw).hex()


def sign_checkpoint(cp: Checkpoint, key: object) -> Checkpoint:
    """`cp` signed with an Ed25519 private key (see `load_private_key` for the forms taken).

    The signature covers `signed_bytes()`: every field, the signer's public key included.
    """
    private = load_private_key(key)
    unsigned = dataclasses.replace(cp, public_key=public_key_hex(private.public_key()))
    signature = private.sign(unsigned.signed_bytes()).hex()
    return dataclasses.replace(unsigned, signature=signature)


def _check_signature(cp: Checkpoint, trusted: set[str] | None) -> tuple[bool, str]:
    """Whether `cp`'s signature holds (and its signer is trusted), and what was found."""
    if cp.signature is None or cp.public_key is None:
        if trusted is None:
            return True, "not signed"
        return False, "the checkpoint is not signed, but trusted keys were required"
    ed25519 = _ed25519()
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(cp.public_key))
        key.verify(bytes.fromhex(cp.signature), cp.signed_bytes())
    except ValueError as e:  # a public key that is not a curve point
        return False, f"the signer's public key is not valid: {e}"
    except Exception as e:  # cryptography's InvalidSignature
        if type(e).__name__ != "InvalidSignature":
            raise
        return False, (
            f"the Ed25519 signature does not match the checkpoint's bytes for key "
            f"{cp.public_key[:16]}…: the checkpoint was altered after signing, or the signature "
            "is not this key's"
        )
    if trusted is None:
        return True, (
            f"Ed25519 signature valid, by key {cp.public_key[:16]}… (pass trusted keys to "
            "require a known signer)"
        )
    if cp.public_key not in trusted:
        return False, (
            f"signed by key {cp.public_key[:16]}…, which is not one of the "
            f"{len(trusted)} trusted key(s)"
        )
    return True, f"Ed25519 signature valid, by trusted key {cp.public_key[:16]}…"


def trusted_key_ids(keys: object) -> set[str]:
    """The public key ids (hex of the raw bytes) of `keys`: one key or an iterable of keys
    in any form `load_public_key` takes."""
    if keys is None:
        raise InvalidInputError("trusted_keys must be one or more Ed25519 public keys")
    if isinstance(keys, str | bytes | bytearray | memoryview) or not hasattr(keys, "__iter__"):
        keys = [keys]
    assert hasattr(keys, "__iter__")
    ids = {public_key_hex(load_public_key(k)) for k in keys}
    if not ids:
        raise InvalidInputError("trusted_keys is empty: pass at least one public key")
    return ids


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
    check: str  # "commits", "pin", "checkpoint", "segment", "compaction" or "snapshot"
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
            # Compaction (§10): new files hold exactly what they replaced; snapshots (§5) fold.
            for check in compaction_checks(self.catalog, name, manifest.generation):
                self.add(VerifyEntry(**check))
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
        found = hash_bytes(data)
        ok = found == expected and len(data) == size
        detail = "BLAKE3 of the file bytes" + (
            "" if len(data) == size else f"; {len(data)} bytes, expected {size}"
        )
        self.add(VerifyEntry(name, "segment", ok, path, detail, expected, found))


def verify(
    catalog: Catalog,
    name: str,
    generation: int | None,
    checkpoint: Checkpoint | None,
    deep: bool,
    trusted_keys: object = None,
) -> VerifyReport:
    """Verify stream `name` through `generation`; with a `checkpoint` (of that stream and
    generation), also each of its fields against that history, and its signature.

    `trusted_keys` (public keys, see `load_public_key`) requires the checkpoint to be signed by
    one of them.
    """
    trusted = trusted_key_ids(trusted_keys) if trusted_keys is not None else None
    if trusted is not None and checkpoint is None:
        raise InvalidInputError("trusted_keys applies to verifying a checkpoint")
    target = name if generation is None else f"{name}@g{generation}"
    report = VerifyReport(target=target, deep=deep)
    verifier = _Verifier(catalog, deep, report)
    if checkpoint is not None and checkpoint.generation < 0:
        where = commits_folder(catalog.stream_folder(name))
        detail = f"checkpoint generation {checkpoint.generation} does not exist"
        report.entries.append(VerifyEntry(name, "checkpoint", False, where, detail))
        return report
    manifest = verifier.stream(name, generation)
    if checkpoint is not None:
        if manifest is not None:
            where = commit_path(catalog.stream_folder(name), manifest.generation)
            g = manifest.generation
            report.entries += [
                VerifyEntry(
                    name,
                    "checkpoint",
                    manifest.next_offset - 1 == checkpoint.head_offset,
                    where,
                    f"checkpoint head offset at generation {g} (its last committed offset)",
                    expected=str(checkpoint.head_offset),
                    found=str(manifest.next_offset - 1),
                ),
                VerifyEntry(
                    name,
                    "checkpoint",
                    manifest.root == checkpoint.root,
                    where,
                    f"checkpoint root at generation {g}",
                    expected=checkpoint.root,
                    found=manifest.root,
                ),
            ]
        if checkpoint.signature is not None or trusted is not None:
            ok, detail = _check_signature(checkpoint, trusted)
            report.entries.append(
                VerifyEntry(
                    name,
                    "signature",
                    ok,
                    "checkpoint",
                    detail,
                    expected=None if trusted is None else ",".join(sorted(trusted)),
                    found=checkpoint.public_key,
                )
            )
    return report
