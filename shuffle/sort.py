"""Fast, stable ordering of a key column: the sort at the heart of the shuffle.

Called by the map side (sort before partitioning and combining) and the
reduce side (sort merged pieces). Arrow's own ``sort_indices`` compares
variable-length strings one pair at a time, which costs about 1 µs a row;
map output keys are mostly repeated words, so instead the distinct keys are
sorted once (dictionary encoding) and rows are ordered by the integer rank
of their key. Integer keys are sorted by numpy (:func:`int_order`): Arrow's
sort of 64-bit integers is a ``std::stable_sort`` at about 100 ns a row,
numpy's SIMD sort a third of that. Other keys, and columns of mostly distinct
strings, use Arrow's own sort.

Every ordering here is stable and equals Arrow's ascending sort order (and so
the generic encoding's order, see :mod:`shuffle.codec`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shuffle import codec

#: Rows examined to decide whether keys repeat enough for the dictionary path
#: (large enough that a Zipf-distributed vocabulary shows its repeats).
_PROBE_ROWS = 65536
#: Fewer rows than this go to Arrow's sort whatever their keys. The dictionary
#: path is 2-4x faster from a few thousand rows of repeated words up (a map
#: task sorts each partition of a spill on its own, often that small).
_MIN_DICTIONARY_ROWS = 1024
#: Use the dictionary path when the probe's distinct keys are at most this share.
_MAX_DISTINCT_SHARE = 0.5


def _is_stringlike(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def key_order(column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Row indices that sort ``column`` ascending, stably (nulls first, as None sorts)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    if column.null_count == 0 and _is_stringlike(column.type) and n >= _MIN_DICTIONARY_ROWS:
        probe = column.slice(0, min(n, _PROBE_ROWS))
        distinct = len(pc.unique(probe))
        if distinct <= _MAX_DISTINCT_SHARE * len(probe):
            encoded = pc.dictionary_encode(column)
            dict_order = np.asarray(pc.array_sort_indices(encoded.dictionary), dtype=np.int64)
            rank = np.empty(len(dict_order), dtype=np.int64)
            rank[dict_order] = np.arange(len(dict_order), dtype=np.int64)
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            return stable_argsort_small(rank[codes], len(dict_order))
    if column.null_count == 0 and pa.types.is_integer(column.type):
        return int_order(column.to_numpy())
    # Nulls mean None, which sorts before every other key in the generic order.
    return np.asarray(pc.array_sort_indices(column, null_placement="at_start"), dtype=np.int64)


def stable_argsort_small(values: npt.NDArray[np.int64], upper: int) -> npt.NDArray[np.int64]:
    """Stable argsort of integers in ``[0, upper)``, by 16-bit radix passes.

    numpy radix-sorts 16-bit integers in linear time but falls back to a
    comparison sort for wider ones; ranks of distinct keys are dense and small,
    so one or two 16-bit passes (least significant first) order them faster.
    """
    if upper <= 1 << 16:
        return np.argsort(values.astype(np.uint16), kind="stable").astype(np.int64, copy=False)
    if upper > 1 << 32:
        return np.argsort(values, kind="stable").astype(np.int64, copy=False)
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    high = np.argsort((values[low] >> 16).astype(np.uint16), kind="stable")
    return low[high].astype(np.int64, copy=False)


def int_order(values: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int64]:
    """Row indices that sort integers ascending, stably.

    Values within a span of 2**16 are radix-sorted (:func:`stable_argsort_small`).
    Others are sorted by numpy's default sort, which is fast (vectorised) but
    not stable; equal values are then put back in row order by sorting
    ``(run of equal values, row)`` pairs, packed into one int64. That second
    sort costs as much as the first, and is skipped when every value is distinct.
    """
    n = len(values)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    low, high = int(values.min()), int(values.max())
    if high - low < 1 << 16:
        if values.dtype.kind == "u":  # (an unsigned subtraction of the minimum cannot wrap)
            offsets = (values - values.dtype.type(low)).astype(np.int64)
        else:
            offsets = values.astype(np.int64) - low
        return stable_argsort_small(offsets, high - low + 1)
    order = np.argsort(values).astype(np.int64, copy=False)
    ordered = values[order]
    new_run = ordered[1:] != ordered[:-1]
    if bool(new_run.all()):
        return order
    if n >= 1 << 31:  # the packing below would overflow
        return np.argsort(values, kind="stable").astype(np.int64, copy=False)
    run = np.zeros(n, dtype=np.int64)
    np.cumsum(new_run, out=run[1:])
    return order[np.argsort(run * n + order)]


_Rows = TypeVar("_Rows", pa.Table, pa.RecordBatch)


def sort_table(table: _Rows) -> _Rows:
    """``table`` (a table or a record batch) stably sorted by its key column."""
    if table.num_rows <= 1:
        return table
    return table.take(pa.array(key_order(table.column(codec.KEY))))
