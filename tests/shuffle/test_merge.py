"""Tests for shuffle.merge: the reduce side's k-way merge of sorted runs.

Both ``merge_sorted_runs`` (streaming) and ``concat_sorted`` (in memory) are
checked against ``sorted()`` over the same rows, in run order: Python's sort
is stable, so comparing whole ``(key, value)`` lists with unique values checks
the key order and that equal keys keep run order. Keys of one simple type are
ordered by Python itself; runs that mix key forms (typed and generic columns)
are ordered by their generic encodings, the order the shuffle defines across
types.

The memory test writes ~100 MB of map outputs in one subprocess and merges
them in another, reporting the reader's Arrow peak allocation.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shuffle import codec, merge
from shuffle.mapfile import MapOutputWriter, read_segment
from shuffle.store import FsspecStore

REPO = Path(__file__).resolve().parents[2]

Row = tuple[Any, Any]
Merge = Callable[[list[Iterator[pa.RecordBatch]]], list[pa.Table]]


def _merge_sorted_runs(runs: list[Iterator[pa.RecordBatch]]) -> list[pa.Table]:
    return list(merge.merge_sorted_runs(runs))


def _concat_sorted(runs: list[Iterator[pa.RecordBatch]]) -> list[pa.Table]:
    table = merge.concat_sorted(runs)
    return [] if table is None else [table]


@pytest.fixture(params=[_merge_sorted_runs, _concat_sorted], ids=["merge", "concat"])
def merge_runs(request: pytest.FixtureRequest) -> Merge:
    fn: Merge = request.param
    return fn


def as_run(rows: list[Row], rng: random.Random, *, max_batch: int = 7) -> Iterator[pa.RecordBatch]:
    """One sorted run, as an IPC stream would hand it over: one schema, batches of 1..max_batch."""
    table = codec.records_to_table([k for k, _ in rows], [v for _, v in rows])
    start = 0
    while start < table.num_rows:
        n = rng.randint(1, max_batch)
        yield from table.slice(start, n).to_batches()
        start += n


def rows_of(tables: list[pa.Table]) -> list[Row]:
    out: list[Row] = []
    for table in tables:
        enc = codec.table_key_encoding(table.schema)
        keys = codec.decode_keys(table.column(codec.KEY).combine_chunks(), enc)
        values = codec.decode_values(
            table.column(codec.VALUE).combine_chunks(), codec.table_value_encoding(table.schema)
        )
        out.extend(zip(keys, values, strict=True))
    return out


def by_generic_order(row: Row) -> bytes:
    return codec.encode_key(row[0])


def random_keys(rng: random.Random, kind: str, n: int, vocab: int) -> list[Any]:
    """Keys drawn from a small vocabulary, so that runs share keys."""
    if kind == "str":
        pool: list[Any] = [f"w{rng.randrange(10**6)}" for _ in range(vocab)] + ["", "é", "z" * 20]
    elif kind == "int":
        pool = [rng.randrange(-(10**12), 10**12) for _ in range(vocab)] + [-(2**63), 2**63 - 1, 0]
    else:
        pool = [rng.randbytes(rng.randrange(0, 12)) for _ in range(vocab)] + [b"", b"\x00", b"\xff"]
    return [rng.choice(pool) for _ in range(n)]


@pytest.mark.parametrize("kind", ["str", "int", "bytes"])
@pytest.mark.parametrize("seed", range(3))
def test_merge_equals_a_stable_sorted_over_random_runs(
    merge_runs: Merge, kind: str, seed: int
) -> None:
    rng = random.Random(seed)
    runs: list[list[Row]] = []
    for r in range(25):
        n = rng.choice([0, 0, 1, 2, 5, 13, 40, 80])  # some runs empty, some one row
        keys = sorted(random_keys(rng, kind, n, vocab=30))
        runs.append([(k, f"run{r}-row{i}") for i, k in enumerate(keys)])
    oracle = sorted((row for run in runs for row in run), key=lambda row: row[0])

    out = merge_runs([as_run(run, rng) for run in runs])

    assert rows_of(out) == oracle


def test_equal_keys_spread_over_several_batches_keep_run_order(merge_runs: Merge) -> None:
    # Run 0's "k"s continue into its second batch, after run 1's batch already
    # ended at a bigger key: run 1's "k"s must still come after all of run 0's.
    run0 = [codec.records_to_table(["k", "k"], [0, 1]), codec.records_to_table(["k", "m"], [2, 3])]
    run1 = [codec.records_to_table(["k", "k", "k", "z"], [10, 11, 12, 13])]
    run2 = [codec.records_to_table(["a", "k"], [20, 21]), codec.records_to_table(["k"], [22])]
    runs = [iter(b for t in run for b in t.to_batches()) for run in (run0, run1, run2)]

    out = merge_runs(runs)

    assert [v for _, v in rows_of(out)] == [20, 0, 1, 2, 10, 11, 12, 21, 22, 3, 13]


def test_heavy_duplicates_across_many_runs_keep_run_order(merge_runs: Merge) -> None:
    rng = random.Random(11)
    runs: list[list[Row]] = []
    for r in range(40):
        keys = sorted(rng.choice("abc") for _ in range(rng.randrange(0, 30)))
        runs.append([(k, f"{r}:{i}") for i, k in enumerate(keys)])
    oracle = sorted((row for run in runs for row in run), key=lambda row: row[0])

    out = merge_runs([as_run(run, rng, max_batch=3) for run in runs])

    assert rows_of(out) == oracle


def test_typed_and_generic_key_columns_merge_in_generic_order(merge_runs: Merge) -> None:
    rng = random.Random(12)
    words = ["apple", "b", "banana", "cherry", "kiwi", "z"]
    typed_strs = sorted(rng.choice(words) for _ in range(30))
    # A tuple among the keys makes records_to_table choose the generic column.
    generic = sorted(
        [*(rng.choice(words) for _ in range(30)), ("b", 1), ("a",)], key=codec.encode_key
    )
    typed_ints = sorted(rng.randrange(-5, 5) for _ in range(10))
    runs: list[list[Row]] = [
        [(k, i) for i, k in enumerate(typed_strs)],  # typed str keys, typed int values
        [(k, f"g{i}") for i, k in enumerate(generic)],  # generic keys, typed str values
        [(k, (i, "t")) for i, k in enumerate(typed_ints)],  # typed int keys, msgpack values
        [(k, None) for k in typed_strs[:5]],  # typed str keys, null values
    ]
    tables = [codec.records_to_table([k for k, _ in run], [v for _, v in run]) for run in runs]
    assert [codec.table_key_encoding(t.schema) for t in tables] == [
        "typed",
        "generic",
        "typed",
        "typed",
    ]
    assert tables[0].schema.field(codec.KEY).type == pa.string()
    assert tables[1].schema.field(codec.KEY).type == pa.binary()
    oracle = sorted((row for run in runs for row in run), key=by_generic_order)

    out = merge_runs([as_run(run, rng) for run in runs])

    assert rows_of(out) == oracle


def test_concat_of_one_schema_keeps_the_pieces_buffers() -> None:
    table = codec.records_to_table(["a", "b", "c", "d"], [1, 2, 3, 4])
    pieces = [table.slice(0, 1), table.slice(1, 3).to_batches()[0]]

    out = merge.concat(pieces)

    assert rows_of([out]) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert out.schema.equals(table.schema, check_metadata=True)
    # Chunks point into the pieces' memory: nothing was converted or copied.
    original = table.column(codec.VALUE).chunk(0).buffers()[1].address
    assert [c.buffers()[1].address for c in out.column(codec.VALUE).chunks] == [
        original,
        original,
    ]


def test_concat_tells_schemas_apart_by_their_metadata_alone() -> None:
    # Same Arrow types (string keys, binary values), but the values of one are
    # raw bytes and of the other msgpack: only the schema metadata says which.
    raw = codec.records_to_table(["a", "b"], [b"x", b"y"])
    packed = codec.records_to_table(["c"], [(1, 2)])
    assert raw.schema.equals(packed.schema)  # types alone match...
    assert not raw.schema.equals(packed.schema, check_metadata=True)

    out = merge.concat([raw, packed])

    assert rows_of([out]) == [("a", b"x"), ("b", b"y"), ("c", (1, 2))]


def test_no_rows_gives_no_tables(merge_runs: Merge) -> None:
    empty = codec.records_to_table([], [])
    assert merge_runs([]) == []
    assert merge_runs([iter([]), iter(empty.to_batches()), iter([])]) == []


def test_empty_batches_inside_runs_are_skipped(merge_runs: Merge) -> None:
    def run(keys: list[str], tag: str) -> Iterator[pa.RecordBatch]:
        table = codec.records_to_table(keys, [f"{tag}{i}" for i in range(len(keys))])
        empty = table.slice(0, 0).to_batches() or [
            pa.RecordBatch.from_pylist([], schema=table.schema)
        ]
        for i in range(table.num_rows):
            yield from empty
            yield from table.slice(i, 1).to_batches()
        yield from empty

    out = merge_runs([run(["a", "c"], "x"), run(["b", "c", "d"], "y")])

    assert rows_of(out) == [("a", "x0"), ("b", "y0"), ("c", "x1"), ("c", "y1"), ("d", "y2")]


def test_a_single_run_passes_through_unchanged() -> None:
    rows: list[Row] = [(k, i) for i, k in enumerate(sorted("merge one run in order"))]
    out = list(merge.merge_sorted_runs([as_run(rows, random.Random(0))]))
    assert rows_of(out) == rows


def test_merge_pulls_about_one_batch_per_run_at_a_time() -> None:
    pulled = [0] * 6

    def counting(r: int) -> Iterator[pa.RecordBatch]:
        for b in range(50):
            pulled[r] += 1
            keys = [f"{b:03d}-{i}-{r}" for i in range(4)]
            yield from codec.records_to_table(keys, [r] * 4).to_batches()

    tables = merge.merge_sorted_runs([counting(r) for r in range(6)])
    rows = next(tables).num_rows
    assert max(pulled) <= 2  # the batch being merged and, for some runs, the next
    for table in tables:
        rows += table.num_rows
        # Runs advance together: none is ever more than two batches ahead of another.
        assert max(pulled) - min(pulled) <= 2
    assert pulled == [50] * 6
    assert rows == 6 * 50 * 4


def test_merge_of_map_outputs_read_back_from_files(tmp_path: Path) -> None:
    store = FsspecStore(str(tmp_path / "shuffle"))
    rng = random.Random(13)
    all_rows: list[Row] = []
    segments = []
    for m in range(4):
        writer = MapOutputWriter(spill_dir=str(tmp_path / "spill"), batch_rows=5)
        for spill in range(3):
            keys = sorted(rng.randrange(100) for _ in range(rng.randrange(0, 60)))
            rows = [(k, f"m{m}s{spill}r{i}") for i, k in enumerate(keys)]
            all_rows += rows
            writer.add_run({0: codec.records_to_table(keys, [v for _, v in rows])})
        segments.append((f"map-{m}.arrow", writer.finish(store, f"map-{m}.arrow").get(0, [])))
    oracle = sorted(all_rows, key=lambda row: row[0])

    def runs(limit: int) -> list[Iterator[pa.RecordBatch]]:
        return [
            run
            for path, refs in segments
            for run in read_segment(store, path, refs, whole_read_limit=limit)
        ]

    for limit in (1 << 20, 0):
        assert rows_of(_merge_sorted_runs(runs(limit))) == oracle
        assert rows_of(_concat_sorted(runs(limit))) == oracle


# ------------------------------------------------------------------- memory

#: Writes several map outputs of one partition: row i goes to file i % files,
#: each file in `runs` spills; prints the data size and the indexes as JSON.
_WRITER = r"""
import json, os, sys
import numpy as np, pyarrow as pa
from shuffle import mapfile
from shuffle.store import FsspecStore

root, files, runs, rows, value_bytes, batch_rows = sys.argv[1], *map(int, sys.argv[2:])
store = FsspecStore(root)
rng = np.random.default_rng(0)
data_bytes, indexes = 0, {}
for m in range(files):
    writer = mapfile.MapOutputWriter(spill_dir=os.path.join(root, "spill"), batch_rows=batch_rows)
    mine = np.arange(m, rows, files)
    for r in range(runs):
        ids = mine[len(mine) * r // runs : len(mine) * (r + 1) // runs]
        blob = pa.py_buffer(rng.bytes(value_bytes * len(ids)))
        values = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(value_bytes), len(ids), [None, blob]
        ).cast(pa.binary())
        table = pa.table({"key": pa.array([f"{i:012d}" for i in ids.tolist()]), "value": values})
        data_bytes += table.nbytes
        writer.add_run({0: table})
    path = f"map-{m:05d}.arrow"
    indexes[path] = mapfile.index_to_json(writer.finish(store, path))
print(json.dumps({"data_bytes": data_bytes, "indexes": indexes}))
"""

#: Streams every segment, merges, checks the keys come out as 0, 1, 2, ...
#: and reports the Arrow memory pool's peak.
_READER = r"""
import json, sys
import numpy as np, pyarrow as pa, pyarrow.compute as pc
from shuffle import mapfile, merge
from shuffle.store import FsspecStore

store = FsspecStore(sys.argv[1])
written = json.load(sys.stdin)
runs = []
for path, index in written["indexes"].items():
    refs = mapfile.index_from_json(index)[0]
    runs += mapfile.read_segment(store, path, refs, whole_read_limit=0)
rows = 0
for table in merge.merge_sorted_runs(runs):
    keys = pc.cast(table.column("key"), pa.int64()).to_numpy()
    if not np.array_equal(keys, np.arange(rows, rows + len(keys))):
        sys.exit(f"merge output out of order after row {rows}")
    rows += len(keys)
    del table, keys
peak = pa.default_memory_pool().max_memory()
print(json.dumps({"rows": rows, "runs": len(runs), "arrow_peak": peak}))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_merging_100_mb_of_map_outputs_keeps_arrow_memory_to_a_few_batches(
    tmp_path: Path,
) -> None:
    files, runs, rows, value_bytes = 4, 2, 850_000, 100
    # Half the default: 8 runs x 8192 rows x ~120 B is ~8 MB of current batches,
    # and a pass copies about as much again when it sorts what it emits.
    batch_rows = 8192
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [str(tmp_path), str(files), str(runs), str(rows), str(value_bytes), str(batch_rows)]
    write = subprocess.run(
        [sys.executable, "-c", _WRITER, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=100,
    )
    assert write.returncode == 0, write.stderr
    written = write.stdout
    data_bytes = json.loads(written)["data_bytes"]
    assert data_bytes > 95 * 2**20

    read = subprocess.run(
        [sys.executable, "-c", _READER, str(tmp_path)],
        input=written,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=100,
    )
    assert read.returncode == 0, read.stderr
    report = json.loads(read.stdout)

    assert report["rows"] == rows
    assert report["runs"] == files * runs
    print(
        f"Arrow peak while merging {data_bytes / 2**20:.0f} MiB: "
        f"{report['arrow_peak'] / 2**20:.1f} MiB ({report['arrow_peak'] / data_bytes:.1%})"
    )
    assert report["arrow_peak"] < data_bytes / 4
