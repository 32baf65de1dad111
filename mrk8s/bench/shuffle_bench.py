"""``mrk8s bench shuffle``: shuffle throughput of the real engine, verified.

Each run is an ordinary job (:mod:`mrk8s.bench.jobs.shuffle_job`) run by the
ordinary :class:`mrk8s.engine.driver.Driver` on the chosen backend: the same plan,
map-output files, commit records, placement and merge as ``mrk8s run``. Its
only input is one tiny seed file per map task, written into the job's own
directory: an Arrow IPC file with one record batch per chunk of rows the task
must generate. Arrow files are never cut into several splits and their
record batches reach ``map_batch`` one at a time, so ``--maps`` is exactly
the number of map tasks and a map task holds one chunk of generated rows at
a time, whatever ``--size``.

The reduce side materialises each partition in memory and checks it against
what the map side generated for it (row count and an order-independent
checksum, :func:`verify`), writing nothing, as the peers in the issue-3
comparison do. ``--write-output`` then runs the same job again writing
Parquet parts, and reports that run's cost separately.

One JSON line per run goes to stdout; progress to stderr. The exit status is
1 when any run fails verification.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from mrk8s.bench import benchstats, cost
from mrk8s.bench import jobs as benchjobs
from mrk8s.bench.jobs import shuffle_job
from mrk8s.engine import progress
from mrk8s.engine.driver import Driver, new_job_id
from mrk8s.engine.executors import make_executor
from mrk8s.engine.settings import (
    KubernetesSettings,
    RunSettings,
    check_reachable_by_workers,
    default_shuffle_dir,
    parse_size,
)
from mrk8s.errors import UsageError
from scheduler.stage import Executor, TaskEvent
from shuffle import storecount
from shuffle.store import UPLOAD_PART_BYTES, FsspecStore, join

JOB_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(benchjobs.__file__)), "shuffle_job.py")
JOB_CLASS = "ShuffleBench"
SORTED_JOB_CLASS = "SortedShuffleBench"
RECORD_JOB_CLASS = "SortedRecordShuffleBench"
PIECES_JOB_CLASS = "SortedPiecesShuffleBench"

#: Rows a map task generates per map_batch call: large enough that per-call
#: costs vanish, small enough that generation never holds much memory (the
#: map side's sort buffer, an eighth of --memory-per-worker, decides the rest).
CHUNK_BYTES = 8 << 20

#: Size of the warm-up job: every map and reduce task runs, on little data.
WARMUP_BYTES = 1 << 20

EXIT_UNVERIFIED = 1


@dataclass(frozen=True)
class ShuffleBenchSettings:
    """What ``mrk8s bench shuffle`` was asked to do."""

    size: int = 1 << 30
    """Bytes of rows to generate and shuffle (key and payload bytes)."""
    maps: int = 16
    """Map tasks; each generates its share of the rows."""
    reducers: int = 16
    """Reduce tasks (partitions)."""
    key_type: str = "int64"
    """int64, or string (16 hex digits)."""
    payload_bytes: int = 90
    """Random bytes per row besides the key."""
    repeat: int = 3
    """Runs, one JSON line each, on the same worker pool."""
    write_output: str | None = None
    """None: no output; "": also write Parquet parts to a temporary dir; else that URL."""
    seed: int = 0
    """Seed of the generated rows."""
    warmup: bool = True
    """Run a small job first, unmeasured, so that workers have imported everything."""
    sort_keys: bool = False
    """Sort each partition by key (the sorted shuffle) instead of a hash shuffle."""
    record_reducer: bool = False
    """With ``sort_keys``: reduce with a record reducer, ``reducer(key, values)``,
    instead of ``reduce_batch``."""
    pieces: bool = False
    """With ``sort_keys``: ``reduce_batch`` takes each partition in pieces of whole
    keys within the reducer's memory (``REDUCE_BATCH_PIECES``), not as one table."""
    drop_caches: bool = False
    """Drop the map outputs from the page cache before the reduce stage (cold reads)."""
    tamper: bool = False
    """Test hook: every reducer drops a row, which verification must report."""
    run: RunSettings = field(default_factory=lambda: RunSettings(script=JOB_SCRIPT))
    """Backend, workers, shuffle dir, storage options, memory budget."""
    prices: cost.Prices = field(default_factory=cost.Prices)
    """Prices of the cost projection printed after each run (:mod:`mrk8s.bench.cost`)."""

    @property
    def row_bytes(self) -> int:
        return shuffle_job.key_bytes(self.key_type) + self.payload_bytes

    @property
    def rows(self) -> int:
        return self.size // self.row_bytes


def task_chunks(rows: int, maps: int, row_bytes: int) -> list[list[int]]:
    """Rows of each chunk of each map task: the rows shared as evenly as they go."""
    chunk = max(1, min(shuffle_job.MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes))
    out = []
    for task in range(maps):
        n = rows // maps + (1 if task < rows % maps else 0)
        out.append([min(chunk, n - start) for start in range(0, n, chunk)])
    return out


def write_seeds(store: FsspecStore, chunks: Sequence[Sequence[int]]) -> list[str]:
    """One Arrow IPC file per map task, one record batch per chunk; their URLs."""
    schema = pa.schema([("task", pa.int64()), ("chunk", pa.int64()), ("rows", pa.int64())])
    urls = []
    for task, sizes in enumerate(chunks):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, schema) as writer:
            for chunk, rows in enumerate(sizes):
                writer.write_batch(pa.record_batch([[task], [chunk], [rows]], schema=schema))
        path = f"seeds/map-{task:05d}.arrow"
        store.write_bytes(path, sink.getvalue().to_pybytes())
        urls.append(store.url(path))
    return urls


def expected_counters(bench: ShuffleBenchSettings) -> dict[str, int]:
    """What each partition should receive, as the job's "map" counters would name it.

    Generates every chunk of rows again (they are a function of the seed) and
    checksums it by partition: the verification's side, never timed. Map tasks
    are done in parallel, one process per CPU (at 32 GiB, one process took
    minutes), and the answer is kept for a later run of the same rows (the
    sorted and the hash shuffle of one size share it).
    """
    key = (bench.seed, bench.rows, bench.maps, bench.reducers, bench.key_type, bench.payload_bytes)
    if key not in _EXPECTED:
        chunks = task_chunks(bench.rows, bench.maps, bench.row_bytes)
        task_bytes = max(sum(c) for c in chunks) * bench.payload_bytes
        jobs = [(key, task, sizes, task_bytes) for task, sizes in enumerate(chunks)]
        group: dict[str, int] = {}
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers > 1 and bench.rows * bench.row_bytes > 64 << 20:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                parts = list(pool.map(_task_expected, jobs))
        else:
            parts = [_task_expected(job) for job in jobs]
        for part in parts:
            for name, value in part.items():
                group[name] = group.get(name, 0) + value
        _EXPECTED.clear()
        _EXPECTED[key] = group
    return dict(_EXPECTED[key])


_EXPECTED: dict[tuple[Any, ...], dict[str, int]] = {}


def _task_expected(job: tuple[tuple[Any, ...], int, Sequence[int], int]) -> dict[str, int]:
    """One map task's share of :func:`expected_counters`."""
    (seed, _, _, reducers, key_type, payload_bytes), task, sizes, task_bytes = job
    group: dict[str, int] = {}
    for chunk, rows in enumerate(sizes):
        table = shuffle_job.generate_chunk(
            seed=seed,
            task=task,
            chunk=chunk,
            rows=rows,
            key_type=key_type,
            payload_bytes=payload_bytes,
            task_bytes=task_bytes,
        )
        sums = shuffle_job.partition_checksums(table, payload_bytes, reducers)
        for p in np.flatnonzero(sums[0]).tolist():
            for what, values in zip(_SUMS, sums, strict=True):
                name = shuffle_job.counter_name(p, "map", what)
                group[name] = group.get(name, 0) + int(values[p])
    return group


def verify(
    counters: Mapping[str, Mapping[str, int]], num_partitions: int, expected_rows: int
) -> list[str]:
    """What is wrong with a run, from its counters: [] when every partition checks out.

    Per partition, the rows generated for it and the sums of their hashes
    (the "map" counters, :func:`expected_counters`) must equal what its
    reducer received ("reduce"); together they must be ``expected_rows``.
    """
    group = counters.get(shuffle_job.COUNTER_GROUP, {})
    problems = []
    total = 0
    for p in range(num_partitions):
        made, got = (
            tuple(group.get(shuffle_job.counter_name(p, side, w), 0) for w in _SUMS)
            for side in ("map", "reduce")
        )
        total += made[0]
        if made != got:
            problems.append(
                f"partition {p}: the map tasks generated {_describe(made)}, its reducer got "
                f"{_describe(got)}"
            )
    stray = sorted(
        name for name in group if name.startswith("p") and int(name[1:6]) >= num_partitions
    )
    if stray:
        problems.append(f"counters of partitions that do not exist: {', '.join(stray)}")
    if total != expected_rows:
        problems.append(f"the map tasks generated {total} rows, not {expected_rows}")
    return problems


_SUMS = ("rows", "sum_lo", "sum_hi")


def _describe(checksum: tuple[int, ...]) -> str:
    rows, lo, hi = checksum
    return f"{rows} rows (hash sums {lo:x}/{hi:x})"


class _BenchProgress(progress.Progress):
    """The CLI's progress, without the job's per-partition counter lines; around each
    stage it measures disk bytes and task memory (:class:`benchstats.StageMonitor`),
    and with ``drop_caches`` it drops the map outputs from the page cache between
    the map and the reduce stage (outside both stages' timings)."""

    def __init__(self, inner: progress.Progress, *, drop_caches: bool = False) -> None:
        self.inner = inner
        self.drop_caches = drop_caches
        self.job_dir: str | None = None  # the local job directory of the job running
        self.stages: dict[str, dict[str, Any]] = {}
        self._monitor: benchstats.StageMonitor | None = None

    def stage_started(
        self, name: str, *, total_tasks: int, done_tasks: int, total_bytes: int
    ) -> None:
        self.inner.stage_started(
            name, total_tasks=total_tasks, done_tasks=done_tasks, total_bytes=total_bytes
        )
        if self.job_dir is not None:
            self._monitor = benchstats.StageMonitor(self.job_dir)
            self._monitor.start()

    def task_event(self, event: TaskEvent) -> None:
        self.inner.task_event(event)

    def stage_finished(self, name: str) -> None:
        stage = name.rsplit(" ", 1)[-1]
        if self._monitor is not None:
            self.stages[stage] = self._monitor.stop()
            self._monitor = None
        if self.job_dir is not None and stage == "map":
            outputs = _map_outputs(self.job_dir)
            sizes = [os.stat(f) for f in outputs]
            self.stages[stage]["output_file_bytes"] = sum(st.st_size for st in sizes)
            # Allocated on disk: less than the sizes when map outputs have holes
            # (the unused room of their regions, see shuffle.mapfile._Regions).
            self.stages[stage]["output_disk_bytes"] = sum(st.st_blocks * 512 for st in sizes)
            if self.drop_caches:
                for path in outputs:
                    drop_from_cache(path)
        self.inner.stage_finished(name)

    def message(self, text: str) -> None:
        if not text.startswith("counter "):
            self.inner.message(text)


def _map_outputs(job_dir: str) -> list[str]:
    """The map-output files under a local job directory."""
    return [
        os.path.join(top, name)
        for top, _, names in os.walk(job_dir)
        for name in names
        if name.startswith("map-") and name.endswith(".arrow")
    ]


def drop_from_cache(path: str) -> None:
    """Write ``path`` back, then drop its pages from the page cache (any user may)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _job_class(bench: ShuffleBenchSettings) -> str:
    if not bench.sort_keys:
        return JOB_CLASS
    if bench.record_reducer:
        return RECORD_JOB_CLASS
    return PIECES_JOB_CLASS if bench.pieces else SORTED_JOB_CLASS


def _run_job(
    bench: ShuffleBenchSettings,
    executor: Executor,
    report: _BenchProgress,
    output: str | None,
    expected: Mapping[str, int],
) -> dict[str, Any]:
    """One job: seeds, the driver, verification; its measurements."""
    base = bench.run
    job_id = new_job_id("bench-shuffle")
    store = FsspecStore(join(base.shuffle_dir, job_id), base.storage_options)
    chunks = task_chunks(bench.rows, bench.maps, bench.row_bytes)
    storecount.take()  # from here on, this process's requests are the job's (its driver's)
    started = time.perf_counter()
    seeds = write_seeds(store, chunks)
    settings = replace(
        base,
        script=JOB_SCRIPT,
        inputs=tuple(seeds),
        output=output,
        output_format="parquet" if output is not None else "text",
        overwrite=True,
        job_class=_job_class(bench),
        job_id=job_id,
        reducers=bench.reducers,
        job_args={
            "num_reducers": bench.reducers,
            "key_type": bench.key_type,
            "payload_bytes": bench.payload_bytes,
            "seed": bench.seed,
            "task_bytes": max(sum(c) for c in chunks) * bench.payload_bytes,
            "write_output": output is not None,
            "tamper": bench.tamper,
        },
    )
    report.job_dir = store.local_path("")
    report.stages = {}
    load_before = _load_average()
    try:
        result = Driver(settings, progress=report).run(executor, stdout=io.BytesIO())
    finally:
        report.job_dir = None
    wall = time.perf_counter() - started
    driver_sent = storecount.take()
    summary = result.summary
    stages = summary["stages"]
    timings = summary["timings"]
    timed = summary["counters"].get(shuffle_job.COUNTER_GROUP, {})
    counters = {**summary["counters"], shuffle_job.COUNTER_GROUP: {**timed, **expected}}
    problems = verify(counters, bench.reducers, bench.rows)
    seconds = timings.get("s0-map", 0.0) + timings.get("s0-reduce", 0.0)
    data_bytes = bench.rows * bench.row_bytes
    return {
        "job_id": job_id,
        "rows": bench.rows,
        "bytes": data_bytes,
        "shuffle_bytes": summary["shuffle_bytes"],
        "seconds": round(seconds, 3),
        "mb_per_s": round(data_bytes / seconds / 1e6, 1) if seconds else None,
        "gib_per_s": round(data_bytes / seconds / 2**30, 3) if seconds else None,
        "map_seconds": timings.get("s0-map"),
        "reduce_seconds": timings.get("s0-reduce"),
        "wall_seconds": round(wall, 3),
        "peak_rss_max": max(s["peak_rss_max"] for s in stages.values()),
        "map_peak_rss_max": stages["step0-map"]["peak_rss_max"],
        "reduce_peak_rss_max": stages["step0-reduce"]["peak_rss_max"],
        "map_spills": stages["step0-map"]["spills"],
        "map_tasks": stages["step0-map"]["tasks"],
        "reduce_tasks": stages["step0-reduce"]["tasks"],
        "locality": summary["locality"],
        "locality_best": summary["locality_best"],
        "shuffle_bytes_remote": summary["shuffle_bytes_remote"],
        # CPU seconds summed over tasks, inside the map and reduce seconds above.
        "generate_task_seconds": round(timed.get("map generate ns", 0) / 1e9, 3),
        "checksum_task_seconds": round(timed.get("reduce checksum ns", 0) / 1e9, 3),
        "output_rows": stages["step0-reduce"]["records_out"],
        **_stage_figures(report.stages, timings),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "output_bytes": stages["step0-reduce"]["bytes_out"],
        **_store_figures(bench, store, summary, driver_sent, seconds, data_bytes),
        "verified": not problems,
        "problems": problems[:10],
    }


def _store_figures(
    bench: ShuffleBenchSettings,
    store: FsspecStore,
    summary: Mapping[str, Any],
    driver_sent: Mapping[str, int],
    seconds: float,
    data_bytes: int,
) -> dict[str, Any]:
    """The object-store requests of a job and its projected cost per TB.

    Measured where the store's requests are counted (an s3fs store): the
    tasks' ``store`` counters plus what the driver (this process) sent,
    seeds included. Otherwise (local disk; Arrow's S3 client, whose requests
    cannot be seen) derived from the plan: :func:`cost.derived_requests`.
    """
    map_stage = summary["stages"]["step0-map"]
    tasks_sent = summary["counters"].get(storecount.COUNTER_GROUP, {})
    measured = storecount.is_watched(store.fs)
    if measured:
        sent = {
            k: tasks_sent.get(k, 0) + driver_sent.get(k, 0) for k in (*tasks_sent, *driver_sent)
        }
    else:
        per_map = map_stage["bytes_out"] // max(1, bench.maps)
        sent = cost.derived_requests([per_map] * bench.maps, bench.reducers, UPLOAD_PART_BYTES)
    requests = {k: sent.get(k, 0) for k in storecount.KINDS if sent.get(k)}
    source = "measured" if measured else "derived"
    projection = (
        cost.project(
            cost.Measured(
                bytes=data_bytes,
                seconds=seconds,
                stored_bytes=map_stage["bytes_out"],
                requests=requests,
                requests_source=source,
            ),
            bench.prices,
        )
        if seconds > 0
        else None
    )
    return {
        "store_requests": requests,
        "store_requests_total": sum(requests.values()),
        "store_requests_source": source,
        "store_requests_driver": {k: v for k, v in driver_sent.items() if k in storecount.KINDS}
        if measured
        else None,
        "store_bytes_written": sent.get(storecount.BYTES_WRITTEN) if measured else None,
        "store_bytes_read": sent.get(storecount.BYTES_READ) if measured else None,
        "cost_per_tb": projection.to_json() if projection is not None else None,
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _stage_figures(
    stages: Mapping[str, Mapping[str, Any]], timings: Mapping[str, float]
) -> dict[str, Any]:
    """Per stage: disk bytes read and written, peak anonymous and file-backed memory."""
    out: dict[str, Any] = {}
    for stage in ("map", "reduce"):
        figures = stages.get(stage, {})
        for key in benchstats.FIGURES:
            out[f"{stage}_{key}"] = figures.get(key)
    out["map_output_file_bytes"] = stages.get("map", {}).get("output_file_bytes")
    out["map_output_disk_bytes"] = stages.get("map", {}).get("output_disk_bytes")
    anon = [out[f"{s}_peak_anon_max"] for s in ("map", "reduce")]
    out["peak_anon_max"] = max((a for a in anon if a is not None), default=None)
    read, seconds = out["reduce_disk_read_bytes"], timings.get("s0-reduce")
    out["reduce_disk_read_mb_per_s"] = (
        round(read / seconds / 1e6, 1) if read is not None and seconds else None
    )
    return out


def run_shuffle_bench(
    bench: ShuffleBenchSettings, report: progress.Progress | None = None
) -> list[dict[str, Any]]:
    """Run the benchmark ``bench.repeat`` times on one worker pool; one dict per run.

    Each result is also printed as a JSON line as soon as its run ends.
    """
    report = _BenchProgress(report or progress.Progress(), drop_caches=bench.drop_caches)
    results = []
    base = bench.run
    workers = base.num_workers() if base.backend == "local" else base.workers
    executor = make_executor(
        base.backend,
        workers,
        ray_address=base.ray_address,
        kubernetes=base.kubernetes,
        memory_per_worker=base.memory_per_worker,
    )
    with executor:
        if bench.warmup:
            # Workers import pyarrow, numpy and the job on their first task; a
            # long-lived cluster has done so before anyone measures it.
            report.message("warm-up run (not measured)")
            small = replace(bench, size=min(bench.size, WARMUP_BYTES))
            _run_job(small, executor, report, None, expected_counters(small))
        report.message("checksumming the rows each partition should get (not timed)")
        expected = expected_counters(bench)
        for run in range(1, bench.repeat + 1):
            report.message(f"run {run}/{bench.repeat}")
            line: dict[str, Any] = {
                "bench": "shuffle",
                "run": run,
                "key_type": bench.key_type,
                "payload_bytes": bench.payload_bytes,
                "shuffle": "sorted" if bench.sort_keys else "hash",
                "reducer": "record"
                if bench.record_reducer
                else "reduce_batch_pieces"
                if bench.pieces
                else "reduce_batch",
                "memory_per_worker": bench.run.memory_per_worker,
                "maps": bench.maps,
                "reducers": bench.reducers,
                "backend": bench.run.backend,
                "workers": bench.run.num_workers(),
                "placement": bench.run.placement,
                "shuffle_dir": bench.run.shuffle_dir,
            }
            measured = _run_job(bench, executor, report, None, expected)
            measured.pop("output_rows")
            measured.pop("output_bytes")
            line.update(measured)
            if bench.write_output is not None:
                line["output"] = _run_with_output(bench, executor, report, measured, expected)
            print(json.dumps(line), flush=True)
            report.message(
                f"run {run}/{bench.repeat}: {line['bytes'] / 2**20:.1f} MiB in "
                f"{line['seconds']} s, {line['mb_per_s']} MB/s, "
                + ("verified" if line["verified"] else "VERIFICATION FAILED")
            )
            if line["cost_per_tb"] is not None:
                report.message(f"run {run}/{bench.repeat}: {_describe_cost(line['cost_per_tb'])}")
            for problem in line["problems"]:
                report.message(f"  {problem}")
            results.append(line)
    return results


def _describe_cost(projection: Mapping[str, Any]) -> str:
    """The projection's line for people (:meth:`cost.Projection.describe`)."""
    return cost.Projection(**projection).describe()


def _run_with_output(
    bench: ShuffleBenchSettings,
    executor: Executor,
    report: _BenchProgress,
    without: Mapping[str, Any],
    expected: Mapping[str, int],
) -> dict[str, Any]:
    """The same job writing Parquet parts; its cost beside the in-memory run's."""
    temporary = not bench.write_output
    url = bench.write_output or join(bench.run.shuffle_dir, new_job_id("bench-shuffle-output"))
    try:
        measured = _run_job(bench, executor, report, url, expected)
    finally:
        if temporary:
            FsspecStore(url, bench.run.storage_options).remove("", recursive=True)
    problems = list(measured["problems"])
    if measured["output_rows"] != bench.rows:
        problems.append(f"the output has {measured['output_rows']} rows, not {bench.rows}")
    return {
        "url": None if temporary else url,
        "format": "parquet",
        "rows": measured["output_rows"],
        "bytes": measured["output_bytes"],
        "seconds": measured["seconds"],
        "reduce_seconds": measured["reduce_seconds"],
        "wall_seconds": measured["wall_seconds"],
        # What writing the output added to the in-memory run (includes committing it).
        "extra_wall_seconds": round(measured["wall_seconds"] - without["wall_seconds"], 3),
        "verified": not problems,
        "problems": problems[:10],
    }


# -- command line --------------------------------------------------------------


def shuffle_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mrk8s bench shuffle",
        description=(
            "Generate rows in the map tasks, shuffle them through the engine, verify every "
            "partition in memory in the reduce tasks; one JSON line per run on stdout."
        ),
    )
    p.add_argument("--size", default="1GiB", help="bytes of rows (default: %(default)s)")
    p.add_argument("--maps", type=int, default=16, help="map tasks (default: %(default)s)")
    p.add_argument("--reducers", type=int, default=16, help="reduce tasks (default: %(default)s)")
    p.add_argument("--key-type", choices=shuffle_job.KEY_TYPES, default="int64")
    p.add_argument(
        "--payload-bytes", type=int, default=90, help="payload per row (default: %(default)s)"
    )
    p.add_argument(
        "--sorted",
        dest="sort_keys",
        action="store_true",
        help="sort every partition by key (the default shuffle of a job) instead of the "
        "hash shuffle the peers do (SORT_KEYS = False)",
    )
    p.add_argument(
        "--record-reducer",
        action="store_true",
        help="with --sorted: reduce with a record reducer, reducer(key, values), called once "
        "per key, instead of reduce_batch over whole tables",
    )
    p.add_argument(
        "--pieces",
        action="store_true",
        help="with --sorted: reduce_batch gets each partition in pieces of whole keys, "
        "within the reducer's memory (REDUCE_BATCH_PIECES = True), not as one table",
    )
    p.add_argument("--backend", default="local", help="where tasks run (default: local)")
    p.add_argument("-w", "--workers", type=int, help="worker processes (default: CPUs)")
    p.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster of --backend ray (default: start one)"
    )
    k8s = p.add_argument_group("--backend k8s (as mrk8s run takes them)")
    k8s.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig of the cluster")
    k8s.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    k8s.add_argument("--namespace", metavar="NS", default="mrk8s", help="(default: %(default)s)")
    k8s.add_argument("--image", metavar="IMG", help="worker image (default: the released one)")
    k8s.add_argument("--cpu", metavar="Q", default="1", help="CPU of a pod (default: 1)")
    k8s.add_argument(
        "--env-from-secret",
        metavar="SECRET",
        action="append",
        default=[],
        help="a Secret whose keys become the pods' environment (the S3 credentials)",
    )
    k8s.add_argument(
        "--node-local-shuffle",
        action="store_true",
        help="map outputs on the nodes' own disks, served by the mrk8s-shuffle-server "
        "DaemonSet (default: under --shuffle-dir)",
    )
    p.add_argument(
        "--placement",
        choices=("locality", "random"),
        default="locality",
        help="where reducers run: by their data (default) or at random (for comparison)",
    )
    p.add_argument("--shuffle-dir", metavar="URL", default=default_shuffle_dir())
    p.add_argument("--storage-options", metavar="JSON", default="{}")
    p.add_argument(
        "--memory-per-worker", metavar="SIZE", default="1GiB", help="(default: %(default)s)"
    )
    p.add_argument("--repeat", type=int, default=3, help="runs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rows (default: 0)")
    p.add_argument(
        "--write-output",
        nargs="?",
        const="",
        metavar="URL",
        help="after each run, run again writing Parquet parts (to URL, else a temporary "
        "directory) and report that cost separately",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="measure from a cold worker pool (default: an unmeasured small run first)",
    )
    p.add_argument(
        "--drop-caches",
        action="store_true",
        help="between the map and the reduce stage (outside both timings), write the map "
        "outputs back and drop them from the page cache, so that the reducers read from the "
        "disk as they would once the data outgrows memory",
    )
    _add_price_arguments(p)
    p.add_argument("--tamper", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def _add_price_arguments(p: argparse.ArgumentParser) -> None:
    """The cost projection's inputs (defaults and their sources: mrk8s/bench/cost.py)."""
    d = cost.Prices()
    g = p.add_argument_group(
        "cost projection (per TB shuffled; see README, 'What a terabyte would cost')"
    )
    for dest, kind, what in (
        ("node_type", str, "instance type a node stands for"),
        ("node_vcpus", int, "its vCPUs"),
        ("node_hour", float, "on-demand $ per node-hour"),
        ("spot_hour", float, "spot $ per node-hour (an assumption)"),
        ("put_per_1000", float, "$ per 1,000 PUT/COPY/POST/LIST requests"),
        ("get_per_1000", float, "$ per 1,000 GET/HEAD requests"),
        ("storage_gb_month", float, "$ per GB-month stored"),
        ("cluster_nodes", int, "nodes the TB is shuffled on (storage time)"),
    ):
        g.add_argument(
            cost.FLAGS[dest],
            dest=f"price_{dest}",
            type=kind,
            default=getattr(d, dest),
            metavar="N" if kind is not str else "TYPE",
            help=f"{what} (default: %(default)s)",
        )


def prices_from_args(args: argparse.Namespace) -> cost.Prices:
    """The projection's prices from ``--price-*`` and friends; a bad one is a UsageError."""
    prices = cost.Prices(
        **{name: getattr(args, f"price_{name}") for name in cost.Prices.__dataclass_fields__}
    )
    prices.check()
    return prices


def settings_from_args(
    args: argparse.Namespace, storage_options: Mapping[str, Any]
) -> ShuffleBenchSettings:
    for flag, value, least in (
        ("--maps", args.maps, 1),
        ("--reducers", args.reducers, 1),
        ("--repeat", args.repeat, 1),
        ("--payload-bytes", args.payload_bytes, 8),
        ("--workers", args.workers or 1, 1),
    ):
        if value < least:
            raise UsageError(f"{flag} {value}: give at least {least}")
    k8s_given = [
        flag
        for flag, value in (
            ("--kubeconfig", args.kubeconfig),
            ("--context", args.context),
            ("--image", args.image),
            ("--env-from-secret", args.env_from_secret),
            ("--node-local-shuffle", args.node_local_shuffle),
        )
        if value
    ]
    if k8s_given and args.backend != "k8s":
        raise UsageError(f"{', '.join(k8s_given)}: for --backend k8s, not --backend {args.backend}")
    check_reachable_by_workers(args.backend, args.shuffle_dir, None)
    if args.record_reducer and not args.sort_keys:
        raise UsageError(
            "--record-reducer needs --sorted: a record reducer gets each key's values "
            "together, which only the sorted shuffle provides; add --sorted"
        )
    if args.pieces and (not args.sort_keys or args.record_reducer):
        raise UsageError(
            "--pieces needs --sorted and reduce_batch: it cuts a sorted partition into pieces "
            "for reduce_batch (a record reducer streams anyway); add --sorted, drop "
            "--record-reducer"
        )
    bench = ShuffleBenchSettings(
        size=parse_size(args.size, "--size"),
        maps=args.maps,
        reducers=args.reducers,
        key_type=args.key_type,
        payload_bytes=args.payload_bytes,
        repeat=args.repeat,
        write_output=args.write_output,
        seed=args.seed,
        warmup=args.warmup,
        sort_keys=args.sort_keys,
        record_reducer=args.record_reducer,
        pieces=args.pieces,
        drop_caches=args.drop_caches,
        tamper=args.tamper,
        prices=prices_from_args(args),
        run=RunSettings(
            script=JOB_SCRIPT,
            backend=args.backend,
            workers=args.workers,
            ray_address=args.ray_address,
            placement=args.placement,
            shuffle_dir=args.shuffle_dir,
            memory_per_worker=parse_size(args.memory_per_worker, "--memory-per-worker"),
            storage_options=dict(storage_options),
            kubernetes=KubernetesSettings(
                kubeconfig=args.kubeconfig,
                context=args.context,
                namespace=args.namespace,
                cpu=args.cpu,
                env_secrets=tuple(args.env_from_secret),
                node_local=args.node_local_shuffle,
                **({"image": args.image} if args.image else {}),
            ),
        ),
    )
    if bench.rows < 1:
        raise UsageError(
            f"--size {args.size} holds no row of {bench.row_bytes} bytes: give a larger size"
        )
    return bench
