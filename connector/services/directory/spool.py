"""Containers that keep a directory run's memory flat in the directory's size.

A first sync of 100,000 people plans 100,000 creations, and a full run must remember
every entry it saw (who is missing has left). :class:`Spool` keeps a list of planned
changes in memory up to a bound and the rest in an unnamed temporary file;
:class:`IdSet` remembers identifiers as 8-byte digests in a sorted array.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import pickle
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Generic, TypeVar, overload

T = TypeVar("T")

SPOOL_IN_MEMORY = 1000
"""Items a spool keeps in memory before it writes the rest to disk."""
SPOOL_CHUNK = 1000
"""Items written (pickled) together: one disk write, one read when iterating."""


class Spool(Generic[T]):
    """An append-only list that keeps its first items in memory and the rest on disk.

    Iterating reads the spilled items back one chunk at a time, so a plan of any size
    is walked with a bounded amount of memory. Indexing past the in-memory head reads
    from disk (fine for the odd look, not for loops: iterate instead).
    """

    def __init__(self, items: Iterable[T] = (), *, in_memory: int = SPOOL_IN_MEMORY) -> None:
        self._head: list[T] = []
        self._tail: list[T] = []
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self._in_memory = in_memory
        self.extend(items)

    def append(self, item: T) -> None:
        """Add one item at the end."""
        if len(self._head) < self._in_memory:
            self._head.append(item)
            return
        self._tail.append(item)
        if len(self._tail) >= SPOOL_CHUNK:
            self._spill()

    def extend(self, items: Iterable[T]) -> None:
        """Add items at the end, in order."""
        for item in items:
            self.append(item)

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="seller-connector-spool-")  # noqa: SIM115
        self._file.seek(0, 2)
        pickle.dump(self._tail, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._spilled += len(self._tail)
        self._tail = []

    def __len__(self) -> int:
        return len(self._head) + self._spilled + len(self._tail)

    def __bool__(self) -> bool:
        return bool(self._head)

    def __iter__(self) -> Iterator[T]:
        yield from self._head
        if self._file is not None:
            spilled, position = self._spilled, 0
            read = 0
            while read < spilled:
                # Other iterations may move the file position: keep our own.
                self._file.seek(position)
                chunk: list[T] = pickle.load(self._file)  # noqa: S301 (our own file)
                position = self._file.tell()
                read += len(chunk)
                yield from chunk
        yield from list(self._tail)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            start, stop, step = index.start, index.stop, index.step
            if len(self) <= len(self._head):
                return self._head[index]
            if all(v is None or v >= 0 for v in (start, stop)) and (step or 1) > 0:
                return list(islice(self, start, stop, step))
            return list(self)[index]
        if 0 <= index < len(self._head):
            return self._head[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        for n, item in enumerate(self):
            if n == index:
                return item
        raise IndexError(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Spool | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"Spool({len(self)} items, {len(self._head)} in memory)"

    def close(self) -> None:
        """Remove the file now (it goes anyway when the spool is garbage-collected)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def digest(value: str) -> int:
    """A 64-bit digest of a string (signed, to fit an ``array('q')``)."""
    return int.from_bytes(
        hashlib.blake2b(value.encode(), digest_size=8).digest(), "little", signed=True
    )


class IdSet:
    """A set of strings kept as 8-byte digests: about 9 bytes an item at any size.

    Two strings with the same 64-bit digest are taken for one: with 100,000 entries the
    chance of that is about one in 3.7 billion, and the sync uses it only to tell who
    was seen (a wrong "seen" leaves a user active until the next run, never the other
    way round).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._sorted = array("q")
        self._recent: set[int] = set()
        for value in values:
            self.add(value)

    def add(self, value: str) -> bool:
        """Add ``value``. :returns: whether it was new."""
        key = digest(value)
        if self._has(key):
            return False
        self._recent.add(key)
        # Merge the recent digests into the sorted array when they reach an eighth of
        # it: the array is rewritten O(log n) times over its life.
        if len(self._recent) >= max(4096, len(self._sorted) // 8):
            self._merge()
        return True

    def _merge(self) -> None:
        merged = array("q", heapq.merge(self._sorted, sorted(self._recent)))
        self._sorted = merged
        self._recent = set()

    def _has(self, key: int) -> bool:
        if key in self._recent:
            return True
        position = bisect.bisect_left(self._sorted, key)
        return position < len(self._sorted) and self._sorted[position] == key

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self._has(digest(value))

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)
