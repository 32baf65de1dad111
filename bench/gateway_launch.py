"""The gateway's local backend: jobs forked from its warm fork server against fresh interpreters.

    python -m bench.gateway_launch [--jobs 16] [--concurrency 4] [--repeat 3]

Runs ``--jobs`` tiny word counts (200 words each, the size of the gateway's
load test) through :class:`mrk8s.gateway.backends.local.LocalBackend`,
``--concurrency`` at a time, once with the fork server
(``mrk8s/gateway/forkserver.py``) and once with a fresh ``python -m
mrk8s.gateway.launch`` per job, alternated ``--repeat`` times so both see
the same machine. Every job's output is checked against
``collections.Counter``. Prints one JSON document (each run's seconds, the
medians, their ratio, the load average before and after) and writes it to
``bench/results/gateway_launch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _words(seed: int) -> str:
    import random

    rng = random.Random(seed)
    lines = [" ".join(f"w{rng.randrange(50)}" for _ in range(10)) for _ in range(20)]
    return "\n".join(lines) + "\n"


def _run(root: Path, n_jobs: int, concurrency: int, forkserver: bool) -> float:
    from mrk8s.gateway.backends.local import LocalBackend

    backend = LocalBackend(root / "shuffle", use_forkserver=forkserver)
    jobs: list[dict[str, Any]] = []
    for i in range(n_jobs):
        job_dir = root / f"job-{i}"
        job_dir.mkdir(parents=True)
        (job_dir / "in.txt").write_text(_words(i))
        jobs.append(
            {
                "id": f"bench-{root.name}-{i}",
                "job_dir": str(job_dir),
                "log_path": str(job_dir / "driver.log"),
                "output_dir": str(job_dir / "output"),
                "launches": 0,
                "spec": {
                    "script_path": str(REPO / "examples" / "wordcount.py"),
                    "input_paths": [str(job_dir / "in.txt")],
                    "reducers": 2,
                    "workers": 1,
                    "args": [],
                },
            }
        )
    started = time.perf_counter()
    waiting, running = list(jobs), {}
    while waiting or running:
        while waiting and len(running) < concurrency:
            job = waiting.pop(0)
            running[job["id"]] = (job, backend.start(job))
        for job_id, (job, handle) in list(running.items()):
            outcome = backend.poll(job, handle)
            if outcome is not None:
                if outcome.exit_code != 0:
                    raise SystemExit(f"{job_id} failed: {Path(job['log_path']).read_text()}")
                del running[job_id]
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if backend.forkserver is not None:
        backend.forkserver.close()
    for i, job in enumerate(jobs):
        got: Counter[str] = Counter()
        for part in sorted(Path(job["output_dir"]).glob("part-*")):
            for line in part.read_text().splitlines():
                key, value = line.split("\t")
                got[json.loads(key)] = json.loads(value)
        assert got == Counter(_words(i).split()), f"job {i}: wrong counts"
    return seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_launch", description=__doc__)
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "gateway_launch.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {"forkserver": [], "fresh_interpreter": []}
    with tempfile.TemporaryDirectory(prefix="mrk8s-bench-launch-") as tmp:
        for r in range(args.repeat):
            for name, fork in (("forkserver", True), ("fresh_interpreter", False)):
                root = Path(tmp) / f"{name}-{r}"
                runs[name].append(round(_run(root, args.jobs, args.concurrency, fork), 3))
                print(f"{name} run {r + 1}: {runs[name][-1]} s", flush=True)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    doc = {
        "command": "python -m bench.gateway_launch "
        f"--jobs {args.jobs} --concurrency {args.concurrency} --repeat {args.repeat}",
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "seconds": runs,
        "median_seconds": medians,
        "fresh_over_forkserver": round(medians["fresh_interpreter"] / medians["forkserver"], 3),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
