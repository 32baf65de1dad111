"""mrk8s's shuffle against a hand-written pyarrow+numpy lower bound, same rows, same machine.

    python -m bench.compare_shuffle [--sizes 1GiB,4GiB] [--repeat 3] [--workers 2]

Contestants, run interleaved ``--repeat`` times at each size (16 maps -> 16
reducers, int64 key + 90-byte payload, rows from
``mrk8s.benchjobs.shuffle_job.generate_chunk`` so every contestant moves the
same rows, and every reducer materialises and checksums its partition):

- ``mrk8s``: ``mrk8s bench shuffle`` (the real engine, local backend, local disk);
- ``pyarrow-lower-bound``: the least a Python+Arrow two-stage shuffle can do
  here: map processes hash the key with numpy, ``take`` rows into partition
  order, write one Arrow IPC file per partition; reduce processes read their
  files back, concatenate and checksum. No sort, no commit records, no retries.

Prints one JSON line per run, then medians and the mrk8s/lower-bound ratio
per size, and writes ``bench/results/compare_shuffle.json`` and a bar chart
``compare_shuffle.png`` (needs matplotlib). Ray Data and Dask contestants
(issue 3) are not written yet: see NOTES in the issue.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAPS = REDUCERS = 16
PAYLOAD = 90
SEED = 1
MIX = np.uint64(0x9E3779B97F4A7C15)


def _lb_map(task: int, chunks: list[int], out_dir: str) -> None:
    from mrk8s.benchjobs.shuffle_job import generate_chunk

    writers: dict[int, Any] = {}
    for chunk, rows in enumerate(chunks):
        table = generate_chunk(
            seed=SEED, task=task, chunk=chunk, rows=rows, key_type="int64", payload_bytes=PAYLOAD
        )
        keys = table.column("key").to_numpy().view(np.uint64)
        pids = ((keys * MIX) >> np.uint64(60)).astype(np.uint16) % REDUCERS
        order = np.argsort(pids, kind="stable")
        ordered = table.take(pa.array(order))
        counts = np.bincount(pids, minlength=REDUCERS)
        start = 0
        for p, count in enumerate(counts.tolist()):
            if count:
                if p not in writers:
                    path = os.path.join(out_dir, f"m{task}-p{p}.arrow")
                    writers[p] = pa.ipc.new_stream(pa.OSFile(path, "wb"), table.schema)
                writers[p].write_table(ordered.slice(start, count))
            start += count
    for w in writers.values():
        w.close()


def _lb_reduce(partition: int, out_dir: str) -> tuple[int, tuple[int, int, int]]:
    from mrk8s.benchjobs.shuffle_job import checksum

    tables = []
    for task in range(MAPS):
        path = os.path.join(out_dir, f"m{task}-p{partition}.arrow")
        if os.path.exists(path):
            with pa.OSFile(path, "rb") as f:
                tables.append(pa.ipc.open_stream(f).read_all())
    table = pa.concat_tables(tables).combine_chunks() if tables else None
    if table is None:
        return 0, (0, 0, 0)
    return table.num_rows, checksum(table, PAYLOAD)


def lower_bound(size: int, workers: int) -> dict[str, Any]:
    from mrk8s.bench import task_chunks

    rows = size // (8 + PAYLOAD)
    chunks = task_chunks(rows, MAPS, 8 + PAYLOAD)
    out_dir = tempfile.mkdtemp(prefix="mrk8s-lb-")
    try:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_lb_map, [0], [[1]], [out_dir]))  # warm the pool up
            for name in os.listdir(out_dir):
                os.unlink(os.path.join(out_dir, name))
            started = time.perf_counter()
            list(pool.map(_lb_map, range(MAPS), chunks, [out_dir] * MAPS))
            mapped = time.perf_counter()
            results = list(pool.map(_lb_reduce, range(REDUCERS), [out_dir] * REDUCERS))
            done = time.perf_counter()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    got = sum(r for r, _ in results)
    return {
        "seconds": round(done - started, 3),
        "map_seconds": round(mapped - started, 3),
        "reduce_seconds": round(done - mapped, 3),
        "rows": got,
        "verified": got == rows,
    }


def mrk8s_run(size: int, workers: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "bench", "shuffle", "--size", str(size),
        "--maps", str(MAPS), "--reducers", str(REDUCERS), "--workers", str(workers),
        "--repeat", "1", "--payload-bytes", str(PAYLOAD),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: line[k] for k in ("seconds", "map_seconds", "reduce_seconds", "rows", "verified")}


CONTESTANTS = {"mrk8s": mrk8s_run, "pyarrow-lower-bound": lower_bound}


def main(argv: list[str]) -> int:
    from mrk8s.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1GiB,4GiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    results: list[dict[str, Any]] = []
    for size_text in args.sizes.split(","):
        size = parse_size(size_text)
        for run in range(1, args.repeat + 1):
            for name, fn in CONTESTANTS.items():  # interleaved: drift hits both alike
                row = {"contestant": name, "size": size_text, "run": run, **fn(size, args.workers)}
                row["gib_per_s"] = round(size / 2**30 / row["seconds"], 3)
                print(json.dumps(row), flush=True)
                results.append(row)
    summary = []
    for size_text in args.sizes.split(","):
        medians = {
            name: statistics.median(
                r["gib_per_s"]
                for r in results
                if r["contestant"] == name and r["size"] == size_text
            )
            for name in CONTESTANTS
        }
        entry = {
            "size": size_text,
            "median_gib_per_s": medians,
            "mrk8s_over_lower_bound": round(medians["mrk8s"] / medians["pyarrow-lower-bound"], 3),
        }
        print(json.dumps(entry), flush=True)
        summary.append(entry)
    out = HERE / "results" / "compare_shuffle.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    try:
        _plot(summary, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return 0


def _plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CONTESTANTS)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(summary))]
        ax.bar(xs, [s["median_gib_per_s"][name] for s in summary], width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(summary))])
    ax.set_xticklabels([s["size"] for s in summary])
    ax.set_ylabel("GiB/s (median)")
    ax.set_title("shuffle throughput, 16 -> 16, int64 key + 90 B payload")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
