"""The floor of a record reducer: how fast can a reduce stage read if it calls Python once per key?

    python -m bench.record_floor [--rows 2000000] [--repeat 5]

Issue 25 asks the sorted shuffle's 32 GiB reduce stage, with the record
reducer of ``bench.beyond_memory`` (``SortedRecordShuffleBench.reducer``,
called once per key), to read at 0.5x the disk's cold sequential speed. This
measures what no engine can go below: the bench's own reducer called once per
row, on rows already in Python lists (nothing read, decoded, merged or
grouped), and, separately, the cheapest conversion of the rows from Arrow to
the Python objects the reducer is given (``to_pylist`` of the keys and the
payloads). The rows are those of the bench (:func:`generate_chunk`: int64 keys,
all distinct, 90-byte payloads), so there is one call per row.

From ``bench/results/beyond_memory.json`` (the last run of the issue's table)
it takes the large sorted run's rows and shuffle bytes and the disk's cold
read speed, and prints, as one JSON line (also written to ``--out``,
``bench/results/record_floor.json``):

- ``budget_ns_per_row``: CPU time per row the target allows on this machine's
  CPUs (every CPU busy in the reduce stage, nothing else running);
- ``floor_ns_per_row``: the reducer calls alone, and with the conversion;
- ``measured_ns_per_row``: what the large run's reduce stage used;
- ``best_read_to_disk_ratio``: the ratio the floor would reach (the issue's
  target is 0.5).

Medians of ``--repeat`` runs of process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from mrk8s.bench.jobs import shuffle_job

RESULTS = Path(__file__).parent / "results"


def _reducer_job() -> shuffle_job.SortedRecordShuffleBench:
    options = argparse.Namespace(
        num_reducers=256, key_type="int64", payload_bytes=90, tamper=False, write_output=False
    )
    return shuffle_job.SortedRecordShuffleBench(options)


def _rows(n: int) -> pa.Table:
    tables, done, chunk = [], 0, 0
    while done < n:
        rows = min(1 << 20, n - done)
        tables.append(
            shuffle_job.generate_chunk(
                seed=0, task=0, chunk=chunk, rows=rows, key_type="int64", payload_bytes=90
            )
        )
        done, chunk = done + rows, chunk + 1
    return pa.concat_tables(tables)


def call_reducer(keys: list[Any], payloads: list[bytes]) -> float:
    """CPU seconds to call the bench's reducer once per key, as the engine must at least."""
    job = _reducer_job()
    reducer = job.reducer
    started = time.process_time()
    for _ in job.reducer_init():
        pass
    for key, payload in zip(keys, payloads, strict=True):
        for _ in reducer(key, (payload,)):
            pass
    for _ in job.reducer_final():
        pass
    seconds = time.process_time() - started
    counters = job.take_counters().get(shuffle_job.COUNTER_GROUP, {})
    rows = sum(v for name, v in counters.items() if name.endswith(" rows"))
    if rows != len(keys):  # the reducer really saw every row
        raise AssertionError(f"the reducer counted {rows} rows of {len(keys)}")
    return seconds


def convert(table: pa.Table) -> float:
    """CPU seconds to turn the rows into the Python objects a record reducer is given."""
    started = time.process_time()
    table.column("key").to_pylist()
    table.column("payload").to_pylist()
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--table", type=Path, default=RESULTS / "beyond_memory.json")
    p.add_argument("--out", type=Path, default=RESULTS / "record_floor.json")
    a = p.parse_args(argv)
    if not a.table.exists():
        p.error(f"{a.table} does not exist: run python -m bench.beyond_memory first")
    last = json.loads(a.table.read_text())
    if not last.get("runs", {}).get("large-sorted") or not last.get("disk"):
        p.error(f"{a.table} has no large sorted run or no disk reference: run it again whole")
    table = _rows(a.rows)
    keys = table.column("key").to_pylist()
    payloads = table.column("payload").to_pylist()
    calls = [call_reducer(keys, payloads) / a.rows * 1e9 for _ in range(a.repeat)]
    conversions = [convert(table) / a.rows * 1e9 for _ in range(a.repeat)]
    result = {
        "bench": "record_floor",
        "rows": a.rows,
        "repeat": a.repeat,
        "python": sys.version.split()[0],
        "from": a.table.name,
        **judge(
            last,
            statistics.median(calls),
            statistics.median(conversions),
            cpus=os.cpu_count() or 1,
        ),
    }
    print(json.dumps(result))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def judge(last: dict[str, Any], call_ns: float, convert_ns: float, *, cpus: int) -> dict[str, Any]:
    """The target's budget per row against the floor, from a beyond_memory result."""
    large = last["runs"]["large-sorted"][0]
    disk_mbs = last["disk"]["cold_read_mb_per_s"]
    floor_ns = call_ns + convert_ns
    # The target: the reduce stage reads the run's shuffle bytes at 0.5x the disk.
    target_seconds = large["shuffle_bytes"] / (0.5 * disk_mbs * 1e6)
    budget_ns = cpus * target_seconds / large["rows"] * 1e9
    bytes_per_row = large["shuffle_bytes"] / large["rows"]
    best_mbs = cpus * bytes_per_row / floor_ns * 1e3  # bytes per ns = GB/s; * 1e3: MB/s
    return {
        "cpus": cpus,
        "large_rows": large["rows"],
        "large_shuffle_bytes": large["shuffle_bytes"],
        "disk_cold_read_mb_per_s": disk_mbs,
        "target_reduce_seconds": round(target_seconds, 1),
        "budget_ns_per_row": round(budget_ns, 1),
        "reducer_calls_ns_per_row": round(call_ns, 1),
        "floor_ns_per_row": round(floor_ns, 1),
        "measured_ns_per_row": round(large["reduce_cpu_seconds"] / large["rows"] * 1e9, 1),
        "best_reduce_read_mb_per_s": round(best_mbs, 1),
        "best_read_to_disk_ratio": round(best_mbs / disk_mbs, 3),
        "target_read_to_disk_ratio": 0.5,
    }


if __name__ == "__main__":
    raise SystemExit(main())
