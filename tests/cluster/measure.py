"""How long the test cluster takes to start and how much memory it holds.

    python -m tests.cluster.measure [--runs 3] [--nodes 3]

starts the cluster in a temporary directory `runs` times (warm: the binary
is built) and prints, per run, the seconds until it runs pods and the memory
of the four control-plane processes plus the node agent, summed: RSS (pages
resident, shared ones counted in each process) and PSS (shared pages split
between their processes: the fairer sum). One JSON object per line.
Memory is taken after a short settle, with no pods running.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Memory:
    rss: int
    pss: int


def memory(pids: Iterable[int]) -> Memory:
    """RSS and PSS of these processes, summed (children not included)."""
    rss = pss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss
        pss += info.pss
    return Memory(rss, pss)


def main() -> None:
    from tests.cluster.controlplane import Cluster

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.measure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="mrk8s-cluster-") as state:
            cluster = Cluster(Path(state), nodes=args.nodes)
            began = time.monotonic()
            cluster.start()
            seconds = time.monotonic() - began
            try:
                time.sleep(args.settle)
                used = memory(cluster.pids().values())
                each = {c: memory([p]).pss // 2**20 for c, p in cluster.pids().items()}
            finally:
                cluster.stop()
            print(
                json.dumps(
                    {
                        "run": run,
                        "nodes": args.nodes,
                        "start_s": round(seconds, 1),
                        "rss_mib": used.rss // 2**20,
                        "pss_mib": used.pss // 2**20,
                        "pss_mib_by_process": each,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
