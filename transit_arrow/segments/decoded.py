"""A bounded cache of decoded segment row groups, for a server whose streams many clients read.

Reading a segment decodes its Parquet (zstd for segments above 1 MiB): most of what serving a
large read costs (README, "Server"). When the same branch is read again and again (evaluators,
several consumers of one dataset), the cache hands out the row groups decoded by an earlier
read instead.

- **Keyed by content.** An entry is a row group's batches as Parquet decoded them (before a
  read gives them its schema), keyed by the segment's BLAKE3 (the one its commit records), the
  row group's index and the columns read. Entries are only ever made from a file that was just
  verified against that digest (`verified.check`), and only ever served to a read whose commit
  names the same digest; the read still verifies the file (one `stat` when it is unchanged), so
  a damaged file is refused as before, cache or not.
- **Bounded.** At most `max_bytes` of Arrow buffers are held; the least recently used row
  groups are dropped first; a row group larger than the bound is never kept.
- **A server's.** A `Log` has no cache (`Catalog.decoded`); `transit serve` gives its log
  one (512 MB, or an eighth of the machine's memory when less; `--read-cache-mb N` sets it,
  0 turns it off).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa

__all__ = ["DecodedCache"]

_Key = tuple[str, int, tuple[str, ...] | None]


class DecodedCache:
    """Decoded row groups by (segment BLAKE3, row group, columns), LRU, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, tuple[list[pa.RecordBatch], int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(digest: str, group: int, columns: list[str] | None) -> _Key:
        return digest, group, None if columns is None else tuple(columns)

    def get(self, key: _Key) -> list[pa.RecordBatch] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: _Key, batches: list[pa.RecordBatch]) -> None:
        """Keep `batches`, decoded from a file verified against `key`'s digest."""
        size = sum(b.get_total_buffer_size() for b in batches)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            while self._entries and self.bytes + size > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
            self._entries[key] = (batches, size)
            self.bytes += size

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
