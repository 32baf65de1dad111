"""mrk8s on Ray: locality-aware against random reducer placement, and against Ray Data.

    python -m bench.compare_ray [--size 1GiB] [--repeat 3] [--contestants a,b,...]

The rows are those of ``bench/compare_shuffle.py`` (16 map tasks generate
``size // 98`` rows of an int64 key and a 90-byte payload; 16 reducers
materialise and checksum their partitions; every result verified), so the
numbers sit beside that comparison's. Contestants, interleaved ``--repeat``
times in a new seeded order each run (:mod:`bench.order`), each run in a
fresh process:

- ``mrk8s-ray-3node-locality`` and ``mrk8s-ray-3node-random``: ``mrk8s
  bench shuffle --backend ray`` on a simulated three-node cluster
  (``ray.cluster_utils.Cluster`` in the run's process: a head and two worker
  nodes, one CPU and one worker actor each, every node's map outputs in its
  own directory), reducers placed by the placement function
  (``--placement locality``) or at random within the same capacities
  (``--placement random``). Reported: the shuffle's wall time and
  ``shuffle_bytes_remote``, the bytes reducers read from other nodes'
  disks (through their reader actors), with the locality achieved and the
  best possible. Starting the cluster is not timed; both warm their actors
  up with a small unmeasured job first.
- ``terasort-3node-locality`` and ``terasort-3node-random``: the same two
  placements for ``examples/terasort.py`` (range partitioner, 12 reducers)
  on input that arrives clustered by key, as time-partitioned logs or the
  output of an earlier sort do: ``size`` bytes of 100-byte TeraSort
  records, sorted, then cut into 12 Parquet files, one map task each, so
  most of a partition's bytes come from one map task and so from one node.
  That is where placement can win; in the hash shuffle above every
  partition is spread evenly over the nodes and no placement reads much
  more locally than a third. Generating the input and checking that the
  output is exactly the sorted input are not timed.
- ``ray-data-hash-3node`` and ``ray-data-random-3node``: Ray Data's hash
  shuffle by key and ``random_shuffle``, from :mod:`bench.peers`, on the same
  kind of three-node cluster (each node with one CPU and a 200 MiB object
  store, as for mrk8s), connected to with ``ray.init(address=...)``;
- ``mrk8s-local``: the local backend, two workers (``compare_shuffle``'s
  ``mrk8s`` contestant), on the same rows.

Named in ``--contestants`` only: ``mrk8s-ray``, ``ray-data-hash`` and
``ray-data-random``, the same on a single-node Ray with two CPUs.

At the end of a run the JSON is written, and from it the chart and the
table in README.md (between the ``compare_ray table`` markers, with the
commit and the load averages). ``--report`` redoes only those two from an
existing JSON, without running anything.

The machine has 2 cores; the simulated cluster's three one-CPU nodes share
them (and the machine is shared with other work: each run records the load
average when it started). Writes ``bench/results/compare_ray.json`` (with
``uptime``'s load before and after) and a chart ``compare_ray.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import peers
from bench.compare_shuffle import MAPS, PAYLOAD, REDUCERS, SEED, _settle
from bench.order import run_order

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: What each mrk8s contestant reports from its ``mrk8s bench shuffle`` line.
KEYS = (
    "seconds", "map_seconds", "reduce_seconds", "wall_seconds", "rows", "verified",
    "peak_rss_max", "shuffle_bytes", "shuffle_bytes_remote", "locality", "locality_best",
)  # fmt: skip


def _bench_shuffle(size: int, workers: int, *extra: str) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "bench", "shuffle", "--size", str(size),
        "--maps", str(MAPS), "--reducers", str(REDUCERS), "--repeat", "1",
        "--payload-bytes", str(PAYLOAD), "--seed", str(SEED), "--quiet", *extra,
    ]  # fmt: skip
    if "--workers" not in extra:
        cmd += ["--workers", str(workers)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mrk8s bench shuffle failed:\n{proc.stderr[-3000:]}")
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: line[k] for k in KEYS}


def mrk8s_local(size: int, workers: int) -> dict[str, Any]:
    return _bench_shuffle(size, workers)


def mrk8s_ray(size: int, workers: int) -> dict[str, Any]:
    return _bench_shuffle(size, workers, "--backend", "ray")


@contextlib.contextmanager
def _three_node_cluster() -> Iterator[Any]:
    """A simulated Ray cluster of three one-CPU nodes on this machine, shut down on exit."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False,
                        "object_store_memory": 200 << 20,
                        # Ray Data's worker processes stay warm between runs (bench.peers).
                        "_system_config": peers.ray_system_config(3)},
    )  # fmt: skip
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=200 << 20)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _three_nodes(size: int, placement: str) -> dict[str, Any]:
    with _three_node_cluster() as cluster:
        # Every node's actors are one CPU each: the pool is three workers, one per node.
        return _bench_shuffle(
            size, 3, "--backend", "ray", "--ray-address", cluster.address,
            "--placement", placement, "--workers", "3",
        )  # fmt: skip


#: Reducers (and input files, one map task each) of the clustered TeraSort runs.
TERASORT_PARTS = 12


def _clustered_terasort_input(size: int, directory: Path) -> None:
    """``size`` bytes of TeraSort records, sorted by key and cut into TERASORT_PARTS files."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = size // 100
    rng = np.random.default_rng(SEED)

    def column(width: int, low: int, high: int) -> pa.Array:
        data = rng.integers(low, high, size=rows * width, dtype=np.uint8)
        offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
        return pa.Array.from_buffers(
            pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )

    table = pa.table({"key": column(10, 0, 256), "value": column(90, 32, 127)})
    table = table.sort_by("key")
    directory.mkdir(parents=True)
    per_file = -(-rows // TERASORT_PARTS)
    for i in range(TERASORT_PARTS):
        part = table.slice(i * per_file, per_file)
        # One row group: one split, so one map task per file.
        pq.write_table(part, directory / f"part-{i:02d}.parquet", row_group_size=max(1, rows))


def _terasort_three_nodes(size: int, placement: str) -> dict[str, Any]:
    import tempfile

    import ray

    from mrk8s.engine.driver import Driver
    from mrk8s.engine.executors import LOCAL_PRELOAD
    from mrk8s.engine.settings import RunSettings
    from scheduler.backends.ray import RayExecutor

    sys.path.insert(0, str(REPO / "examples"))
    import terasort_data

    with tempfile.TemporaryDirectory(prefix="compare-ray-") as tmp:
        work = Path(tmp)
        _clustered_terasort_input(size, work / "in")
        _clustered_terasort_input(1 << 20, work / "warm-in")
        with _three_node_cluster() as cluster:
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                with RayExecutor(local_dir=str(work / "nodes"), preload=LOCAL_PRELOAD) as ex:

                    def job(src: str, out: str) -> dict[str, Any]:
                        settings = RunSettings(
                            script=str(REPO / "examples" / "terasort.py"), inputs=(src,),
                            output=out, output_format="parquet", overwrite=True, backend="ray",
                            reducers=TERASORT_PARTS, placement=placement,
                            shuffle_dir=str(work / "shuffle"), max_split_bytes=4 << 30,
                        )  # fmt: skip
                        return Driver(settings).run(ex).summary

                    job(str(work / "warm-in"), str(work / "warm-out"))  # actors warm, not timed
                    summary = job(str(work / "in"), str(work / "out"))
            finally:
                ray.shutdown()
        verdict = terasort_data.validate(str(work / "in"), str(work / "out"))
    stages, timings = summary["stages"], summary["timings"]
    return {
        "seconds": round(timings["s0-map"] + timings["s0-reduce"], 3),
        "map_seconds": timings["s0-map"],
        "reduce_seconds": timings["s0-reduce"],
        "wall_seconds": summary["seconds"],
        "rows": stages["step0-reduce"]["records_out"],
        "verified": bool(verdict["ok"]) and verdict["parts"] == TERASORT_PARTS,
        "peak_rss_max": max(s["peak_rss_max"] for s in stages.values()),
        **{
            k: summary[k]
            for k in ("shuffle_bytes", "shuffle_bytes_remote", "locality", "locality_best")
        },
    }


def terasort_3node_locality(size: int, workers: int) -> dict[str, Any]:
    return _terasort_three_nodes(size, "locality")


def terasort_3node_random(size: int, workers: int) -> dict[str, Any]:
    return _terasort_three_nodes(size, "random")


def _ray_data_three_nodes(size: int, by_key: bool) -> dict[str, Any]:
    with _three_node_cluster() as cluster:
        return peers._ray_run(size, 3, by_key, address=cluster.address)


def ray_data_hash_3node(size: int, workers: int) -> dict[str, Any]:
    return _ray_data_three_nodes(size, by_key=True)


def ray_data_random_3node(size: int, workers: int) -> dict[str, Any]:
    return _ray_data_three_nodes(size, by_key=False)


def mrk8s_ray_3node_locality(size: int, workers: int) -> dict[str, Any]:
    return _three_nodes(size, "locality")


def mrk8s_ray_3node_random(size: int, workers: int) -> dict[str, Any]:
    return _three_nodes(size, "random")


CONTESTANTS = {
    "mrk8s-ray-3node-locality": mrk8s_ray_3node_locality,
    "mrk8s-ray-3node-random": mrk8s_ray_3node_random,
    "ray-data-hash-3node": ray_data_hash_3node,
    "ray-data-random-3node": ray_data_random_3node,
    "mrk8s-local": mrk8s_local,
    "terasort-3node-locality": terasort_3node_locality,
    "terasort-3node-random": terasort_3node_random,
    # On a single-node Ray with two CPUs; not run unless named in --contestants.
    "mrk8s-ray": mrk8s_ray,
    "ray-data-hash": peers.ray_data_hash,
    "ray-data-random": peers.ray_data_random,
}

#: What a run with no --contestants runs: everything on the three-node cluster,
#: and the local backend on the same rows.
DEFAULT = [n for n in CONTESTANTS if "3node" in n or n == "mrk8s-local"]


def run_in_child(name: str, size: int, workers: int) -> dict[str, Any]:
    """One run of ``name`` in a fresh process (see ``compare_shuffle.run_in_child``)."""
    cmd = [sys.executable, "-m", "bench.compare_ray", "--child", name, "--size", str(size),
           "--workers", str(workers)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def load() -> str:
    """The machine's load averages, as ``uptime`` prints them."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summarise(results: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Medians of the verified runs, and the ratios the issue's targets are about."""
    med: dict[str, dict[str, float]] = {}
    for name in names:
        ok = [r for r in results if r["contestant"] == name and r.get("verified")]
        if ok:
            med[name] = {
                k: statistics.median(r[k] for r in ok)
                for k in (
                    "seconds",
                    "gib_per_s",
                    "shuffle_bytes_remote",
                    "locality",
                    "locality_best",
                )
                if all(r.get(k) is not None for r in ok)
            }

    def ratio(a: str, b: str) -> float | None:
        if a in med and b in med:
            return round(med[b]["seconds"] / med[a]["seconds"], 2)
        return None

    def over(a: str, b: str) -> float | None:
        if a in med and b in med:
            return round(med[a]["seconds"] / med[b]["seconds"], 2)
        return None

    return {
        "medians": med,
        # The targets, on the three-node cluster: speedup > 1 means
        # mrk8s is faster by this factor; time over local < 1.5 is the target.
        "mrk8s_ray_speedup_over_ray_data_hash": ratio(
            "mrk8s-ray-3node-locality", "ray-data-hash-3node"
        ),
        "mrk8s_ray_speedup_over_ray_data_random": ratio(
            "mrk8s-ray-3node-locality", "ray-data-random-3node"
        ),
        "mrk8s_ray_time_over_local": over("mrk8s-ray-3node-locality", "mrk8s-local"),
        # The same on a single-node Ray (when those contestants ran).
        "single_node_mrk8s_ray_speedup_over_ray_data_hash": ratio("mrk8s-ray", "ray-data-hash"),
        "single_node_mrk8s_ray_time_over_local": over("mrk8s-ray", "mrk8s-local"),
        "locality_speedup_over_random": ratio("mrk8s-ray-3node-locality", "mrk8s-ray-3node-random"),
        "terasort_locality_speedup_over_random": ratio(
            "terasort-3node-locality", "terasort-3node-random"
        ),
    }


#: What the README calls each contestant, in the table's order.
LABELS = {
    "mrk8s-ray-3node-locality": "**mrk8s on Ray, reducers placed by locality**",
    "mrk8s-ray-3node-random": "mrk8s on Ray, reducers placed at random",
    "ray-data-hash-3node": "Ray Data, hash shuffle (`repartition(keys=...)`)",
    "ray-data-random-3node": "Ray Data, `random_shuffle` (not by key)",
    "mrk8s-local": "mrk8s, local backend (2 workers, one machine)",
    "terasort-3node-locality": "TeraSort of key-clustered input, placed by locality",
    "terasort-3node-random": "TeraSort of key-clustered input, placed at random",
    "mrk8s-ray": "mrk8s on a one-node Ray (2 CPUs)",
    "ray-data-hash": "Ray Data hash shuffle, one-node Ray (2 CPUs)",
    "ray-data-random": "Ray Data `random_shuffle`, one-node Ray (2 CPUs)",
}

README_BEGIN = "<!-- compare_ray table: written by python -m bench.compare_ray -->"
README_END = "<!-- /compare_ray table -->"


def report_table(data: dict[str, Any]) -> str:
    """The README's table and target lines, from a ``compare_ray.json``."""
    runs, summary, machine = data["runs"], data["summary"], data["machine"]
    med = summary["medians"]
    names = [n for n in LABELS if any(r["contestant"] == n for r in runs)]
    lines = [
        f"Medians of `{machine.get('command', 'python -m bench.compare_ray')}`, "
        f"commit {machine.get('commit', 'unknown')}; load average at the start "
        f"{machine['load_before'].split('load average:')[-1].strip()}, at the end "
        f"{machine['load_after'].split('load average:')[-1].strip()}.",
        "",
        "| contestant (3 simulated nodes unless said) | median s | the runs "
        "| MB from other nodes |",
        "|---|---|---|---|",
    ]
    for name in names:
        mine = [r for r in runs if r["contestant"] == name]
        each = " / ".join(
            f"{r['seconds']:.2f}"
            if r.get("verified")
            else ("failed" if "error" in r else "unverified")
            for r in sorted(mine, key=lambda r: r["run"])
        )
        m = med.get(name, {})
        seconds = f"{m['seconds']:.2f}" if "seconds" in m else "-"
        remote = m.get("shuffle_bytes_remote")
        moved = f"{remote / 1e6:.0f}" if remote is not None else "-"
        lines.append(f"| {LABELS[name]} | {seconds} | {each} | {moved} |")

    def said(key: str, what: str, target: str) -> str:
        value = summary.get(key)
        return f"- {what}: {value}x ({target})" if value is not None else f"- {what}: not run"

    lines += [
        "",
        said("mrk8s_ray_speedup_over_ray_data_hash", "mrk8s on Ray over Ray Data's hash shuffle",
             "speedup; target at least 2x"),
        said("mrk8s_ray_speedup_over_ray_data_random", "mrk8s on Ray over `random_shuffle`",
             "speedup"),
        said("mrk8s_ray_time_over_local", "mrk8s on Ray against the local backend",
             "time ratio; target at most 1.5x"),
        said("locality_speedup_over_random", "hash shuffle, placed by locality over random",
             "speedup"),
        said("terasort_locality_speedup_over_random",
             "clustered TeraSort, placed by locality over random", "speedup"),
    ]  # fmt: skip
    return "\n".join(lines)


def update_readme(data: dict[str, Any], readme: Path) -> bool:
    """Replace the table between the markers in ``readme``; False if it has no markers."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    table = report_table(data)
    readme.write_text(text[: start + len(README_BEGIN)] + "\n" + table + "\n" + text[end:])
    return True


def _report(out: Path) -> None:
    """The chart and the README table from the JSON at ``out``."""
    data = json.loads(out.read_text())
    names = [n for n in LABELS if n in data["summary"]["medians"]]
    try:
        _plot(data["summary"], names, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    if not update_readme(data, REPO / "README.md"):
        print(f"README.md has no {README_BEGIN!r} marker: table not written", file=sys.stderr)


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (proc.stdout.strip() or "unknown") + (" with uncommitted changes" if dirty else "")


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--contestants", default=",".join(DEFAULT))
    p.add_argument("--out", default=str(HERE / "results" / "compare_ray.json"))
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument(
        "--report",
        action="store_true",
        help="run nothing: redo the chart and README's table from the JSON at --out",
    )
    args = p.parse_args(argv)
    if args.report:
        _report(Path(args.out))
        return 0
    size = parse_size(args.size)
    if args.child:
        print(json.dumps(CONTESTANTS[args.child](size, args.workers)))
        return 0
    names = [n for n in args.contestants.split(",") if n]
    unknown = sorted(set(names) - set(CONTESTANTS))
    if unknown:
        p.error(f"unknown contestants {unknown}: pick from {', '.join(CONTESTANTS)}")
    load_before = load()
    results: list[dict[str, Any]] = []
    for run in range(1, args.repeat + 1):
        for name in run_order(names, run):
            _settle()
            row: dict[str, Any] = {"contestant": name, "size": args.size, "run": run,
                                   "load_before": os.getloadavg()}  # fmt: skip
            try:
                row.update(run_in_child(name, size, args.workers))
                row["gib_per_s"] = float(f"{size / 2**30 / row['seconds']:.3g}")
            except Exception as exc:  # report it and go on with the others
                # Paths of this machine are cut to the repository's own.
                error = f"{type(exc).__name__}: {exc}".replace(f"{REPO}/", "")
                row["error"] = error[:2000]
            print(json.dumps(row), flush=True)
            results.append(row)
    summary = summarise(results, names)
    print(json.dumps(summary), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "workers": args.workers, "python": sys.version.split()[0],
               "load_before": load_before, "load_after": load(), "commit": _commit(),
               "command": " ".join(["python -m bench.compare_ray", *argv])}  # fmt: skip
    out.write_text(json.dumps({"machine": machine, "runs": results, "summary": summary}, indent=1))
    _report(out)
    return 0


def _plot(summary: dict[str, Any], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = summary["medians"]
    names = [n for n in names if n in med]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=[3, 2])
    seconds = [med[n]["seconds"] for n in names]
    bars = left.barh(names, seconds, color="tab:blue")
    left.bar_label(bars, labels=[f"{s:.1f} s" for s in seconds], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("seconds, median (lower is better)")
    left.set_title("1 GiB shuffle, 16 -> 16 partitions, 2 cores", fontsize=10)
    three = [n for n in names if "-3node-" in n]
    moved = [med[n].get("shuffle_bytes_remote", 0) / 2**20 for n in three]
    labels = [n.replace("mrk8s-ray-3node-", "hash\n").replace("terasort-3node-", "terasort\n")
              for n in three]  # fmt: skip
    bars = right.bar(labels, moved, color="tab:orange")
    right.bar_label(bars, labels=[f"{m:.0f} MiB" for m in moved], fontsize=8)
    right.set_ylabel("MiB read from other nodes (median)")
    right.set_title("3 simulated nodes: reducer placement", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
