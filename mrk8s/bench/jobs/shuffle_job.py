"""The job behind ``mrk8s bench shuffle``: synthetic rows through the real shuffle.

Map task ``i`` reads its seed, a tiny Arrow IPC file that :mod:`mrk8s.bench.shuffle_bench`
writes into the job's directory (one record batch per chunk: ``task``,
``chunk``, ``rows``), so every map task is an ordinary task with an ordinary
input split. ``map_batch`` turns each chunk into rows (a key and a fixed-size
random payload, :func:`generate_chunk`, deterministic in the seed, the task
and the chunk) and returns them; the engine hashes, partitions, spills and writes
them as it does any job's output (sorting them too in ``--sorted`` runs). The rows are a
function of the seed, so what each partition should receive (its row count
and the sums of its row hashes, :func:`partition_checksums`) is computed by
:func:`mrk8s.bench.shuffle_bench.expected_counters` from the same seeds, outside the timed
job, as the lower bound and the peers of the comparison verify outside theirs.

``reduce_batch`` gets each partition in memory (whole, or in pieces of whole
keys when it exceeds the reducer's memory share), counts and hashes its rows
(counters) and returns nothing (so no output is written) unless
``write_output``. :func:`mrk8s.bench.shuffle_bench.verify` compares each partition with
what it should have received.

A row hash (:func:`row_hashes`) covers the key and the payload's first and
last 8 bytes: enough to catch a lost, duplicated, misrouted or misaligned row
at a few numpy passes per side; damage to the payload's middle bytes is the
map-output checksums' job. The checksum of a set of rows is its row count and
the exact sums of the low and high 32 bits of its row hashes, so it does not
depend on row order and adds up across map tasks as counters do.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s.job import MapReduce, Step
from shuffle import codec, partition

#: The counter group of everything this job records.
COUNTER_GROUP = "shuffle bench"

KEY_TYPES = ("int64", "string")

#: Characters of a string key: the 16 hex digits of a random 64-bit number, so
#: string keys are as distinct as int64 ones.
STRING_KEY_CHARS = 16

#: Random bytes each map task draws once; chunks copy their payloads out of it
#: at different offsets. numpy draws random bytes at about 1 GB/s, slower than
#: the shuffle itself, while copying runs at memory speed. LZ4 looks back 64 KiB,
#: so a 16 MiB period leaves the payloads as incompressible as fresh ones.
PAYLOAD_POOL_BYTES = 16 << 20

#: Largest chunk: the map side's per-partition sums go through float64
#: bincounts, exact while a chunk's sum of 32-bit halves stays below 2**53.
MAX_CHUNK_ROWS = 1 << 20

_MASK32 = np.uint64(0xFFFFFFFF)
# Odd multipliers with well-spread bits (xxHash's primes) and splitmix64's finalizer.
_FIRST_MULT = np.uint64(0xC2B2AE3D27D4EB4F)
_LAST_MULT = np.uint64(0x165667B19E3779F9)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def key_bytes(key_type: str) -> int:
    """Bytes of one key's value (Arrow offsets not counted)."""
    return 8 if key_type == "int64" else STRING_KEY_CHARS


# -- generating rows -------------------------------------------------------------

_POOLS: dict[tuple[int, int, int], np.ndarray] = {}


def _payload_pool(seed: int, task: int, size: int) -> np.ndarray:
    """The task's random bytes (kept for its later chunks; one task at a time)."""
    key = (seed, task, size)
    pool = _POOLS.get(key)
    if pool is None:
        _POOLS.clear()
        rng = np.random.Generator(np.random.PCG64([seed, task, 1 << 32]))
        words = rng.integers(0, 2**64 - 1, (size + 7) // 8, dtype=np.uint64, endpoint=True)
        pool = words.view(np.uint8)[:size]
        _POOLS[key] = pool
    return pool


def _payload_array(
    seed: int, task: int, chunk: int, rows: int, payload_bytes: int, task_bytes: int
) -> pa.Array:
    total = rows * payload_bytes
    pool = _payload_pool(seed, task, max(payload_bytes, min(PAYLOAD_POOL_BYTES, task_bytes)))
    data = np.empty(total, dtype=np.uint8)
    # Start each chunk somewhere else in the pool; a prime stride keeps the
    # starts apart and unaligned to the row size.
    source = (chunk * 1_000_003) % len(pool)
    done = 0
    while done < total:
        take = min(total - done, len(pool) - source)
        data[done : done + take] = pool[source : source + take]
        done += take
        source = 0
    offsets = np.arange(0, total + 1, payload_bytes, dtype=np.int64)
    if total < 2**31:
        return pa.Array.from_buffers(
            pa.binary(), rows, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
        )
    return pa.Array.from_buffers(
        pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _key_array(rng: np.random.Generator, rows: int, key_type: str) -> pa.Array:
    words = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
    if key_type == "int64":
        return pa.array(words.view(np.int64))
    # Nibble j of each word (most significant first) becomes a hex digit.
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    digits = _HEX[((words[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)]
    offsets = np.arange(0, rows * STRING_KEY_CHARS + 1, STRING_KEY_CHARS, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())]
    )


def generate_chunk(
    *,
    seed: int,
    task: int,
    chunk: int,
    rows: int,
    key_type: str,
    payload_bytes: int,
    task_bytes: int = PAYLOAD_POOL_BYTES,
) -> pa.Table:
    """Rows ``key`` (int64 or a 16-hex-digit string) and ``payload`` (random bytes).

    Deterministic in ``(seed, task, chunk)`` and the sizes; ``task_bytes`` (the
    task's payload bytes in all) only caps the random pool of a small task.
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    rng = np.random.Generator(np.random.PCG64([seed, task, chunk]))
    keys = _key_array(rng, rows, key_type)
    payload = _payload_array(seed, task, chunk, rows, payload_bytes, task_bytes)
    return pa.table({codec.KEY: keys, "payload": payload})


# -- checksums ----------------------------------------------------------------------


def _fixed_width_words(array: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The first and the last 8 bytes of each value of a binary array of ``width``-byte values."""
    n = len(array)
    kind = array.type
    large = pa.types.is_large_binary(kind) or pa.types.is_large_string(kind)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if large else np.int32)
    offsets = offsets[array.offset : array.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    if end - start != n * width or (n and int(np.diff(offsets).min()) != width):
        raise ValueError(f"payload values are not all {width} bytes long")
    data = buffers[2]
    first = np.ndarray((n,), dtype="<u8", buffer=data, offset=start, strides=(width,))
    last = np.ndarray((n,), dtype="<u8", buffer=data, offset=start + width - 8, strides=(width,))
    return first, last


def _batch_hashes(batch: pa.RecordBatch, payload_bytes: int) -> np.ndarray:
    keys = batch.column(codec.KEY)
    h: np.ndarray
    if pa.types.is_integer(keys.type):
        h = keys.to_numpy().astype(np.int64, copy=False).view(np.uint64).copy()
    else:
        h = partition.hash_keys(keys, codec.TYPED)
    first, last = _fixed_width_words(batch.column("payload"), payload_bytes)
    h += first * _FIRST_MULT
    h += last * _LAST_MULT
    scratch = np.empty_like(h)
    np.right_shift(h, np.uint64(30), out=scratch)
    h ^= scratch
    h *= _MIX_1
    np.right_shift(h, np.uint64(27), out=scratch)
    h ^= scratch
    h *= _MIX_2
    np.right_shift(h, np.uint64(31), out=scratch)
    h ^= scratch
    return h


#: Rows hashed in one go: small batches are joined up to this many first.
HASH_ROWS = 1 << 16


def row_hashes(table: pa.Table, payload_bytes: int) -> np.ndarray:
    """One 64-bit hash per row of ``key`` and the payload's first and last 8 bytes.

    Batches are joined into groups of about :data:`HASH_ROWS` rows first: a
    reducer of a 256 x 256 hash shuffle gets its piece as a few thousand
    batches of ~300 rows, and a dozen numpy calls per batch took half of its
    reduce stage (py-spy); a copy of a group costs less.
    """
    parts = []
    group: list[pa.RecordBatch] = []
    rows = 0
    for batch in [*table.to_batches(), None]:
        if batch is not None and not batch.num_rows:
            continue
        if group and (batch is None or rows + batch.num_rows > HASH_ROWS):
            joined = group[0] if len(group) == 1 else _join(group)
            parts.append(_batch_hashes(joined, payload_bytes))
            group, rows = [], 0
        if batch is not None:
            group.append(batch)
            rows += batch.num_rows
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _join(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    (joined,) = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return joined


def checksum(table: pa.Table, payload_bytes: int) -> tuple[int, int, int]:
    """``(rows, sum of low halves, sum of high halves)`` of the rows' hashes, exact."""
    h = row_hashes(table, payload_bytes)
    lo = int(np.sum(h & _MASK32, dtype=np.uint64))
    hi = int(np.sum(h >> np.uint64(32), dtype=np.uint64))
    return len(h), lo, hi


def partition_checksums(
    table: pa.Table, payload_bytes: int, num_partitions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hash partition (as the engine assigns them): rows, low sums, high sums.

    For at most :data:`MAX_CHUNK_ROWS` rows (the sums go through float64).
    """
    if table.num_rows > MAX_CHUNK_ROWS:
        raise ValueError(f"{table.num_rows} rows: give at most {MAX_CHUNK_ROWS} at a time")
    pids = partition.hash_partition(table.column(codec.KEY), codec.TYPED, num_partitions)
    h = row_hashes(table, payload_bytes)
    rows = np.bincount(pids, minlength=num_partitions)
    lo = np.bincount(pids, weights=(h & _MASK32).astype(np.float64), minlength=num_partitions)
    hi = np.bincount(
        pids, weights=(h >> np.uint64(32)).astype(np.float64), minlength=num_partitions
    )
    return rows, lo, hi


def check_sorted(keys: pa.ChunkedArray | pa.Array, partition_index: int) -> None:
    """Raise unless ``keys`` never decrease (what a sorted shuffle hands a reducer)."""
    if len(keys) < 2:
        return
    ok = pc.greater_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    if not pc.all(ok).as_py():
        row = int(pc.index(ok, False).as_py()) + 1
        raise ValueError(
            f"partition {partition_index} arrived unsorted: key {keys[row].as_py()!r} at row "
            f"{row} follows {keys[row - 1].as_py()!r}"
        )


def counter_name(partition_index: int, side: str, what: str) -> str:
    """``"p00003 map rows"``: one counter of one partition, as a side saw it."""
    return f"p{partition_index:05d} {side} {what}"


# -- the job -------------------------------------------------------------------------


class ShuffleBench(MapReduce):
    """Generates rows in the map tasks, verifies them in the reduce tasks.

    A hash shuffle without sorting, as the peers of the comparison do; a
    reduce task may call ``reduce_batch`` more than once when its partition
    exceeds its memory share (the checksums add up across calls).
    """

    SORT_KEYS = False

    def configure_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-reducers", type=int, required=True)
        parser.add_argument("--key-type", choices=KEY_TYPES, default="int64")
        parser.add_argument("--payload-bytes", type=int, default=90)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--task-bytes", type=int, default=PAYLOAD_POOL_BYTES)
        parser.add_argument("--write-output", action="store_true")
        parser.add_argument("--tamper", action="store_true", help=argparse.SUPPRESS)

    def _count(self, name: str, amount: int) -> None:
        if amount:
            self.increment_counter(COUNTER_GROUP, name, amount)

    def map_batch(self, seeds: pa.Table) -> pa.Table:
        o = self.options
        started = time.perf_counter_ns()
        tables = [
            generate_chunk(
                seed=o.seed,
                task=task,
                chunk=chunk,
                rows=rows,
                key_type=o.key_type,
                payload_bytes=o.payload_bytes,
                task_bytes=o.task_bytes,
            )
            for task, chunk, rows in zip(
                seeds.column("task").to_pylist(),
                seeds.column("chunk").to_pylist(),
                seeds.column("rows").to_pylist(),
                strict=True,
            )
        ]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        self._count("map generate ns", time.perf_counter_ns() - started)
        return table

    def reduce_batch(self, table: pa.Table) -> pa.Table:
        o = self.options
        started = time.perf_counter_ns()
        if o.tamper:  # test hook: lose a row, which verification must notice
            table = table.slice(0, table.num_rows - 1)
        if table.num_rows:
            first_key = table.column(codec.KEY)[0].as_py()
            p = partition.partition_of(first_key, o.num_reducers)
            if self.SORT_KEYS:
                check_sorted(table.column(codec.KEY), p)
            rows, lo, hi = checksum(table, o.payload_bytes)
            self._count(counter_name(p, "reduce", "rows"), rows)
            self._count(counter_name(p, "reduce", "sum_lo"), lo)
            self._count(counter_name(p, "reduce", "sum_hi"), hi)
        self._count("reduce checksum ns", time.perf_counter_ns() - started)
        return table if o.write_output else table.slice(0, 0)


class SortedShuffleBench(ShuffleBench):
    """The same through the sorted shuffle: every partition arrives sorted by key."""

    SORT_KEYS = True


class SortedPiecesShuffleBench(SortedShuffleBench):
    """The sorted shuffle with ``reduce_batch`` taking each partition in pieces of
    whole keys, in key order (``REDUCE_BATCH_PIECES``): a reducer's memory then
    stays within its budget however large its partition (the checksums add up
    across calls, as in the hash shuffle)."""

    REDUCE_BATCH_PIECES = True


class SortedRecordShuffleBench(SortedShuffleBench):
    """The sorted shuffle with a record reducer, ``reducer(key, values)``, as most jobs use.

    The engine groups each partition by key and calls the reducer once per key
    with its payloads (``bytes``); the reducer keeps the rows and checksums them
    :data:`HASH_ROWS` at a time, vectorised as ``reduce_batch`` does (the same
    counters, so the same verification), and in ``reducer_final`` the rest.
    """

    def steps(self) -> list[Step]:
        return [
            Step(
                map_batch=self.map_batch,
                reducer_init=self.reducer_init,
                reducer=self.reducer,
                reducer_final=self.reducer_final,
            )
        ]

    def reducer_init(self) -> Iterator[tuple[Any, Any]]:
        self._keys: list[int | str] = []
        self._payloads: list[bytes] = []
        self._tampered = False
        yield from ()

    def reducer(self, key: int | str, values: Iterable[bytes]) -> Iterator[tuple[Any, Any]]:
        for value in values:
            self._keys.append(key)
            self._payloads.append(value)
        if len(self._keys) >= HASH_ROWS:
            self._checksum_held()
        yield from ()

    def reducer_final(self) -> Iterator[tuple[Any, Any]]:
        self._checksum_held()
        yield from ()

    def _checksum_held(self) -> None:
        keys, payloads = self._keys, self._payloads
        if not keys:
            return
        o = self.options
        started = time.perf_counter_ns()
        if o.tamper and not self._tampered:  # test hook: lose a row, once per task
            self._tampered = True
            keys.pop()
            payloads.pop()
        key_type = pa.int64() if o.key_type == "int64" else pa.string()
        table = pa.table({codec.KEY: pa.array(keys, key_type), "payload": pa.array(payloads)})
        p = partition.partition_of(keys[0], o.num_reducers)
        rows, lo, hi = checksum(table, o.payload_bytes)
        self._count(counter_name(p, "reduce", "rows"), rows)
        self._count(counter_name(p, "reduce", "sum_lo"), lo)
        self._count(counter_name(p, "reduce", "sum_hi"), hi)
        keys.clear()
        payloads.clear()
        self._count("reduce checksum ns", time.perf_counter_ns() - started)
