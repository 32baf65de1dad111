"""The shuffle beyond memory (issue 25): 32 GiB on a 24 GiB machine against 4 GiB, one run.

    python -m bench.beyond_memory [--shuffle-dir DIR] [--large 32GiB] [--small 4GiB]

In one invocation, on one worker pool size (the CPUs), with the partition
size held constant (128 MiB per reducer):

1. ``mrk8s bench shuffle`` at ``--small`` (32 maps x 32 reducers) and at
   ``--large`` (256 x 256), hash shuffle, then both again with the sorted
   shuffle (``--sorted``; the default shuffle of a job, every partition
   sorted by key) with a record reducer, ``reducer(key, values)`` once per
   key, as most jobs reduce (``--sorted-reducer batch``: ``reduce_batch`` over
   each whole partition; ``pieces``: over pieces of whole keys within the
   reducer's memory, ``REDUCE_BATCH_PIECES``).
   Every run is verified (each partition's rows and checksums against the
   rows generated again outside the job). Each JSON line carries
   the disk bytes each stage read and wrote and the peak anonymous memory of
   its tasks (:mod:`mrk8s.bench.benchstats`).
2. The small hash run once through each read path of the reducers
   (``MRK8S_READ_AHEAD``: ``mmap``, ``fadvise``, ``pread``, ``advise``, ``auto``), with the page
   cache kept, then dropped between the map and the reduce stage.
3. The disk's cold sequential speed, same run: a file as large as the large
   run's map outputs is written (``fdatasync`` at the end: the write speed),
   dropped from the page cache, then read with 8 MiB reads, buffered (as
   ``dd bs=8M``) and with ``O_DIRECT``; the file is deleted at once.

Before every large step it checks that the disk keeps at least
``--min-free`` bytes free once that step's data is written, and stops if
not. It writes ``bench/results/beyond_memory.json`` (every run, the disk
reference, the load average before and after, the ratios the issue asks
for) and the chart ``beyond_memory.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mrk8s.bench import shuffle_bench as bench
from mrk8s.engine import progress
from mrk8s.engine.settings import RunSettings, default_shuffle_dir, parse_size

RESULTS = Path(__file__).parent / "results"

#: Bytes per reducer, held constant across sizes (4 GiB / 32, 32 GiB / 256).
PARTITION_BYTES = 128 << 20

#: Read and write size of the disk reference (dd bs=8M).
BLOCK = 8 << 20


def _free(path: str) -> int:
    return shutil.disk_usage(path).free


def _check_space(path: str, need: int, keep_free: int, what: str) -> None:
    free = _free(path)
    if free - need < keep_free:
        raise SystemExit(
            f"{what} needs {need / 1e9:.1f} GB in {path}, which has {free / 1e9:.1f} GB free; "
            f"that would leave less than {keep_free / 1e9:.0f} GB: free space or give "
            "--shuffle-dir on a larger disk"
        )


def disk_reference(directory: str, size: int) -> dict[str, Any]:
    """Write ``size`` bytes sequentially, then read them back cold, buffered and O_DIRECT."""
    path = os.path.join(directory, f"disk-reference-{os.getpid()}.bin")
    block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT wants
    block.write(os.urandom(BLOCK))
    size -= size % BLOCK
    out: dict[str, Any] = {"bytes": size, "block_bytes": BLOCK}
    try:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(size // BLOCK):
                os.write(fd, block)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        out["write_mb_per_s"] = round(size / (time.perf_counter() - started) / 1e6, 1)
        for name, flags in (("buffered", 0), ("direct", os.O_DIRECT)):
            bench.drop_from_cache(path)
            started = time.perf_counter()
            fd = os.open(path, os.O_RDONLY | flags)
            try:
                while os.readv(fd, [block]) > 0:
                    pass
            finally:
                os.close(fd)
            out[f"cold_read_{name}_mb_per_s"] = round(
                size / (time.perf_counter() - started) / 1e6, 1
            )
    finally:
        if os.path.exists(path):
            os.unlink(path)
    out["cold_read_mb_per_s"] = max(
        out["cold_read_buffered_mb_per_s"], out["cold_read_direct_mb_per_s"]
    )
    return out


def run_one(
    size: int,
    sort_keys: bool,
    shuffle_dir: str,
    repeat: int,
    report: progress.Progress,
    *,
    drop_caches: bool = False,
    read_ahead: str | None = None,
    record_reducer: bool = False,
    pieces: bool = False,
) -> list[dict[str, Any]]:
    """``mrk8s bench shuffle`` at ``size``, 128 MiB per reducer; ``read_ahead`` picks
    the reducers' read path (``MRK8S_READ_AHEAD``, which the workers inherit)."""
    tasks = max(1, size // PARTITION_BYTES)
    settings = bench.ShuffleBenchSettings(
        size=size,
        maps=tasks,
        reducers=tasks,
        repeat=repeat,
        sort_keys=sort_keys,
        record_reducer=record_reducer,
        pieces=pieces,
        drop_caches=drop_caches,
        run=RunSettings(script=bench.JOB_SCRIPT, shuffle_dir=shuffle_dir),
    )
    previous = os.environ.get("MRK8S_READ_AHEAD")
    if read_ahead:
        os.environ["MRK8S_READ_AHEAD"] = read_ahead
    try:
        return bench.run_shuffle_bench(replace(settings), report)
    finally:
        if previous is None:
            os.environ.pop("MRK8S_READ_AHEAD", None)
        else:
            os.environ["MRK8S_READ_AHEAD"] = previous


def read_variants(size: int, shuffle_dir: str, report: progress.Progress) -> list[dict[str, Any]]:
    """The small hash run once per read path, with the page cache kept and dropped."""
    out = []
    for drop in (False, True):
        for mode in ("mmap", "fadvise", "pread", "advise", "auto"):
            print(f"== variant {mode}, cache dropped: {drop}", file=sys.stderr, flush=True)
            (line,) = run_one(
                size, False, shuffle_dir, 1, report, drop_caches=drop, read_ahead=mode
            )
            out.append({"read_ahead": mode, "cache_dropped": drop, **line})
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarise(runs: dict[str, list[dict[str, Any]]], disk: dict[str, Any]) -> dict[str, Any]:
    """The issue's ratios, per shuffle: large/small throughput, reduce read speed/disk."""
    out: dict[str, Any] = {}
    for shuffle in ("hash", "sorted"):
        small, large = runs.get(f"small-{shuffle}"), runs.get(f"large-{shuffle}")
        if not small or not large:
            continue
        small_gibs = _median([r["gib_per_s"] for r in small])
        large_run = large[0]
        reduce_mbs = large_run["shuffle_bytes"] / large_run["reduce_seconds"] / 1e6
        small_anon = max(r["peak_anon_max"] for r in small)
        out[shuffle] = {
            "small_gib_per_s": small_gibs,
            "large_gib_per_s": large_run["gib_per_s"],
            "throughput_ratio": round(large_run["gib_per_s"] / small_gibs, 3),
            "large_reduce_read_mb_per_s": round(reduce_mbs, 1),
            "large_reduce_disk_read_mb_per_s": large_run["reduce_disk_read_mb_per_s"],
            "reduce_read_to_disk_ratio": round(reduce_mbs / disk["cold_read_mb_per_s"], 3)
            if disk
            else None,
            "small_peak_anon_max": small_anon,
            "large_peak_anon_max": large_run["peak_anon_max"],
            "anon_ratio": round(large_run["peak_anon_max"] / small_anon, 3),
            # CPU seconds per GiB (the load changes them far less than the seconds).
            **_cpu_per_gib(small, large_run),
            "verified": all(r["verified"] for r in small + large),
        }
    return out


def _cpu_per_gib(small: list[dict[str, Any]], large: dict[str, Any]) -> dict[str, Any]:
    """Each stage's CPU seconds per GiB of rows (median of the small runs), and large/small."""
    out: dict[str, Any] = {}
    for stage in ("map", "reduce"):
        key = f"{stage}_cpu_seconds"
        if large.get(key) is None or any(r.get(key) is None for r in small):
            continue
        a = _median([r[key] / (r["bytes"] / 2**30) for r in small])
        b = large[key] / (large["bytes"] / 2**30)
        out[f"small_{stage}_cpu_s_per_gib"] = round(a, 2)
        out[f"large_{stage}_cpu_s_per_gib"] = round(b, 2)
        out[f"{stage}_cpu_ratio"] = round(b / a, 3) if a else None
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    disk = result["disk"]
    shuffles = [s for s in ("hash", "sorted") if s in summary]
    reducer = result.get("sorted_reducer", "batch")
    names = [f"sorted\n({reducer} reducer)" if s == "sorted" else s for s in shuffles]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    small, large = result["small"], result["large"]
    x = range(len(shuffles))
    w = 0.38
    ax = axes[0]
    a = [summary[s]["small_gib_per_s"] for s in shuffles]
    b = [summary[s]["large_gib_per_s"] for s in shuffles]
    ax.bar([i - w / 2 for i in x], a, w, label=f"{small} (32 x 32)")
    ax.bar([i + w / 2 for i in x], b, w, label=f"{large} (256 x 256)")
    for i, s in enumerate(shuffles):
        ax.text(i + w / 2, b[i], f"{summary[s]['throughput_ratio']:.2f}x", ha="center", va="bottom")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("GiB/s (map + reduce)")
    ax.set_title("Throughput at constant partition size")
    ax.legend(fontsize=8)

    ax = axes[1]
    labels = ["disk cold\nbuffered", "disk cold\nO_DIRECT"] + [
        f"{large} {s}\nreduce" for s in shuffles
    ]
    values = [disk["cold_read_buffered_mb_per_s"], disk["cold_read_direct_mb_per_s"]] + [
        summary[s]["large_reduce_read_mb_per_s"] for s in shuffles
    ]
    ax.bar(labels, values, color=["grey", "grey"] + ["C1"] * len(shuffles))
    ax.axhline(0.5 * disk["cold_read_mb_per_s"], color="k", ls="--", lw=1, label="0.5x disk")
    ax.set_ylabel("MB/s read")
    ax.set_title("Reduce stage read speed against the disk")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[2]
    a = [summary[s]["small_peak_anon_max"] / 1e6 for s in shuffles]
    b = [summary[s]["large_peak_anon_max"] / 1e6 for s in shuffles]
    ax.bar([i - w / 2 for i in x], a, w, label=small)
    ax.bar([i + w / 2 for i in x], b, w, label=large)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MB")
    ax.set_title("Peak anonymous memory per task")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"mrk8s shuffle beyond memory ({result['cpus']} CPUs, {result['memory_gib']} GiB RAM; "
        f"load {result['load_average_before'][0]:.1f} before, "
        f"{result['load_average_after'][0]:.1f} after)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


#: GiB/s assumed for a run the previous results do not cover (the 32 GiB runs
#: of issue 25 at load 10-20: hash 0.07, sorted with a record reducer 0.009).
_FALLBACK_GIB_PER_S = {"hash": 0.07, "sorted": 0.009}
#: The disk reference: a write and two cold reads of the large run's bytes.
_FALLBACK_DISK_MB_PER_S = 500.0


def estimate_seconds(
    plan: list[tuple[str, str, int, int]], variants: int, previous: dict[str, Any] | None
) -> float:
    """How long the invocation should take: each planned ``(name, shuffle, size,
    repeat)`` at the speed the previous results file measured for it (else
    :data:`_FALLBACK_GIB_PER_S`), ``variants`` small hash runs more, and the
    disk reference."""
    speeds = dict(_FALLBACK_GIB_PER_S)
    disk = _FALLBACK_DISK_MB_PER_S
    if previous:
        for shuffle in speeds:
            seen = [
                r["gib_per_s"]
                for key, rs in previous.get("runs", {}).items()
                if key.endswith(shuffle)
                for r in rs
                if r.get("gib_per_s")
            ]
            if seen:
                speeds[shuffle] = min(seen)
        disk = min(
            (v for k, v in (previous.get("disk") or {}).items() if k.endswith("_mb_per_s")),
            default=disk,
        )
    total = sum(size / 2**30 / speeds[shuffle] * repeat for _, shuffle, size, repeat in plan)
    small = min((size for _, _, size, _ in plan), default=0)
    total += variants * small / 2**30 / speeds["hash"]
    large = max((size for _, _, size, _ in plan), default=0)
    total += 3 * large * 1.05 / (disk * 1e6)
    return total


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shuffle-dir", default=default_shuffle_dir())
    p.add_argument("--small", default="4GiB")
    p.add_argument("--large", default="32GiB")
    p.add_argument("--small-repeat", type=int, default=3, help="runs at the small size (median)")
    p.add_argument("--shuffles", default="hash,sorted")
    p.add_argument(
        "--sorted-reducer",
        choices=("record", "batch", "pieces"),
        default="record",
        help="the sorted runs' reducer: reducer(key, values) per key (default, as most "
        "jobs reduce), reduce_batch over whole partitions, or reduce_batch over pieces of "
        "whole keys within the reducer's memory (REDUCE_BATCH_PIECES)",
    )
    p.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="skip the small hash run through each read path (mmap, fadvise, pread, advise, auto), "
        "with the page cache kept and dropped before the reduce stage",
    )
    p.add_argument("--min-free", default="10GB", help="free space to keep (default: 10GB)")
    p.add_argument("--out", default=str(RESULTS / "beyond_memory.json"))
    a = p.parse_args(argv)
    small, large = parse_size(a.small), parse_size(a.large)
    keep_free = parse_size(a.min_free)
    os.makedirs(a.shuffle_dir, exist_ok=True)
    report = progress.Progress()
    result: dict[str, Any] = {
        "bench": "beyond_memory",
        "commit": _commit(),
        "small": a.small,
        "large": a.large,
        "sorted_reducer": a.sorted_reducer,
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    plan = [
        (name, shuffle, size, repeat)
        for shuffle in a.shuffles.split(",")
        for name, size, repeat in (("small", small, a.small_repeat), ("large", large, 1))
    ]
    previous = None
    if Path(a.out).exists():
        with contextlib.suppress(ValueError, OSError):
            previous = json.loads(Path(a.out).read_text())
    eta = estimate_seconds(plan, 8 if a.variants else 0, previous)
    print(
        f"== {sum(r for *_, r in plan)} runs ({', '.join(f'{n} {s} x{r}' for n, s, _, r in plan)})"
        + (", 8 read-path variants" if a.variants else "")
        + f" and the disk reference: about {eta / 60:.0f} minutes at the speeds of "
        + ("the previous results" if previous else "issue 25's runs")
        + f"; load now {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    # Map outputs are about 4% larger than the rows (Arrow framing, offsets).
    for name, shuffle, size, repeat in plan:
        _check_space(a.shuffle_dir, int(size * 1.1), keep_free, f"the {name} {shuffle} run")
        print(f"== {name} {shuffle}: {size / 2**30:.0f} GiB", file=sys.stderr, flush=True)
        runs[f"{name}-{shuffle}"] = run_one(
            size,
            shuffle == "sorted",
            a.shuffle_dir,
            repeat,
            report,
            record_reducer=shuffle == "sorted" and a.sorted_reducer == "record",
            pieces=shuffle == "sorted" and a.sorted_reducer == "pieces",
        )
    if a.variants:
        result["read_variants"] = read_variants(small, a.shuffle_dir, report)
    large_bytes = max(
        r["shuffle_bytes"] for k, rs in runs.items() if k.startswith("large") for r in rs
    )
    _check_space(a.shuffle_dir, large_bytes, keep_free, "the disk reference")
    print("== disk reference", file=sys.stderr, flush=True)
    disk = disk_reference(a.shuffle_dir, large_bytes)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["disk"] = disk
    result["runs"] = runs
    result["summary"] = summarise(runs, disk)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    try:
        plot(result, Path(a.out).with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return 0 if all(s["verified"] for s in result["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
