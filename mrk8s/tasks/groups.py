"""Turn sorted key/value tables into ``(key, values)`` groups for record functions.

Called by the reduce task (over the merged stream of a partition, where one
key's rows may span several tables) and by the map side's combiner (over one
sorted table). Values are handed out as an iterator that pulls rows lazily
across table boundaries, so a key with more values than fit in memory still
streams through a reducer, as in mrjob.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s.io.outputs import table_values
from shuffle import codec


def group_starts(column: pa.Array | pa.ChunkedArray) -> list[int]:
    """Row numbers where a new key starts in a sorted key column (always includes 0)."""
    n = len(column)
    if n == 0:
        return []
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    changed = pc.not_equal(column.slice(1), column.slice(0, n - 1))
    mask = np.asarray(changed.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
    return [0, *(np.flatnonzero(mask) + 1).tolist()]


class _Chunk:
    __slots__ = ("keys", "last_encoded", "starts", "values")

    def __init__(self, table: pa.Table) -> None:
        starts = group_starts(table.column(codec.KEY))
        enc = codec.table_key_encoding(table.schema)
        key_col = table.column(codec.KEY).combine_chunks()
        self.keys: list[Any] = codec.decode_keys(key_col.take(starts), enc)
        self.values = table_values(table)
        self.starts = [*starts, table.num_rows]
        self.last_encoded = codec.encode_key(self.keys[-1])


class Grouper:
    """Iterates ``(key, values)`` over a stream of tables sorted by key."""

    def __init__(self, tables: Iterable[pa.Table]) -> None:
        self._tables = iter(tables)
        self._chunk: _Chunk | None = None
        self._g = 0
        self._load()

    def _load(self) -> None:
        self._chunk = None
        self._g = 0
        for table in self._tables:
            if table.num_rows:
                self._chunk = _Chunk(table)
                return

    def __iter__(self) -> Iterator[tuple[Any, Iterator[Any]]]:
        return chain.from_iterable(self._parts())

    def _parts(self) -> Iterator[Iterable[tuple[Any, Iterator[Any]]]]:
        """The groups a table at a time: every key of the table but its last, whose
        rows may go on in the next table, as one iterator of ``(key, list
        iterator over a slice of the values)`` built by zip and map in C; then
        the last key, whose values come from :meth:`_values`.

        A generator resumed once per group and per value (and once more to skip
        what the reducer left of a key) was three quarters of the record path's
        time with one row per key (README, "The record path").
        """
        while self._chunk is not None:
            chunk, g = self._chunk, self._g
            last = len(chunk.keys) - 1
            if g < last:
                starts = chunk.starts
                bounds = map(slice, starts[g:last], starts[g + 1 : last + 1])
                yield zip(
                    chunk.keys[g:last],
                    map(iter, map(chunk.values.__getitem__, bounds)),
                    strict=True,
                )
                self._g = last
            values = self._values()
            yield ((chunk.keys[last], values),)
            for _ in values:  # the user may stop early; skip what is left of this key
                pass

    def _values(self) -> Iterator[Any]:
        chunk = self._chunk
        assert chunk is not None
        encoded = b""
        while True:
            assert chunk is not None
            yield from chunk.values[chunk.starts[self._g] : chunk.starts[self._g + 1]]
            if self._g + 1 < len(chunk.keys):
                self._g += 1
                return
            # The key was the chunk's last: it may go on in the next table.
            if not encoded:
                encoded = chunk.last_encoded
            self._load()
            chunk = self._chunk
            if chunk is None or codec.encode_key(chunk.keys[0]) != encoded:
                return
