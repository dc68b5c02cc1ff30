"""Output buffers that large segment encodes reuse instead of faulting in fresh memory.

Encoding a large segment writes its Parquet bytes into one new buffer. A buffer of 32 MiB or
more is a fresh `mmap` for the C allocator, so every one of its 4 KiB pages is faulted in and
zeroed by the kernel as the encoder first writes it: on this project's virtual machines about
4 µs a page, 65 ms for a 64 MiB segment, as long as the rest of the encode. `ArenaPool` keeps
the buffers of earlier encodes (at most `KEEP` of them) and lends them again, already mapped.

A buffer is lent as a `bytearray` holding exactly the segment's bytes (the object stores and
botocore take it as it is). It is lent again only when nothing else refers to it: the pool
checks the object's reference count, which every holder (a caller, a `memoryview` or Arrow
buffer over it, an upload still in flight) raises, so bytes still in use are never overwritten.
Free buffers idle for `IDLE_SECONDS` are dropped at the next use of the pool, and `clear()`
drops every free one.
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["ARENA_MIN_BYTES", "IDLE_SECONDS", "KEEP", "ArenaPool", "pool"]

#: Encodes whose output may reach this size use a pooled buffer; smaller buffers come from the
#: C allocator's heap, which reuses freed memory itself.
ARENA_MIN_BYTES = 16 * 1024 * 1024
#: Buffers the pool keeps (free or lent).
KEEP = 2
#: Free buffers unused this long are dropped at the next use of the pool.
IDLE_SECONDS = 60.0

# References to a pooled buffer while only the pool holds it, as `_is_free` counts them: the
# pool's list, the loop variable and `sys.getrefcount`'s argument.
_POOL_ONLY = 3


class ArenaPool:
    """Reusable `bytearray` output buffers (see the module docstring)."""

    def __init__(self, keep: int = KEEP, idle_seconds: float = IDLE_SECONDS) -> None:
        self.keep = keep
        self.idle_seconds = idle_seconds
        self._buffers: list[bytearray] = []
        self._used: list[float] = []
        self._lock = threading.Lock()

    def take(self, capacity: int) -> bytearray:
        """A buffer of exactly `capacity` bytes (contents undefined), reused when one is free.

        Give it back with `give` once it is filled and trimmed, even while it is still in use:
        the pool lends it again only after every other reference to it is gone."""
        with self._lock:
            self._drop_idle()
            free = [i for i in range(len(self._buffers)) if self._is_free(i)]
            if free:
                # The largest free buffer: growing it faults in only the difference.
                i = max(free, key=lambda j: len(self._buffers[j]))
                buffer = self._buffers.pop(i)
                self._used.pop(i)
            else:
                # Zero-filled by `calloc`: its pages are faulted in as the encoder writes them.
                return bytearray(capacity)
        if len(buffer) > capacity:
            del buffer[capacity:]
        elif len(buffer) < capacity:
            buffer.extend(bytes(capacity - len(buffer)))
        return buffer

    def give(self, buffer: bytearray) -> None:
        """Keep `buffer` for later `take`s (lent again once nothing else refers to it)."""
        with self._lock:
            self._buffers.append(buffer)
            self._used.append(time.monotonic())
            while len(self._buffers) > self.keep:
                # Forget the smallest (if still in use, its holders keep it alive meanwhile).
                i = min(range(len(self._buffers)), key=lambda j: len(self._buffers[j]))
                del self._buffers[i], self._used[i]

    def clear(self) -> None:
        """Forget every buffer (those still in use stay alive until their holders let go)."""
        with self._lock:
            self._buffers.clear()
            self._used.clear()

    def __len__(self) -> int:
        return len(self._buffers)

    def _is_free(self, i: int) -> bool:
        buffer = self._buffers[i]
        return sys.getrefcount(buffer) <= _POOL_ONLY

    def _drop_idle(self) -> None:
        now = time.monotonic()
        for i in reversed(range(len(self._buffers))):
            if now - self._used[i] >= self.idle_seconds and self._is_free(i):
                del self._buffers[i], self._used[i]


#: The pool the segment encoder uses.
pool = ArenaPool()
