"""Stream names: validation and the injective, path-safe folder encoding (DESIGN §3)."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import blake3

from .errors import InvalidInputError

_NAME_RE = re.compile(r"[A-Za-z0-9._\-/]{1,255}")
# Encoded names longer than this are shortened with a hash so that they fit in one path
# component on every filesystem (most limit a component to 255 bytes).
_MAX_ENCODED = 200


def validate_stream_name(name: object) -> str:
    """Return `name` if it is a valid stream name, else raise `InvalidInputError` saying why."""
    if not isinstance(name, str):
        raise InvalidInputError(f"stream name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidInputError("stream name must not be empty")
    if len(name) > 255:
        raise InvalidInputError(f"stream name is {len(name)} characters long; the limit is 255")
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._\-/]", c)})
        raise InvalidInputError(
            f"stream name {name!r} contains {''.join(bad)!r}; "
            "allowed characters are letters, digits, '.', '_', '-' and '/'"
        )
    if name.startswith("/") or name.endswith("/"):
        raise InvalidInputError(f"stream name {name!r} must not start or end with '/'")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidInputError(
                f"stream name {name!r} has an empty, '.' or '..' path component"
            )
    return name


def quote_ident(name: str) -> str:
    """`name` as a double-quoted SQL identifier: the one way names reach SQL text.

    Every `"` is doubled, so no name can end the identifier early; a NUL character (which
    DuckDB would cut the text at) is refused.

    Raises:
        InvalidInputError: `name` is not a string or holds a NUL character.
    """
    return '"' + _sql_text(name, "identifier").replace('"', '""') + '"'


def quote_str(text: str) -> str:
    """`text` as a single-quoted SQL string literal (every `'` doubled; NUL refused).

    Raises:
        InvalidInputError: `text` is not a string or holds a NUL character.
    """
    return "'" + _sql_text(text, "string").replace("'", "''") + "'"


def _sql_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"an SQL {what} must be a str, not {type(text).__name__}")
    if "\0" in text:
        raise InvalidInputError(f"an SQL {what} cannot hold a NUL character: {text!r}")
    return text


def encode_stream_name(name: str) -> str:
    """Map a valid stream name to one path component, injectively.

    '/' becomes '%2F' ('%' cannot occur in a name, so decoding is unambiguous). Long results are
    cut and suffixed with '~' + a BLAKE3 digest of the name ('~' cannot occur either).
    """
    enc = quote(validate_stream_name(name), safe="._-")
    if len(enc) > _MAX_ENCODED:
        enc = enc[:150] + "~" + blake3.blake3(name.encode()).hexdigest()[:40]
    return enc


def decode_stream_name(component: str) -> str | None:
    """Inverse of `encode_stream_name` for unshortened names; None for hashed ones."""
    if "~" in component:
        return None
    return unquote(component)
