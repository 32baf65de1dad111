"""The map side's sort buffer: partition, sort and spill within a memory budget.

Called by the map task with tables that have a ``key`` column (record output
already encoded by :mod:`shuffle.codec`, or a columnar user's table). When
the buffered tables exceed ``budget_bytes`` they are combined (optional
callback), split by partition, sorted by key within each partition and
written as one run to the :class:`shuffle.mapfile.MapOutputWriter`; so a map
task's memory does not grow with its input. This module knows partitions
and keys; the combine callback is where the caller's combiner runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shuffle import codec, merge, partition, sort
from shuffle.mapfile import MapOutputWriter, Rows

logger = logging.getLogger(__name__)


class Partitioner(Protocol):
    """Splits a table into streams: one per partition (and hash bucket).

    ``split`` returns stream id -> rows (tables, or slices of one record
    batch), where a stream id is ``partition * buckets + bucket``; the rows
    are sorted by key unless the partitioner is an unsorted one.
    """

    @property
    def num_partitions(self) -> int: ...

    @property
    def buckets(self) -> int: ...

    @property
    def sort_keys(self) -> bool: ...

    def split(self, table: pa.Table) -> dict[int, Rows]: ...


#: Hash buckets per partition in an unsorted shuffle: a reducer can read its
#: partition in up to this many pieces, each holding whole keys.
UNSORTED_BUCKETS = 4


def _split_by_ids(
    table: pa.Table, pids: npt.NDArray[np.int32], n: int, *, sort_keys: bool = True
) -> dict[int, Rows]:
    """Order rows by (partition, key) (or by partition alone) and cut them by partition.

    The pieces are slices of one record batch when the rows are one (else of
    the table): cheaper to cut and to join again than tables (2 against 3 us
    a slice, 5 against 9 us to join four pieces into one batch and serialise
    it), which counts at hundreds of partitions, when a run is cut into a
    thousand small streams.
    """
    if pids.size and (int(pids.min()) < 0 or int(pids.max()) >= n):
        bad = int(pids[(pids < 0) | (pids >= n)][0])
        raise ValueError(f"partition {bad} is out of range: there are {n} partitions (0..{n - 1})")
    # A stable sort by partition keeps the key order within each partition; numpy
    # radix-sorts 16-bit integers, so small partition counts cost O(rows).
    small = pids.astype(np.uint16) if n <= 1 << 16 else pids
    if sort_keys:
        by_key = sort.key_order(table.column(codec.KEY))
        order = by_key[np.argsort(small[by_key], kind="stable")]
    else:
        order = np.argsort(small, kind="stable")
    ordered = table.take(pa.array(order))
    batches = ordered.to_batches()
    whole: Rows = batches[0] if len(batches) == 1 else ordered  # never copied to be one
    counts = np.bincount(pids, minlength=n)
    out: dict[int, Rows] = {}
    start = 0
    for p, count in enumerate(counts.tolist()):
        if count:
            out[p] = whole.slice(start, count)
        start += count
    return out


@dataclass(frozen=True, slots=True)
class HashPartitioner:
    """Partition = stable 64-bit hash of the key (see :mod:`shuffle.partition`).

    With ``sort_keys=False`` rows are not sorted, and each partition is cut
    into ``buckets`` hash buckets. Bucket b of partition p is what
    :func:`shuffle.partition.hash_partition` calls partition ``p * buckets +
    b`` of ``num_partitions * buckets``, so the partition is the same as in a
    sorted shuffle and the bucket comes from the hash bits below it.
    """

    num_partitions: int
    sort_keys: bool = True
    unsorted_buckets: int = UNSORTED_BUCKETS

    @property
    def buckets(self) -> int:
        return 1 if self.sort_keys else max(1, self.unsorted_buckets)

    def split(self, table: pa.Table) -> dict[int, Rows]:
        enc = codec.table_key_encoding(table.schema)
        n = self.num_partitions * self.buckets
        ids = partition.hash_partition(table.column(codec.KEY), enc, n)
        return _split_by_ids(table, np.asarray(ids, dtype=np.int32), n, sort_keys=self.sort_keys)


@dataclass(frozen=True, slots=True)
class RangePartitioner:
    """Partition = position among sorted boundaries (generic key encodings)."""

    boundaries: tuple[bytes, ...]
    buckets: int = 1
    sort_keys: bool = True

    @property
    def num_partitions(self) -> int:
        return len(self.boundaries) + 1

    def split(self, table: pa.Table) -> dict[int, Rows]:
        ordered = merge.sort_table(table)
        enc = codec.table_key_encoding(ordered.schema)
        cuts = partition.range_cuts(ordered.column(codec.KEY), enc, list(self.boundaries))
        return {
            p: ordered.slice(cuts[p], cuts[p + 1] - cuts[p])
            for p in range(self.num_partitions)
            if cuts[p + 1] > cuts[p]
        }


@dataclass(frozen=True, slots=True)
class FunctionPartitioner:
    """Partition ids computed by a caller's function over the whole table."""

    num_partitions: int
    assign: Callable[[pa.Table], npt.NDArray[np.int32]]
    buckets: int = 1
    sort_keys: bool = True

    def split(self, table: pa.Table) -> dict[int, Rows]:
        pids = np.asarray(self.assign(table), dtype=np.int32)
        return _split_by_ids(table, pids, self.num_partitions)


def _join(pieces: list[Rows]) -> Rows:
    """One stream's pieces as one batch (a table if their schemas differ)."""
    if len(pieces) == 1:
        return pieces[0]
    if all(isinstance(p, pa.RecordBatch) for p in pieces) and merge.one_schema(pieces):
        return _concat_batches(pieces)
    return merge.concat(pieces).combine_chunks()


def _concat_batches(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Batches of one schema as one batch (``pa.concat_batches`` from pyarrow 19 on)."""
    concat = getattr(pa, "concat_batches", None)
    if concat is not None:
        return concat(batches)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class MapSorter:
    """Buffers a map task's output and writes sorted, partitioned runs.

    State: the buffered tables and their Arrow size. Parameters:
    ``budget_bytes`` is the buffer size that triggers a spill; ``combine``, if
    given, receives the buffered rows (sorted by key if ``combine_sorted``)
    and returns the combined table.
    """

    def __init__(
        self,
        writer: MapOutputWriter,
        partitioner: Partitioner,
        *,
        budget_bytes: int,
        combine: Callable[[pa.Table], pa.Table] | None = None,
        combine_sorted: bool = True,
    ) -> None:
        self.writer = writer
        self.partitioner = partitioner
        self.budget_bytes = max(1, budget_bytes)
        self.combine = combine
        self.combine_sorted = combine_sorted
        self._tables: list[pa.Table] = []
        # Uncombined: each table is split by partition as it arrives, while it is
        # still in the CPU's caches (a take over the whole buffer at spill time
        # reorders rows from main memory), and buffered as stream id -> pieces.
        # A sorted hash shuffle sorts each partition's pieces at spill time, one
        # partition at a time: two takes that stay in cache cost less than one
        # random take over the buffer (bench shuffle --sorted, 1 GiB 16 x 16: map
        # CPU 1.9 s against 2.5 with one sort of the buffer, 3.7 with Arrow's sort).
        self._splitter: Partitioner = partitioner
        self._sort_streams = False
        if partitioner.sort_keys and isinstance(partitioner, HashPartitioner):
            self._splitter = replace(partitioner, sort_keys=False, unsorted_buckets=1)
            self._sort_streams = True
        self._split_early = combine is None and not self._splitter.sort_keys
        self._pieces: dict[int, list[Rows]] = {}
        self._bytes = 0
        self.rows_in = 0

    def add(self, table: pa.Table) -> None:
        """Buffer ``table``, first spilling what is buffered if ``table`` would take
        the buffer past its budget. So the buffer holds at most the budget (or one
        larger table), and the last run is always written by :meth:`finish`, which
        tells the writer that no run follows (exact regions, no room kept for more)."""
        if table.num_rows == 0:
            return
        nbytes = table.nbytes
        if self._bytes and self._bytes + nbytes > self.budget_bytes:
            self.spill()
        if self._split_early:
            for sid, piece in self._splitter.split(table).items():
                self._pieces.setdefault(sid, []).append(piece)
        else:
            self._tables.append(table)
        self._bytes += nbytes
        self.rows_in += table.num_rows

    def spill(self, *, last: bool = False) -> None:
        """Write what is buffered as one run (sorted by key unless the partitioner is not).

        ``last``: no run follows (see ``MapOutputWriter.add_run``).
        """
        buckets = self.partitioner.buckets
        if self._pieces:
            pieces, self._pieces, self._bytes = self._pieces, {}, 0
            logger.debug("writing run %d: %d streams", self.writer.num_runs, len(pieces))
            # One batch per stream: a reducer computes over few large chunks. (Writing
            # the pieces as batches as they are saves this copy, but costs reducers more.)
            self.writer.add_run(self._streams(pieces), buckets, last=last)
            return
        if not self._tables:
            return
        tables, self._tables, self._bytes = self._tables, [], 0
        table = merge.concat(tables)
        if self.combine is not None:
            table = self.combine(merge.sort_table(table) if self.combine_sorted else table)
        logger.debug("writing run %d: %d rows", self.writer.num_runs, table.num_rows)
        self.writer.add_run(self.partitioner.split(table), buckets, last=last)

    def _streams(self, pieces: dict[int, list[Rows]]) -> Iterator[tuple[int, Rows]]:
        """Each stream's pieces as one batch, in stream order (sorted by key in a
        sorted shuffle), each let go of as it is handed on."""
        for sid in sorted(pieces):
            rows = _join(pieces.pop(sid))
            yield sid, sort.sort_table(rows) if self._sort_streams else rows

    def finish(self) -> None:
        self.spill(last=True)
