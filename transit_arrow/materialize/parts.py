"""A filter view's state as a list of Parquet part files (docs/format.md, "Filter-view parts").

A refresh of a filter/projection view writes the new records' output as one new part and a
checkpoint listing every part (path, BLAKE3, bytes, rows), so its cost does not depend on how
much state came before. Reads concatenate the parts (and keep the last row per key for an
upserting view). Small parts are merged, size-tiered: when the last `fanin` parts are all of
the same tier (tier 0: fewer than `base_rows` rows; tier t: fewer than `base_rows * fanin**t`)
and that tier is below `max_tier`, they are rewritten as one part. So a refresh rewrites at
most `fanin * base_rows * fanin**(max_tier - 1)` rows however large the state, a row is
rewritten at most `max_tier` times, and a view holds O(`fanin * max_tier` + rows /
`base_rows * fanin**(max_tier - 1)`) parts.

Part files are immutable and content-addressed (`<offset + 1:020d>-<blake3[:16]>.parquet`): a
branch's checkpoint lists its ancestor's parts by reference, and `gc` keeps every part a
checkpoint of the current definition lists.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

from ..engine.catalog import Catalog
from ..errors import IntegrityError, InvalidInputError
from ..manifest import SegmentRef
from ..names import encode_stream_name, quote_ident
from ..segments.verified import registry
from .sandbox import sandbox

__all__ = ["Part", "PartPolicy", "combine", "local_part", "merge_tail", "read_part", "write_part"]

_PART_FIELDS = {"path": str, "blake3": str, "bytes": int, "rows": int}


@dataclass(frozen=True)
class Part:
    """One part file of a filter view's state."""

    path: str
    blake3: str
    bytes: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        """The part's entry in a checkpoint's `parts` list."""
        return {"path": self.path, "blake3": self.blake3, "bytes": self.bytes, "rows": self.rows}

    @classmethod
    def from_json(cls, value: Any, where: str) -> Part:
        """Parse a `parts` entry; `IntegrityError` (naming `where`) when it is not one."""
        if not isinstance(value, dict) or set(value) != set(_PART_FIELDS):
            raise IntegrityError(f"{where}: a `parts` entry does not have the fields of a part")
        for name, kind in _PART_FIELDS.items():
            if not isinstance(value[name], kind) or isinstance(value[name], bool):
                raise IntegrityError(f"{where}: part field {name!r} has a wrong type")
        return cls(**value)


@dataclass(frozen=True)
class PartPolicy:
    """When the last parts are merged (see the module docstring)."""

    fanin: int = 8
    base_rows: int = 4096
    max_tier: int = 3

    def tier(self, rows: int) -> int:
        """0 below `base_rows` rows, t below `base_rows * fanin**t`."""
        t, limit = 0, self.base_rows
        while rows >= limit:
            t, limit = t + 1, limit * self.fanin
        return t


def write_part(catalog: Catalog, folder: str, branch: str, offset: int, table: pa.Table) -> Part:
    """Write `table` as a part of the state of `branch` through `offset` (atomically, like
    every store write) and return its entry."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue()
    digest = blake3.blake3(data).hexdigest()
    path = f"{folder}/state/{encode_stream_name(branch)}/{offset + 1:020d}-{digest[:16]}.parquet"
    catalog.put_segment(path, data)
    local = catalog.store.local_path(path)
    if local is not None:
        registry.remember(local, digest)  # hashed from the bytes just written
    return Part(path, digest, len(data), table.num_rows)


def local_part(catalog: Catalog, part: Part) -> str:
    """A local file holding the part's verified bytes, as segment reads get theirs: on a local
    store the store's own file, checked against the part's BLAKE3 (hashed on first use in this
    process and whenever the file changes since, else one `stat`); on an object store a
    verified copy in the log's local segment cache (fetched once). Raises `IntegrityError`
    naming the file and both hashes when the bytes do not match, or the file is missing."""
    local = catalog.store.local_path(part.path)
    if local is None:
        ref = SegmentRef(
            path=part.path,
            first_offset=0,
            last_offset=max(part.rows - 1, 0),
            records=part.rows,
            bytes=part.bytes,
            blake3=part.blake3,
            min_timestamp=0,
            max_timestamp=0,
        )
        return catalog.cache.path(catalog.store, ref)
    registry.check(
        local, part.blake3, part.bytes, what=f"materialization part {catalog.uri}/{part.path}"
    )
    return local


def read_part(catalog: Catalog, part: Part) -> pa.Table:
    """A part's rows, from a file whose bytes match the part's BLAKE3 (`local_part`)."""
    return pq.read_table(local_part(catalog, part))


def combine(tables: list[pa.Table], key: list[str] | None) -> pa.Table:
    """The parts' rows as one table, in part order: columns in the newest part's order (then
    any only older parts have), types unified as DuckDB's `UNION ALL BY NAME` does; with a
    `key`, only the last row per key by `_offset` (in `_offset` order)."""
    if not tables:
        raise InvalidInputError("a filter view's state has no parts")
    same = all(t.schema.equals(tables[-1].schema) for t in tables)
    if same and not key:
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    con = sandbox()
    try:
        names = [f"__p{i}" for i in range(len(tables))]
        for name, table in zip(names, tables, strict=True):
            con.register(name, table)
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {n}" for n in names)
        order = tables[-1].column_names
        rest = [c for t in tables for c in t.column_names if c not in order]
        columns = ", ".join(quote_ident(c) for c in [*order, *dict.fromkeys(rest)])
        sql = f"SELECT {columns} FROM ({union})"
        if key:
            cols = ", ".join(quote_ident(k) for k in key)
            sql = (
                f"{sql} QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY _offset DESC) = 1 "
                "ORDER BY _offset"
            )
        out: pa.Table = con.sql(sql).to_arrow_table()
        return out
    finally:
        con.close()


def merge_tail(
    catalog: Catalog,
    parts: list[Part],
    policy: PartPolicy,
    *,
    folder: str,
    branch: str,
    offset: int,
    key: list[str] | None,
) -> list[Part]:
    """`parts` with the last `fanin` parts merged into one while they share a tier below
    `max_tier` (cascading). The merged parts are read verified; the originals stay (older
    checkpoints list them)."""
    while len(parts) >= policy.fanin > 1:
        tail = parts[-policy.fanin :]
        tiers = {policy.tier(p.rows) for p in tail}
        if len(tiers) != 1 or tiers.pop() >= policy.max_tier:
            break
        merged = combine([read_part(catalog, p) for p in tail], key)
        parts = [*parts[: -policy.fanin], write_part(catalog, folder, branch, offset, merged)]
    return parts
