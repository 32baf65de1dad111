"""mrk8s's shuffle against the tools a user would otherwise pick, same rows, same machine.

    make bench   # or: python -m bench.compare_shuffle [--sizes 1GiB,4GiB] [--repeat 3] [--settle 1]

Contestants, run interleaved ``--repeat`` times at each size (16 maps -> 16
reducers, int64 key + 90-byte payload, rows from
``mrk8s.bench.jobs.shuffle_job.generate_chunk`` so every contestant moves the
same rows, generated inside its map tasks; every reducer materialises and
checksums its partition in memory and writes no output):

- ``mrk8s``: ``mrk8s bench shuffle`` (the real engine, local backend, the
  hash shuffle on local disk, as the peers shuffle: ``SORT_KEYS = False``);
- ``mrk8s-sorted``: the same with ``--sorted``, every partition sorted by key
  (the default of a job; no peer here sorts, so this is for scale);
- ``mrk8s-s3``: the hash shuffle through an S3 protocol server on loopback
  (moto in server mode, a subprocess this script starts). Moto is a test
  server, not S3: this measures that the S3 path works at size and what it
  costs here, not what S3 would do. Only up to ``--s3-max-size``: moto holds
  every object in memory and copies the whole object for each ranged GET.
  Its row reports the S3 requests of the measured job by kind, and requests
  and bytes per GiB shuffled, as the server counted them (:mod:`bench.s3_traffic`);
- ``s3-lower-bound``: the least a Python two-stage shuffle through s3fs does
  against the same server (:mod:`bench.s3_lower_bound`): one object per map
  task, uploaded as mrk8s uploads it, and one ranged GET per (map object,
  reducer) pair; no framework, commit records or retries. Its requests are
  counted as ``mrk8s-s3``'s are;
- ``mrk8s-s3rver``: the same through s3rver, a Node.js fake S3 server that
  keeps objects as files and serves a ranged GET from the file (installed
  with npm into ``~/.cache/mrk8s`` on first use; needs Node.js and npm). Also
  a test server, not S3, but one that runs at 1 and 4 GiB;
- ``pyarrow-lower-bound``: the least a Python+Arrow two-stage shuffle can do
  here: map processes hash the key with numpy, ``take`` rows into partition
  order, write one Arrow IPC file per partition; reduce processes read their
  files back, concatenate and checksum. No sort, no commit records, no retries.
  Its worker processes are forked from this script's, which has pyarrow and
  numpy loaded;
- ``pyarrow-lower-bound-spawn``: the same with worker processes started
  afresh (``spawn``), as mrk8s starts its workers: a fresh interpreter that
  imports what it needs. (Earlier runs found it 12-18% slower than the
  forked pool at 1 GiB; that came from Dask's malloc setting, which spawned
  workers inherited while forked ones did not, see :func:`run_in_child`.
  With every run in a clean process the two are level.);
- ``ray-data-hash``, ``ray-data-random``, ``dask-p2p``, ``dask-tasks``: the
  peers (:mod:`bench.peers`; needs ``pip install 'mrk8s[bench]'``).

Each run of each contestant is a fresh Python process started from this
script's environment (:func:`run_in_child`), so no contestant inherits what
another left in a process. Prints one JSON line per run, then per size the
medians and each contestant's ratio to mrk8s, and writes
``bench/results/compare_shuffle.json`` and a bar chart ``compare_shuffle.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import peers
from bench.order import run_order

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAPS = REDUCERS = 16
PAYLOAD = 90
SEED = 1
MIX = np.uint64(0x9E3779B97F4A7C15)


def _lb_map(task: int, chunks: list[int], out_dir: str, sort: bool = False) -> None:
    """One map task of a lower bound: each chunk ordered by partition (and by key
    within it, if ``sort``: a sorted run per chunk), appended to one Arrow stream
    file per partition."""
    from mrk8s.bench.jobs.shuffle_job import generate_chunk

    writers: dict[int, Any] = {}
    for chunk, rows in enumerate(chunks):
        table = generate_chunk(
            seed=SEED, task=task, chunk=chunk, rows=rows, key_type="int64", payload_bytes=PAYLOAD
        )
        keys = table.column("key").to_numpy()
        pids = ((keys.view(np.uint64) * MIX) >> np.uint64(60)).astype(np.uint16) % REDUCERS
        if sort:  # by key, then stably by partition: (partition, key) order
            by_key = np.argsort(keys)
            order = by_key[np.argsort(pids[by_key], kind="stable")]
        else:
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


def _lb_sorted_map(task: int, chunks: list[int], out_dir: str) -> None:
    _lb_map(task, chunks, out_dir, sort=True)


def _lb_read(partition: int, out_dir: str) -> pa.Table | None:
    tables = []
    for task in range(MAPS):
        path = os.path.join(out_dir, f"m{task}-p{partition}.arrow")
        if os.path.exists(path):
            with pa.OSFile(path, "rb") as f:
                tables.append(pa.ipc.open_stream(f).read_all())
    return pa.concat_tables(tables).combine_chunks() if tables else None


def _lb_reduce(partition: int, out_dir: str, sort: str = "") -> tuple[int, tuple[int, int, int]]:
    """One reduce task of a lower bound: its partition read whole, sorted by key if
    ``sort`` (``"merge"``: its runs are sorted, so a stable sort merges them;
    ``"sort"``: its rows come in any order), checksummed."""
    from mrk8s.bench.jobs.shuffle_job import checksum

    table = _lb_read(partition, out_dir)
    if table is None:
        return 0, (0, 0, 0)
    if sort:
        keys = table.column("key").to_numpy()
        # numpy's stable sort is a timsort, which merges sorted runs in O(n log runs).
        order = np.argsort(keys, kind="stable" if sort == "merge" else "quicksort")
        table = table.take(pa.array(order))
        keys = table.column("key").to_numpy()
        if keys.size > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            raise AssertionError(f"partition {partition} is not sorted")
    return table.num_rows, checksum(table, PAYLOAD)


def _lb_merge_reduce(partition: int, out_dir: str) -> tuple[int, tuple[int, int, int]]:
    return _lb_reduce(partition, out_dir, sort="merge")


def _lb_sort_reduce(partition: int, out_dir: str) -> tuple[int, tuple[int, int, int]]:
    return _lb_reduce(partition, out_dir, sort="sort")


def lower_bound_spawn(size: int, workers: int) -> dict[str, Any]:
    return lower_bound(size, workers, start_method="spawn")


def sorted_lower_bound(size: int, workers: int) -> dict[str, Any]:
    """Sorted runs written by the maps, merged by the reducers."""
    return lower_bound(size, workers, map_fn=_lb_sorted_map, reduce_fn=_lb_merge_reduce)


def sorted_lower_bound_reduce(size: int, workers: int) -> dict[str, Any]:
    """The hash lower bound's maps; each reducer sorts its partition once."""
    return lower_bound(size, workers, reduce_fn=_lb_sort_reduce)


def lower_bound(
    size: int,
    workers: int,
    start_method: str = "fork",
    map_fn: Callable[[int, list[int], str], None] = _lb_map,
    reduce_fn: Callable[[int, str], tuple[int, tuple[int, int, int]]] = _lb_reduce,
) -> dict[str, Any]:
    from mrk8s.bench.shuffle_bench import task_chunks

    rows = size // (8 + PAYLOAD)
    chunks = task_chunks(rows, MAPS, 8 + PAYLOAD)
    out_dir = tempfile.mkdtemp(prefix="mrk8s-lb-")
    try:
        context = multiprocessing.get_context(start_method)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            # Warm the pool up (a spawned worker imports pyarrow and numpy first).
            list(pool.map(map_fn, range(workers), [[1]] * workers, [out_dir] * workers))
            for name in os.listdir(out_dir):
                os.unlink(os.path.join(out_dir, name))
            started = time.perf_counter()
            list(pool.map(map_fn, range(MAPS), chunks, [out_dir] * MAPS))
            mapped = time.perf_counter()
            results = list(pool.map(reduce_fn, range(REDUCERS), [out_dir] * REDUCERS))
            done = time.perf_counter()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    got = tuple(sum(c[i] for _, c in results) for i in range(3))
    return {
        "seconds": round(done - started, 3),
        "map_seconds": round(mapped - started, 3),
        "reduce_seconds": round(done - mapped, 3),
        "rows": got[0],
        "verified": got == peers.expected_checksum(size),
    }


def _bench_shuffle(
    size: int, workers: int, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "bench", "shuffle", "--size", str(size),
        "--maps", str(MAPS), "--reducers", str(REDUCERS), "--workers", str(workers),
        "--repeat", "1", "--payload-bytes", str(PAYLOAD), "--seed", str(SEED), "--quiet",
        *extra,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mrk8s bench shuffle failed:\n{proc.stderr[-3000:]}")
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = ("seconds", "map_seconds", "reduce_seconds", "rows", "verified", "peak_rss_max")
    return {**{k: line[k] for k in keys}, "job_id": line["job_id"]}


def mrk8s_run(size: int, workers: int) -> dict[str, Any]:
    return _bench_shuffle(size, workers)


def mrk8s_sorted(size: int, workers: int) -> dict[str, Any]:
    return _bench_shuffle(size, workers, "--sorted")


class _LoopbackS3:
    """An S3 protocol server subprocess on a free loopback port, with bucket ``mrk8s-bench``.

    ``command(port)`` starts it; ``env`` is what a client needs (the standard
    AWS variables, ``AWS_ENDPOINT_URL`` included).
    """

    def __init__(self, command: Callable[[int], list[str]], *, key: str = "testing") -> None:
        import socket

        import s3fs

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.env = {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        fs = s3fs.S3FileSystem(key=key, secret=key, client_kwargs={"endpoint_url": endpoint})
        for _ in range(200):
            try:
                fs.mkdir("mrk8s-bench")
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError(f"the S3 server {command(port)[:3]} did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _counted_moto(size: int, run: Callable[[_LoopbackS3], dict[str, Any]]) -> dict[str, Any]:
    """``run(server)`` against a fresh moto server that logs every request
    (:mod:`bench.s3_traffic`; moto keeps every object in its memory); its result
    with the S3 traffic under the key prefix it names (``s3_prefix``) added."""
    from bench import s3_traffic

    with tempfile.TemporaryDirectory(prefix="mrk8s-s3-log-") as tmp:
        log = os.path.join(tmp, "requests.tsv")
        server = _LoopbackS3(lambda port: s3_traffic.command(port, log))
        try:
            result = run(server)
        finally:
            server.close()
        return {**result, **s3_traffic.report(s3_traffic.read_log(log), result["s3_prefix"], size)}


def mrk8s_s3(size: int, workers: int) -> dict[str, Any]:
    def run(server: _LoopbackS3) -> dict[str, Any]:
        line = _bench_shuffle(
            size, workers, "--shuffle-dir", "s3://mrk8s-bench/shuffle", env=server.env
        )
        return {**line, "s3_prefix": f"mrk8s-bench/shuffle/{line['job_id']}/"}

    return _counted_moto(size, run)


def s3_lower_bound(size: int, workers: int) -> dict[str, Any]:
    from bench import s3_lower_bound as lb

    def run(server: _LoopbackS3) -> dict[str, Any]:
        options = {"key": server.env["AWS_ACCESS_KEY_ID"],
                   "secret": server.env["AWS_SECRET_ACCESS_KEY"],
                   "client_kwargs": {"endpoint_url": server.env["AWS_ENDPOINT_URL"]}}  # fmt: skip
        return lb.lower_bound(size, workers, storage_options=options, bucket="mrk8s-bench")

    return _counted_moto(size, run)


S3RVER = "s3rver@3.7.1"


def _s3rver_bin() -> str:
    """s3rver's command, installed with npm into the user's cache on first use."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = home / "mrk8s" / S3RVER.replace("@", "-")
    binary = prefix / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        if not (shutil.which("node") and shutil.which("npm")):
            raise RuntimeError("mrk8s-s3rver needs Node.js and npm (e.g. apt install nodejs npm)")
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", S3RVER],
            check=True,
            capture_output=True,
        )
    return str(binary)


def mrk8s_s3rver(size: int, workers: int) -> dict[str, Any]:
    binary = _s3rver_bin()
    with tempfile.TemporaryDirectory(prefix="s3rver-") as data:
        server = _LoopbackS3(
            lambda port: [
                binary,
                "--directory",
                data,
                "--address",
                "127.0.0.1",
                "--port",
                str(port),
                "--silent",
            ],
            key="S3RVER",  # the only credentials s3rver accepts
        )
        try:
            return _bench_shuffle(
                size, workers, "--shuffle-dir", "s3://mrk8s-bench/shuffle", env=server.env
            )
        finally:
            server.close()


def _peer(name: str) -> Callable[[int, int], dict[str, Any]]:
    def run(size: int, workers: int) -> dict[str, Any]:
        return getattr(peers, name)(size, workers)  # type: ignore[no-any-return]

    return run


CONTESTANTS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "mrk8s": mrk8s_run,
    "mrk8s-sorted": mrk8s_sorted,
    "mrk8s-s3": mrk8s_s3,
    "mrk8s-s3rver": mrk8s_s3rver,
    "s3-lower-bound": s3_lower_bound,
    "pyarrow-lower-bound": lower_bound,
    "pyarrow-lower-bound-spawn": lower_bound_spawn,
    "pyarrow-sorted-lower-bound": sorted_lower_bound,
    "pyarrow-sorted-lower-bound-reduce": sorted_lower_bound_reduce,
    "ray-data-hash": _peer("ray_data_hash"),
    "ray-data-random": _peer("ray_data_random"),
    "dask-p2p": _peer("dask_p2p"),
    "dask-tasks": _peer("dask_tasks"),
}


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1GiB,4GiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument(
        "--contestants", default=",".join(CONTESTANTS), help="comma-separated (default: all)"
    )
    p.add_argument(
        "--s3-max-size", default="1GiB", help="largest size mrk8s-s3 and s3-lower-bound run at"
    )
    p.add_argument("--out", default=str(HERE / "results" / "compare_shuffle.json"))
    p.add_argument(
        "--settle",
        type=float,
        default=SETTLE_SECONDS,
        help="seconds to wait before each run, after writing back dirty pages "
        "(default: %(default)s; see bench.memory_temperature)",
    )
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one run of one contestant, in a process of its own (see run_in_child)
        print(json.dumps(CONTESTANTS[args.child](parse_size(args.sizes), args.workers)))
        return 0
    names = [n for n in args.contestants.split(",") if n]
    unknown = sorted(set(names) - set(CONTESTANTS))
    if unknown:
        p.error(f"unknown contestants {unknown}: pick from {', '.join(CONTESTANTS)}")
    sizes = args.sizes.split(",")
    results: list[dict[str, Any]] = []
    for size_text in sizes:
        size = parse_size(size_text)
        for run in range(1, args.repeat + 1):
            # Interleaved, so that drift hits every contestant alike, and in a new
            # order each run (bench.order).
            for name in run_order(names, run):
                if name in ("mrk8s-s3", "s3-lower-bound") and size > parse_size(args.s3_max_size):
                    continue
                _settle(args.settle)
                row: dict[str, Any] = {"contestant": name, "size": size_text, "run": run}
                try:
                    row.update(run_in_child(name, size, args.workers))
                    row["gib_per_s"] = float(f"{size / 2**30 / row['seconds']:.3g}")
                except Exception as exc:  # report it and go on with the others
                    row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                print(json.dumps(row), flush=True)
                results.append(row)
    summary = [_summarise(results, size_text, names) for size_text in sizes]
    for entry in summary:
        print(json.dumps(entry), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "workers": args.workers, "python": sys.version.split()[0]}
    out.write_text(json.dumps({"machine": machine, "runs": results, "summary": summary}, indent=1))
    try:
        if any(s["median_gib_per_s"] for s in summary):
            _plot(summary, names, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return 0


def run_in_child(name: str, size: int, workers: int) -> dict[str, Any]:
    """One run of contestant ``name`` in a fresh Python process; its result dict.

    Every run starts from this script's environment and nothing else: a peer
    changes the process it runs in for good (Dask's ``LocalCluster`` sets
    ``MALLOC_TRIM_THRESHOLD_=65536`` and ``OMP_NUM_THREADS=1`` in
    ``os.environ``, Ray sets ``RAY_*`` variables and leaves threads and imports
    behind), and whatever ran after it in the same process would inherit that:
    the processes mrk8s starts got Dask's malloc setting, which turns every
    large allocation into a fresh ``mmap`` and made mrk8s about a quarter
    slower for the rest of the comparison. The lower bound's forked workers
    copy their parent, so they too must not fork from a process a peer ran in.
    """
    cmd = [sys.executable, "-m", "bench.compare_shuffle", "--child", name,
           "--sizes", str(size), "--workers", str(workers)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


#: Default wait before each run; see :func:`_settle`.
SETTLE_SECONDS = 1.0


def _settle(seconds: float = SETTLE_SECONDS) -> None:
    """Before each contestant (untimed): write back the previous one's dirty pages,
    so that nobody pays for another's disk writes, and wait ``seconds``."""
    os.sync()
    time.sleep(seconds)


#: The ratios issue 26 sets targets for: (name, contestant, the contestants it is
#: judged against (the fastest of them counts), least ratio). The sorted lower
#: bound is the faster of its two variants, as the issue defines it.
TARGETS = (
    ("hash / lower bound", "mrk8s", ("pyarrow-lower-bound",), 0.9),
    (
        "sorted / sorted lower bound",
        "mrk8s-sorted",
        ("pyarrow-sorted-lower-bound", "pyarrow-sorted-lower-bound-reduce"),
        0.8,
    ),
    ("sorted / Dask task shuffle", "mrk8s-sorted", ("dask-tasks",), 2.0),
    ("S3 / S3 lower bound", "mrk8s-s3", ("s3-lower-bound",), 0.7),
)


def target_ratios(medians: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each :data:`TARGETS` ratio whose contestants all have a median here."""
    out: dict[str, dict[str, Any]] = {}
    for name, ours, others, least in TARGETS:
        against = [medians[o] for o in others if medians.get(o)]
        if not medians.get(ours) or len(against) != len(others):
            continue
        ratio = medians[ours] / max(against)
        out[name] = {"ratio": round(ratio, 3), "target": least, "met": ratio >= least}
    return out


def _summarise(results: list[dict[str, Any]], size_text: str, names: list[str]) -> dict[str, Any]:
    """Medians per contestant at one size, each one's ratio to mrk8s, and the
    ratios with targets (:func:`target_ratios`)."""
    medians: dict[str, float] = {}
    peak_rss: dict[str, int] = {}
    for name in names:
        ok = [
            r
            for r in results
            if r["contestant"] == name and r["size"] == size_text and r.get("verified")
        ]
        if ok:
            medians[name] = statistics.median(r["gib_per_s"] for r in ok)
        rss = [r["peak_rss_max"] for r in ok if r.get("peak_rss_max")]
        if rss:
            peak_rss[name] = max(rss)
    ours = medians.get("mrk8s")
    return {
        "size": size_text,
        "median_gib_per_s": medians,
        "mrk8s_speedup_over": {
            name: round(ours / value, 2) for name, value in medians.items() if ours and value
        },
        "targets": target_ratios(medians),
        "mrk8s_peak_worker_rss": peak_rss,
    }


def _plot(summary: list[dict[str, Any]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in names if any(n in s["median_gib_per_s"] for s in summary)]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(summary))]
        values = [s["median_gib_per_s"].get(name, 0.0) for s in summary]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(summary))])
    ax.set_xticklabels([s["size"] for s in summary])
    ax.set_ylabel("GiB/s (median; higher is better)")
    ax.set_title("shuffle throughput, 16 -> 16 partitions, int64 key + 90 B payload, 2 cores")
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    top = max(max(s["median_gib_per_s"].values(), default=0.0) for s in summary)
    if top > 0:  # (a run of a few MiB through a slow server can round to nothing)
        ax.set_ylim(0, top * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
