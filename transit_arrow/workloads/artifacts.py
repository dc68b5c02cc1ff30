"""Artifacts: large payloads stored once, content-addressed, under the log root.

A record refers to an artifact by an **envelope** `{ref, size, blake3, media_type}`: `ref` is
the payload's path under the log root, `artifacts/<b3[:2]>/<b3>` (`b3` = the BLAKE3 hex digest
of the bytes), so the same bytes are stored once however often they are put. Reading
(`get_artifact`) re-hashes the bytes and raises `IntegrityError` on any mismatch, so a damaged
or swapped payload is never returned. Envelopes fit in a record as a struct column
(`ENVELOPE_TYPE`) or as four plain columns.

Artifacts live beside the streams (`artifacts/` is not a stream folder), on the same store:
a local folder, `memory://` or `s3://`. `Log.gc` removes only orphaned segment files, never
artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import blake3
import pyarrow as pa

from ..errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from ..log import Log

__all__ = ["ENVELOPE_TYPE", "Envelope", "get_artifact", "put_artifact"]

ENVELOPE_TYPE = pa.struct(
    [
        pa.field("ref", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("blake3", pa.string()),
        pa.field("media_type", pa.string()),
    ]
)
"""The Arrow type of an envelope column."""

_REF = re.compile(r"artifacts/([0-9a-f]{2})/([0-9a-f]{64})")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(\s*;.*)?")


@dataclass(frozen=True)
class Envelope:
    """A reference to a stored payload: where it is, its size, BLAKE3 and media type."""

    ref: str
    size: int
    blake3: str
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a dict (a record field, or a value of an `ENVELOPE_TYPE` column)."""
        return {
            "ref": self.ref,
            "size": self.size,
            "blake3": self.blake3,
            "media_type": self.media_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """An envelope from a dict with `ref`, `size`, `blake3` and `media_type`.

        Raises:
            InvalidInputError: a key is missing or a value is malformed.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"an envelope is a dict, not {data!r}")
        missing = [k for k in ("ref", "size", "blake3", "media_type") if data.get(k) is None]
        if missing:
            raise InvalidInputError(f"envelope lacks {missing}: {dict(data)!r}")
        match = _REF.fullmatch(str(data["ref"]))
        if match is None:
            raise InvalidInputError(
                f"envelope ref {data['ref']!r} is not an artifact path (artifacts/xx/<blake3>)"
            )
        size = data["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"envelope size must be an int >= 0, not {size!r}")
        digest = str(data["blake3"])
        if digest != match[2]:
            raise InvalidInputError(
                f"envelope blake3 {digest!r} is not the one its ref {data['ref']!r} names"
            )
        return cls(str(data["ref"]), size, digest, str(data["media_type"]))


def _digest_ref(digest: str) -> str:
    return f"artifacts/{digest[:2]}/{digest}"


def put_artifact(
    log: Log, data: bytes | bytearray | memoryview, *, media_type: str = "application/octet-stream"
) -> Envelope:
    """Store `data` under the log root, once per content, and return its envelope.

    Storing bytes that are already stored writes nothing (put-if-absent on the content's
    BLAKE3 path), so concurrent writers of the same payload are safe.

    Raises:
        InvalidInputError: `data` is not bytes-like or `media_type` is not 'type/subtype'.
        StorageError: the store failed.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInputError(f"artifact data must be bytes, not {type(data).__name__}")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise InvalidInputError(f"media_type must look like 'type/subtype', not {media_type!r}")
    payload = bytes(data)
    digest = blake3.blake3(payload).hexdigest()
    ref = _digest_ref(digest)
    try:
        log.store.put_if_absent(ref, payload)
    except FileExistsError:
        pass  # content-addressed: the same bytes are already there
    except OSError as e:
        raise StorageError(f"cannot store artifact {ref} in {log.uri}: {e}") from e
    return Envelope(ref, len(payload), digest, media_type)


def get_artifact(log: Log, envelope: Envelope | Mapping[str, Any]) -> bytes:
    """The payload an envelope refers to, after checking its size and BLAKE3.

    Raises:
        IntegrityError: the stored bytes do not hash to the envelope's BLAKE3 (the message
            names the ref, the expected and the found hash) or have another size.
        NotFoundError: nothing is stored under the ref.
        InvalidInputError: a malformed envelope.
    """
    env = envelope if isinstance(envelope, Envelope) else Envelope.from_dict(envelope)
    if not isinstance(env, Envelope):
        raise InvalidInputError(f"not an envelope: {envelope!r}")
    env = Envelope.from_dict(env.to_dict())
    try:
        payload = log.store.get(env.ref)
    except FileNotFoundError:
        raise NotFoundError(f"artifact {env.ref} is not stored in {log.uri}") from None
    except OSError as e:
        raise StorageError(f"cannot read artifact {env.ref} from {log.uri}: {e}") from e
    found = blake3.blake3(payload).hexdigest()
    if found != env.blake3 or len(payload) != env.size:
        raise IntegrityError(
            f"artifact {env.ref} is damaged: BLAKE3 expected {env.blake3}, found {found} "
            f"(size expected {env.size}, found {len(payload)})"
        )
    return payload
