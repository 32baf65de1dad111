"""Peak memory of mrk8s workers against --memory-per-worker, on a real word count.

    python -m bench.wordcount_memory [--sizes 50MiB,200MiB] [--budgets 64MiB,256MiB,1GiB]

Generates Zipf corpora (bench/corpus.py) once, then for each size and budget runs
``mrk8s run`` (local backend, 2 workers) on it twice: ``examples/wordcount.py``
(with its combiner) and ``bench/jobs/wordcount_no_combiner.py`` with ONE
reducer, whose partition (every word occurrence) is many times the budget.
Peak RSS per worker comes from each task's commit record (getrusage), and the
fixed overhead of a worker (interpreter, pyarrow, numpy) from a run on the
tiny bundled sample. Prints one JSON line per run and writes them to
bench/results/wordcount_memory.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import corpus
from mrk8s.engine.settings import parse_size

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def run_job(script: str, source: str, budget: str, reducers: int, workdir: str) -> dict:
    out = os.path.join(workdir, "out")
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "run", script, source, "-o", out, "--overwrite",
        "-q", "--workers", "2", "--reducers", str(reducers), "--memory-per-worker", budget,
        "--shuffle-dir", os.path.join(workdir, "shuffle"),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.perf_counter() - started
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    stages = summary["stages"]
    return {
        "job": os.path.basename(script),
        "budget_bytes": parse_size(budget),
        "reducers": reducers,
        "wall_seconds": round(wall, 2),
        "map_peak_rss": stages["step0-map"]["peak_rss_max"],
        "reduce_peak_rss": stages["step0-reduce"]["peak_rss_max"],
        "map_spills": stages["step0-map"]["spills"],
        "shuffle_bytes": summary["shuffle_bytes"],
        "records_shuffled": stages["step0-map"]["records_out"],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="50MiB,200MiB")
    p.add_argument("--budgets", default="64MiB,256MiB,1GiB")
    args = p.parse_args(argv)
    corpora = []
    for size_text in args.sizes.split(","):
        path = os.path.join(tempfile.gettempdir(), f"mrk8s-corpus-{size_text}.txt")
        size = parse_size(size_text)
        if not os.path.exists(path) or os.path.getsize(path) < size * 0.99:
            corpus.generate(path, size)
        corpora.append(path)
    results = []
    with tempfile.TemporaryDirectory(prefix="mrk8s-bench-") as work:
        sample = os.path.join(REPO, "examples", "data", "sample.txt")
        base = run_job(os.path.join(REPO, "examples", "wordcount.py"), sample, "64MiB", 2, work)
        overhead = max(base["map_peak_rss"], base["reduce_peak_rss"])
        print(json.dumps({"fixed_overhead_rss": overhead}), flush=True)
        for source, budget, (script, reducers) in itertools.product(
            corpora,
            args.budgets.split(","),
            (
                (os.path.join(REPO, "examples", "wordcount.py"), 2),
                (os.path.join(HERE, "jobs", "wordcount_no_combiner.py"), 1),
            ),
        ):
            row = run_job(script, source, budget, reducers, work)
            row["input_bytes"] = os.path.getsize(source)
            row["fixed_overhead_rss"] = overhead
            worst = max(row["map_peak_rss"], row["reduce_peak_rss"])
            row["peak_minus_overhead_over_budget"] = round(
                (worst - overhead) / row["budget_bytes"], 3
            )
            print(json.dumps(row), flush=True)
            results.append(row)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "wordcount_memory.jsonl"), "w") as f:
        for row in results:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
