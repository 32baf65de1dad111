"""Turn sorted key/value tables into ``(key, values)`` groups for record functions,
or into pieces of whole keys for columnar ones.

Called by the reduce task (over the merged stream of a partition, where one
key's rows may span several tables) and by the map side's combiner (over one
sorted table). Values are handed out as an iterator that pulls rows lazily
across table boundaries, so a key with more values than fit in memory still
streams through a reducer, as in mrjob. :func:`whole_key_pieces` cuts the same
merged stream into tables of whole keys for a ``reduce_batch`` that takes its
partition in pieces (``MapReduce.REDUCE_BATCH_PIECES``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s.io.outputs import table_values
from shuffle import codec, merge


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


def key_starts(column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Rows (after the first) where a new key starts in a sorted key column.

    Equal as the shuffle's key encoding has it (:func:`shuffle.codec.encode_key`):
    nulls are one key, and so are NaNs, which Arrow's comparison tells apart;
    a sort puts each of them together.
    """
    n = len(column)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    after, before = column.slice(1), column.slice(0, n - 1)
    changed = pc.not_equal(after, before)
    if pa.types.is_floating(column.type):
        changed = pc.and_not(changed, pc.and_(pc.is_nan(after), pc.is_nan(before)))
    if column.null_count:
        # null against a value is a new key; null against null is not
        changed = pc.if_else(
            pc.is_valid(changed), changed, pc.xor(pc.is_null(after), pc.is_null(before))
        )
    mask = np.asarray(changed.to_numpy(zero_copy_only=False), dtype=bool)
    return np.flatnonzero(mask).astype(np.int64) + 1


def _encoded_key(table: pa.Table, row: int) -> bytes:
    key = table.column(codec.KEY).slice(row, 1)
    (value,) = codec.decode_keys(key, codec.table_key_encoding(table.schema))
    return codec.encode_key(value)


def whole_key_pieces(tables: Iterable[pa.Table], limit: int) -> Iterator[pa.Table]:
    """A stream of tables sorted by key, cut again into pieces of whole keys.

    ``tables`` is sorted across tables (a key's rows may span several, as a
    merge emits them). Each piece is one table in key order, and no key has
    rows in two pieces. Keys are packed in order as :func:`mrk8s.tasks.run.
    bucket_ranges` packs hash buckets: a piece takes the next key while it
    stays within ``limit`` bytes, so a piece exceeds ``limit`` only when it is
    one key whose rows alone do. A table's bytes (``nbytes``) are counted as
    spread evenly over its rows.

    A piece is made of slices of the input tables (no copy), so it keeps
    alive at most the rest of the two tables it starts and ends in. Held at
    once: the piece being filled and the rows of the key being read.
    """
    limit = max(1, limit)
    done: list[pa.Table] = []  # whole keys of the piece being filled
    done_bytes = 0.0
    open_: list[pa.Table] = []  # rows of the last key seen, which the next table may go on with
    open_bytes = 0.0
    open_key = b""

    def take() -> pa.Table:
        nonlocal done, done_bytes
        piece = merge.concat(done)
        done, done_bytes = [], 0.0
        return piece

    for table in tables:
        n = table.num_rows
        if not n:
            continue
        starts = key_starts(table.column(codec.KEY))
        if open_ and _encoded_key(table, 0) != open_key:
            starts = np.concatenate((np.zeros(1, dtype=np.int64), starts))
        row_bytes = table.nbytes / n
        last_key = _encoded_key(table, n - 1)
        if not len(starts):  # the whole table is one key, maybe the open one
            open_.append(table)
            open_bytes += table.nbytes
            open_key = last_key
            continue
        # The open key ends where this table's first key starts.
        first = int(starts[0])
        if first:
            open_.append(table.slice(0, first))
            open_bytes += first * row_bytes
        if open_:
            if done and done_bytes + open_bytes > limit:
                yield take()
            done += open_
            done_bytes += open_bytes
            if done_bytes >= limit:
                yield take()
        # The keys starting in this table, whole but for its last: as many as fit per piece.
        pos, end = first, int(starts[-1])
        while pos < end:
            reach = pos + (limit - done_bytes) / row_bytes
            cut = min(end, int(starts[np.searchsorted(starts, reach, side="right") - 1]))
            if cut <= pos:  # the key at pos does not fit in what is left
                if done:
                    yield take()
                    continue
                # Alone it is larger than the limit: a piece of its own.
                cut = int(starts[np.searchsorted(starts, pos, side="right")])
            done.append(table.slice(pos, cut - pos))
            done_bytes += (cut - pos) * row_bytes
            pos = cut
            if pos < end or done_bytes >= limit:
                yield take()
        open_ = [table.slice(end)]
        open_bytes = (n - end) * row_bytes
        open_key = last_key
    if open_:
        if done and done_bytes + open_bytes > limit:
            yield take()
        done += open_
    if done:
        yield take()
