"""CPU seconds per kind of process in the map and reduce stages of one shuffle.

    python -m bench.stage_cpu local|ray1|ray3 [--size 1GiB] [--repeat 2]

Runs ``mrk8s bench shuffle`` (the rows of ``bench/compare_ray.py``) on the
local backend (two workers), on a one-node Ray (two CPUs, every read
local) or on the simulated three-node cluster of ``compare_ray`` (three
workers, reducers placed by locality), and samples the CPU times of every
process under this one (workers, reader actors, raylets, GCS, the driver)
when the driver reports that a stage starts and ends. Prints, for the last
run, each stage's wall time and CPU seconds by kind of process.

On a machine shared with other work wall times say little, but CPU seconds
are what a stage costs: what a run on a quiet machine of the same cores
cannot go below. ``bench/results/stage_cpu.jsonl`` gets one line per stage.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.compare_ray import MAPS, PAYLOAD, REDUCERS, SEED, _three_node_cluster

HERE = Path(__file__).resolve().parent

#: What a process is, by a piece of its command line (first match wins).
KINDS = ("TaskWorker", "NodeReader", "raylet", "gcs_server", "mrk8s.cli bench", "scheduler")


def _kind(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    return next((k for k in KINDS if k in line), "other")


def _cpu_by_process() -> dict[int, tuple[str, float, float]]:
    """``{pid: (kind, CPU seconds, of which in the kernel)}`` of this process and its children."""
    import psutil

    out: dict[int, tuple[str, float, float]] = {}
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = (_kind(p.cmdline()), t.user + t.system, t.system)
    return out


def run(mode: str, size: str, repeat: int) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "mrk8s.cli", "bench", "shuffle", "--size", size,
           "--maps", str(MAPS), "--reducers", str(REDUCERS), "--repeat", str(repeat),
           "--payload-bytes", str(PAYLOAD), "--seed", str(SEED)]  # fmt: skip
    cluster_cm = _three_node_cluster() if mode == "ray3" else contextlib.nullcontext()
    events: list[tuple[float, str, dict[int, tuple[str, float, float]]]] = []
    with cluster_cm as cluster:
        if mode == "ray3":
            cmd += ["--backend", "ray", "--ray-address", cluster.address,
                    "--placement", "locality", "--workers", "3"]  # fmt: skip
        elif mode == "ray1":
            cmd += ["--backend", "ray", "--workers", "2"]
        else:
            cmd += ["--workers", "2"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None and proc.stdout is not None

        def progress() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                events.append((time.monotonic(), line.strip(), _cpu_by_process()))

        reader = threading.Thread(target=progress)
        reader.start()
        out = proc.stdout.read()
        proc.wait()
        reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"mrk8s bench shuffle failed: {events[-5:]}")
    marks: dict[str, int] = {}
    for i, (_, line, _) in enumerate(events):
        for stage in ("map", "reduce"):
            if line.endswith(f"{stage}: {MAPS if stage == 'map' else REDUCERS} tasks"):
                marks[stage] = i
        if f"reduce: {REDUCERS}/{REDUCERS}" in line:
            marks["end"] = i
    runs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    rows = []
    for stage, (a, b) in {"map": ("map", "reduce"), "reduce": ("reduce", "end")}.items():
        (t0, _, before), (t1, _, after) = events[marks[a]], events[marks[b]]
        cpu: collections.Counter[str] = collections.Counter()
        kernel: collections.Counter[str] = collections.Counter()
        for pid, (kind, seconds, system) in after.items():
            _, seconds0, system0 = before.get(pid, (kind, 0.0, 0.0))
            cpu[kind] += seconds - seconds0
            kernel[kind] += system - system0
        rows.append({
            "mode": mode, "stage": stage, "wall_seconds": round(t1 - t0, 2),
            "cpu_seconds": round(sum(cpu.values()), 2),
            "cpu_by_kind": {k: round(v, 2) for k, v in cpu.most_common() if v >= 0.01},
            "kernel_by_kind": {k: round(kernel[k], 2) for k, v in cpu.most_common() if v >= 0.01},
            "verified": all(r["verified"] for r in runs), "load_average": os.getloadavg(),
        })  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["local", "ray1", "ray3"])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "stage_cpu.jsonl"))
    args = p.parse_args(argv)
    rows = run(args.mode, args.size, args.repeat)
    with open(args.out, "a") as f:
        for row in rows:
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
