"""Tests for shuffle.sorter: the map side's buffer that partitions, sorts and spills.

Each test feeds a MapSorter, publishes the map output through a real
MapOutputWriter on ``tmp_path`` and reads every partition back. The oracles
are independent of the code under test: a key's hash partition is recomputed
one key at a time with ``partition.partition_of`` (the pure-Python reference
of ``hash_partition``, over the key's generic encoding, whatever column form
the key travelled in); range partitions with ``bisect`` over the boundaries;
contents with ``collections.Counter`` and ``sorted()``.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shuffle import codec, partition
from shuffle.mapfile import MapOutputWriter, read_segment
from shuffle.sorter import (
    FunctionPartitioner,
    HashPartitioner,
    MapSorter,
    Partitioner,
    RangePartitioner,
)
from shuffle.store import FsspecStore

Row = tuple[Any, Any]


def table_of(rows: list[Row]) -> pa.Table:
    return codec.records_to_table([k for k, _ in rows], [v for _, v in rows])


def decode(table: pa.Table | pa.RecordBatch) -> list[Row]:
    keys = codec.decode_keys(table.column(codec.KEY), codec.table_key_encoding(table.schema))
    values = codec.decode_values(
        table.column(codec.VALUE), codec.table_value_encoding(table.schema)
    )
    return list(zip(keys, values, strict=True))


def run_sorter(
    tmp_path: Path,
    partitioner: Partitioner,
    tables: list[pa.Table],
    *,
    budget_bytes: int,
    combine: Callable[[pa.Table], pa.Table] | None = None,
) -> tuple[MapSorter, dict[int, list[list[Row]]]]:
    """Feed ``tables``, publish the map output; return partition -> its streams' rows."""
    store = FsspecStore(str(tmp_path / "shuffle"))
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), batch_rows=64)
    sorter = MapSorter(writer, partitioner, budget_bytes=budget_bytes, combine=combine)
    for table in tables:
        sorter.add(table)
    sorter.finish()
    index = writer.finish(store, "map.arrow")
    streams = {
        p: [
            [row for batch in run for row in decode(batch)]
            for run in read_segment(store, "map.arrow", refs)
        ]
        for p, refs in index.items()
    }
    return sorter, streams


def random_rows(rng: random.Random, n: int, kind: str = "str") -> list[Row]:
    """``n`` rows over a 300-key vocabulary; values number the rows."""
    vocab: list[Any] = {
        "str": [f"w{i}" for i in range(300)],
        "int": [rng.randrange(-(2**63), 2**63) for _ in range(300)],
        "bytes": [rng.randbytes(rng.randrange(0, 20)) for _ in range(300)],
    }[kind]
    return [(rng.choice(vocab), i) for i in range(n)]


def chunks(rows: list[Row], size: int) -> list[pa.Table]:
    return [table_of(rows[i : i + size]) for i in range(0, len(rows), size)]


def assert_streams_sorted(streams: dict[int, list[list[Row]]]) -> None:
    for runs in streams.values():
        for rows in runs:
            encoded = [codec.encode_key(k) for k, _ in rows]
            assert encoded == sorted(encoded)


@pytest.mark.parametrize("kind", ["str", "int", "bytes"])
def test_a_tiny_budget_spills_runs_and_every_row_lands_in_its_hash_partition(
    tmp_path: Path, kind: str
) -> None:
    rng = random.Random(1)
    rows = random_rows(rng, 3000, kind)
    tables = chunks(rows, 100)

    sorter, streams = run_sorter(
        tmp_path, HashPartitioner(7), tables, budget_bytes=3 * tables[0].nbytes
    )

    assert sorter.writer.num_runs >= 8
    assert sorter.rows_in == len(rows)
    for p, runs in streams.items():
        assert len(runs) > 1  # several spills, each a stream of this partition
        for run in runs:
            assert {partition.partition_of(k, 7) for k, _ in run} == {p}
    assert_streams_sorted(streams)
    assert Counter(row for runs in streams.values() for run in runs for row in run) == Counter(rows)


def test_a_large_spill_of_repeated_keys_is_partitioned_and_stably_sorted(
    tmp_path: Path,
) -> None:
    # Enough rows of a small vocabulary for the sort's dictionary-rank path.
    rng = random.Random(5)
    rows = random_rows(rng, 70_000)

    _, streams = run_sorter(tmp_path, HashPartitioner(4), [table_of(rows)], budget_bytes=10**9)

    where = {k: partition.partition_of(k, 4) for k in {k for k, _ in rows}}
    expected: dict[int, list[list[Row]]] = {}
    # sorted() is stable: equal keys keep their input order.
    for row in sorted(rows, key=lambda r: r[0]):
        expected.setdefault(where[row[0]], [[]])[0].append(row)
    assert streams == expected


@pytest.mark.parametrize("kind", ["str", "int"])
def test_a_spill_of_many_tables_sorts_each_partition_across_them_stably(
    tmp_path: Path, kind: str
) -> None:
    # Tables are split by partition as they come and each partition sorted at
    # spill time: equal keys from different tables keep the tables' order.
    rng = random.Random(9)
    rows = random_rows(rng, 6000, kind)
    tables = chunks(rows, 700)

    sorter, streams = run_sorter(tmp_path, HashPartitioner(5), tables, budget_bytes=10**9)

    assert sorter.writer.num_runs == 1
    if kind == "int":
        assert table_of(rows).schema.field(codec.KEY).type == pa.int64()
    where = {k: partition.partition_of(k, 5) for k in {k for k, _ in rows}}
    expected: dict[int, list[list[Row]]] = {}
    for row in sorted(rows, key=lambda r: codec.encode_key(r[0])):  # stable
        expected.setdefault(where[row[0]], [[]])[0].append(row)
    assert streams == expected


def test_one_key_in_typed_and_generic_tables_lands_in_one_partition(tmp_path: Path) -> None:
    typed = table_of([("a", 1), ("b", 2), ("c", 3)])
    generic = table_of([("a", 4), (("t", 1), 5), ("c", 6), (7, 8)])
    assert codec.table_key_encoding(generic.schema) == "generic"

    for budget in (1, 10**9):  # a spill per table, and one spill of both together
        _, streams = run_sorter(
            tmp_path / str(budget), HashPartitioner(5), [typed, generic], budget_bytes=budget
        )

        where: dict[Any, set[int]] = {}
        for p, runs in streams.items():
            for run in runs:
                for k, _ in run:
                    where.setdefault(k, set()).add(p)
        assert where == {k: {partition.partition_of(k, 5)} for k in ["a", "b", "c", ("t", 1), 7]}
        assert_streams_sorted(streams)
        assert Counter(row for runs in streams.values() for run in runs for row in run) == Counter(
            decode(typed) + decode(generic)
        )


def sum_by_key(table: pa.Table) -> pa.Table:
    """A combiner: one row per key, its values summed."""
    enc = codec.table_key_encoding(table.schema)
    keys = codec.decode_keys(table.column(codec.KEY), enc)
    values = codec.decode_values(
        table.column(codec.VALUE), codec.table_value_encoding(table.schema)
    )
    totals: dict[Any, int] = {}
    for k, v in zip(keys, values, strict=True):
        totals[k] = totals.get(k, 0) + v
    return table_of(list(totals.items()))


def test_the_combiner_sees_each_spill_sorted_and_its_output_is_what_is_written(
    tmp_path: Path,
) -> None:
    rng = random.Random(2)
    rows = [(k, 1) for k, _ in random_rows(rng, 2000)]
    tables = chunks(rows, 200)
    seen: list[list[Any]] = []

    def combine(table: pa.Table) -> pa.Table:
        seen.append(decode(table))
        return sum_by_key(table)

    sorter, streams = run_sorter(
        tmp_path, HashPartitioner(3), tables, budget_bytes=2 * tables[0].nbytes, combine=combine
    )

    assert len(seen) == sorter.writer.num_runs >= 3
    for spilled in seen:
        assert [k for k, _ in spilled] == sorted(k for k, _ in spilled)
    assert sum(len(spilled) for spilled in seen) == len(rows)
    totals: Counter[Any] = Counter()
    for runs in streams.values():
        for run in runs:
            keys = [k for k, _ in run]
            assert len(keys) == len(set(keys))  # combined within the spill
            for k, v in run:
                totals[k] += v
    assert totals == Counter(k for k, _ in rows)


@pytest.mark.parametrize("budget", [1, 10**9], ids=["spill-per-table", "one-spill"])
def test_range_partitions_concatenate_to_a_global_sort(tmp_path: Path, budget: int) -> None:
    rng = random.Random(3)
    rows = [(rng.randrange(-1000, 1000), i) for i in range(1500)]
    boundaries = tuple(codec.encode_key(b) for b in (-500, -500, 0, 1, 999))
    partitioner = RangePartitioner(boundaries)
    assert partitioner.num_partitions == 6

    _, streams = run_sorter(tmp_path, partitioner, chunks(rows, 250), budget_bytes=budget)

    for p, runs in streams.items():
        for run in runs:
            assert {bisect.bisect_right(boundaries, codec.encode_key(k)) for k, _ in run} == {p}
    assert 1 not in streams  # between two equal boundaries: empty, no stream
    assert_streams_sorted(streams)
    merged = [
        sorted((row for run in streams[p] for row in run), key=lambda r: r[0])
        for p in sorted(streams)
    ]
    flat = [row for part in merged for row in part]
    assert [k for k, _ in flat] == sorted(k for k, _ in rows)
    assert Counter(flat) == Counter(rows)


def test_a_function_partitioner_decides_every_rows_partition(tmp_path: Path) -> None:
    rng = random.Random(4)
    rows = random_rows(rng, 500)

    def by_length(table: pa.Table) -> np.ndarray:
        return pc.utf8_length(table.column(codec.KEY)).to_numpy() % 4

    _, streams = run_sorter(
        tmp_path, FunctionPartitioner(4, by_length), chunks(rows, 64), budget_bytes=1
    )

    for p, runs in streams.items():
        for run in runs:
            assert {len(k) % 4 for k, _ in run} == {p}
    assert_streams_sorted(streams)
    assert Counter(row for runs in streams.values() for run in runs for row in run) == Counter(rows)


@pytest.mark.parametrize("bad", [3, -1])
def test_an_out_of_range_partition_id_is_refused(tmp_path: Path, bad: int) -> None:
    def assign(table: pa.Table) -> np.ndarray:
        ids = np.zeros(table.num_rows, dtype=np.int32)
        ids[-1] = bad
        return ids

    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
    sorter = MapSorter(writer, FunctionPartitioner(3, assign), budget_bytes=1)
    with pytest.raises(
        ValueError, match=rf"partition {bad} is out of range: there are 3 partitions \(0\.\.2\)"
    ):
        sorter.add(table_of([("a", 1), ("b", 2)]))
        sorter.finish()  # (a table is split when its spill is written)
    writer.abort()


def test_nothing_buffered_writes_no_run(tmp_path: Path) -> None:
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"))
    sorter = MapSorter(writer, HashPartitioner(4), budget_bytes=1)
    sorter.add(table_of([]))
    sorter.finish()
    assert writer.num_runs == 0
    assert sorter.rows_in == 0
    writer.abort()


def test_finish_writes_what_is_still_buffered(tmp_path: Path) -> None:
    rows = [("x", 1), ("y", 2), ("x", 3)]
    sorter, streams = run_sorter(tmp_path, HashPartitioner(1), [table_of(rows)], budget_bytes=10**9)
    assert sorter.writer.num_runs == 1
    assert streams == {0: [[("x", 1), ("x", 3), ("y", 2)]]}  # sorted by key, stable


# ------------------------------------------------------------- unsorted (hash) shuffle


def test_an_unsorted_split_buckets_each_partition_by_hash_and_loses_no_row(
    store: FsspecStore, tmp_path: Path
) -> None:
    """Partitions as in a sorted shuffle; buckets from the hash bits below them; runs kept."""
    rng = random.Random(11)
    rows = [(f"k{rng.randrange(3000)}", i) for i in range(20_000)]
    tables = [table_of(rows[i : i + 2500]) for i in range(0, len(rows), 2500)]
    partitioner = HashPartitioner(5, sort_keys=False, unsorted_buckets=4)
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), batch_rows=0)
    sorter = MapSorter(writer, partitioner, budget_bytes=60_000)
    for t in tables:
        sorter.add(t)
    sorter.finish()
    index = writer.finish(store, "m.arrow")
    assert writer.num_runs >= 3

    out: list[Row] = []
    bucket_of: dict[str, tuple[int, int]] = {}
    for p, refs in index.items():
        for ref in refs:
            (stream,) = read_segment(store, "m.arrow", [ref])
            got = [row for batch in stream for row in decode(batch)]
            assert len(got) == ref.rows
            for key, _ in got:
                # The oracle: the pure-Python hash, one key at a time.
                assert partition.partition_of(key, 5) == p
                assert partition.partition_of(key, 20) == p * 4 + ref.bucket
                assert bucket_of.setdefault(key, (p, ref.bucket)) == (p, ref.bucket)
            out.extend(got)
    assert Counter(out) == Counter(rows)
    # Unsorted: rows keep their arrival order within a stream (a stable split).
    assert any(
        [k for k, _ in decode(b)] != sorted(k for k, _ in decode(b))
        for refs in index.values()
        for ref in refs
        for b in read_segment(store, "m.arrow", [ref])[0]
    )


@pytest.mark.parametrize(
    ("schemas", "concat_batches"), [(1, "pyarrow"), (1, "missing"), (2, "pyarrow")]
)
def test_an_unsorted_runs_pieces_are_joined_and_lose_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schemas: int, concat_batches: str
) -> None:
    """A run's pieces of one stream are joined into one batch: with pyarrow's
    ``concat_batches``, without it (before 19), and, for pieces of typed and
    generic keys (two schemas), as tables."""
    if concat_batches == "missing":
        monkeypatch.delattr(pa, "concat_batches", raising=False)
    rng = random.Random(5)
    rows = [(f"k{rng.randrange(500)}", i) for i in range(3000)]
    tables = chunks(rows, 700)
    if schemas == 2:
        generic = [(("t", rng.randrange(50)), i) for i in range(3000, 4000)] + rows[:200]
        tables.append(table_of(generic))
        assert codec.table_key_encoding(tables[-1].schema) == "generic"
        rows += generic
    writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), batch_rows=0)
    sorter = MapSorter(writer, HashPartitioner(3, sort_keys=False), budget_bytes=10**9)
    for t in tables:
        sorter.add(t)
    sorter.finish()
    store = FsspecStore(str(tmp_path / "shuffle"))
    index = writer.finish(store, "m.arrow")
    assert writer.num_runs == 1

    got: list[Row] = []
    for p, refs in index.items():
        for ref in refs:
            (stream,) = read_segment(store, "m.arrow", [ref])
            batches = list(stream)
            assert len(batches) == 1  # one stream, one batch: the pieces were joined
            decoded = decode(batches[0])
            assert len(decoded) == ref.rows
            assert all(partition.partition_of(k, 3) == p for k, _ in decoded)
            got.extend(decoded)
    assert Counter(got) == Counter(rows)
