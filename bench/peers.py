"""Peer contestants for ``bench/compare_shuffle.py``: Ray Data and Dask shuffling the same rows.

    python -m bench.peers --size 128MiB --contestant dask-p2p [--workers 2]

Each contestant is a function ``(size, workers) -> dict`` with the keys of
``compare_shuffle.lower_bound``: ``seconds``, ``map_seconds``,
``reduce_seconds``, ``rows``, ``verified``. The peers run their map and
reduce sides as one pipelined (Ray Data: streaming) or one scheduler-driven
(Dask) computation that the driver cannot cut into stages, so
``map_seconds`` and ``reduce_seconds`` are ``None`` and ``seconds`` is the
whole shuffle.

- ``ray-data-hash``: Ray Data hash shuffle by key,
  ``ds.repartition(16, keys=["key"])`` under ``DataContext.shuffle_strategy =
  ShuffleStrategy.SHUFFLE_V2`` (Ray's default strategy: hash-partitioning map
  tasks into the object store, one reduce task per partition that concatenates
  it into one block), Ray's other defaults kept (zstd-compressed shuffle
  shards, object store in memory, no disk-based shuffle);
- ``ray-data-random``: Ray Data ``random_shuffle(seed=1)`` (16 blocks in, so
  16 out; its ``num_blocks`` argument is gone), a reference point: not by key,
  so it is verified by rows and checksum only;
- ``dask-p2p`` and ``dask-tasks``: ``DataFrame.shuffle(on="key",
  npartitions=16, ignore_index=True, shuffle_method="p2p"`` or ``"tasks")`` on
  a ``distributed.LocalCluster`` (P2P with its defaults, which stage shards on
  local disk).

Fairness rules, the same as for the other contestants:

- Same rows: ``rows = size // 98`` rows from
  ``mrk8s.bench.jobs.shuffle_job.generate_chunk(seed=1, task=t, chunk=c,
  rows=r, key_type="int64", payload_bytes=90)`` with the chunks of
  ``mrk8s.bench.shuffle_bench.task_chunks(rows, 16, 98)``: 16 input partitions (one per map
  task ``t``) -> 16 output partitions. The rows are generated inside the
  peer's workers (Ray tasks, Dask worker processes), as mrk8s's and the lower
  bound's map tasks do, and the generation is inside the timed section.
- ``workers`` processes with one CPU each: ``ray.init(num_cpus=workers)``, or
  ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)``.
  Starting the cluster is not timed; it is warmed up with a tiny run of the
  same pipeline (so worker processes exist and have imported pyarrow, pandas
  and mrk8s) and shut down after the measured run. Ray runs shuffle map and
  reduce tasks in worker processes of their own, which by default it kills
  after 1 s idle (it keeps only ``num_cpus`` idle workers): without
  ``_system_config`` raising ``num_workers_soft_limit`` and
  ``idle_worker_killing_time_threshold_ms`` every measured run would start
  fresh worker processes (about 9 s here, more than the shuffle itself).
- Every output partition is materialised whole in worker memory and checked
  there: Ray's reduce output block goes through a ``map_batches(...,
  batch_format="pyarrow", batch_size=None)`` task, a Dask output partition
  through ``map_partitions``. Only per-partition results (rows, checksum,
  partition ids) travel to the driver, where they are summed.
- Dask partitions are pandas DataFrames with ``key`` as numpy int64 and
  ``payload`` as ``pd.ArrowDtype(pa.binary())``: converted from the generated
  Arrow tables without copying, and cheap for P2P (which moves Arrow tables);
  Python ``bytes`` objects (object dtype) would cost a Python object per row.
  ``ignore_index=True``: the rows travel without a pandas index, as they do
  in the other contestants.

What ``verified`` checks:

- the output holds exactly ``rows`` rows, and its checksum
  (``shuffle_job.checksum(table, 90)``: row count and exact sums of the low and
  high halves of a 64-bit hash of the key and the payload's first and last 8
  bytes, so order-independent and additive) summed over the output partitions
  equals the checksum of the generated rows, computed independently in the
  driver after the clock stops, chunk by chunk per input partition;
- for the by-key shuffles, that the rows were placed by key: every output
  partition holds rows of one partition id only, by the peer's own partition
  function applied to its keys (Ray Data: ``_hash_partition_vectorized`` of
  ``ray.data._internal.arrow_ops.transform_pyarrow``; Dask:
  ``AssignPartitioningIndex.operation``), so rows with equal keys, which get
  equal ids, cannot be in two partitions. For Dask the id must also equal the
  output partition's number; for Ray, which does not expose the partition
  number on a block, the 16 output blocks must carry 16 distinct ids. (The
  generated keys are random 64-bit integers, practically all distinct, so a
  check for a key seen in two partitions would pass even for a random
  shuffle; the partition-id check would not.)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

MAPS = REDUCERS = 16
PAYLOAD = 90
ROW_BYTES = 8 + PAYLOAD
SEED = 1
WARMUP_SIZE = 64 << 10


class Part(NamedTuple):
    """One output partition, as checked where it was materialised."""

    rows: int
    lo: int  # checksum: sum of the low halves of the row hashes
    hi: int  # and of the high halves
    pid_min: int  # smallest and largest partition id of its rows (-1: not checked)
    pid_max: int
    number: int = -1  # the output partition's number, where the peer tells it


def _chunks(size: int) -> tuple[int, list[list[int]]]:
    from mrk8s.bench.shuffle_bench import task_chunks

    rows = size // ROW_BYTES
    return rows, task_chunks(rows, MAPS, ROW_BYTES)


def _generate(task: int, chunks: list[int]) -> Iterator[pa.Table]:
    from mrk8s.bench.jobs.shuffle_job import generate_chunk

    for chunk, rows in enumerate(chunks):
        yield generate_chunk(
            seed=SEED, task=task, chunk=chunk, rows=rows, key_type="int64", payload_bytes=PAYLOAD
        )


def _check(table: pa.Table, pids: np.ndarray | None) -> Part:
    from mrk8s.bench.jobs.shuffle_job import checksum

    rows, lo, hi = checksum(table, PAYLOAD)
    if pids is None or not len(pids):
        return Part(rows, lo, hi, -1, -1)
    return Part(rows, lo, hi, int(pids.min()), int(pids.max()))


@functools.cache
def expected_checksum(size: int) -> tuple[int, int, int]:
    """The generated rows' checksum, summed over every chunk of every input partition."""
    from mrk8s.bench.jobs.shuffle_job import checksum

    _, chunks = _chunks(size)
    total = [0, 0, 0]
    for task, sizes in enumerate(chunks):
        for table in _generate(task, sizes):
            for i, v in enumerate(checksum(table, PAYLOAD)):
                total[i] += v
    return total[0], total[1], total[2]


def _result(
    seconds: float, size: int, parts: list[Part], placement: Callable[[list[Part]], bool] | None
) -> dict[str, Any]:
    rows, _ = _chunks(size)
    got = (sum(p.rows for p in parts), sum(p.lo for p in parts), sum(p.hi for p in parts))
    ok = got[0] == rows and got == expected_checksum(size)
    if placement is not None:
        ok = ok and placement(parts)
    return {
        "seconds": round(seconds, 3),
        # The peers pipeline map and reduce inside one computation: no stage
        # boundary the driver can time.
        "map_seconds": None,
        "reduce_seconds": None,
        "rows": got[0],
        "verified": bool(ok),
    }


# -- Ray Data ---------------------------------------------------------------------------


def _ray_generate(batch: pa.Table, chunks: list[list[int]]) -> Iterator[pa.Table]:
    # One block per input partition (its chunks, not copied): 16 blocks in, as
    # random_shuffle's output has as many blocks as its input.
    for task in batch.column("id").to_pylist():
        yield pa.concat_tables(_generate(task, chunks[task]))


def _ray_check(block: pa.Table, by_key: bool) -> pa.Table:
    pids = None
    if by_key:
        from ray.data._internal.arrow_ops.transform_pyarrow import _hash_partition_vectorized

        # Ray's own partition function, as its shuffle map tasks apply it.
        pids = np.asarray(_hash_partition_vectorized(block.select(["key"]), REDUCERS))
    part = _check(block, pids)
    return pa.table({n: pa.array([v], pa.int64()) for n, v in part._asdict().items()})


def _ray_pipeline(size: int, by_key: bool) -> list[Part]:
    import ray.data

    _, chunks = _chunks(size)
    ds = ray.data.range(MAPS, override_num_blocks=MAPS).map_batches(
        _ray_generate, batch_format="pyarrow", batch_size=None, fn_kwargs={"chunks": chunks}
    )
    ds = ds.repartition(REDUCERS, keys=["key"]) if by_key else ds.random_shuffle(seed=SEED)
    # batch_size=None: each output block (one whole partition) is one batch.
    checked = ds.map_batches(
        _ray_check,
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
        fn_kwargs={"by_key": by_key},
    )
    return [Part(**r) for r in checked.take_all() if r["rows"]]


def _ray_placement(parts: list[Part]) -> bool:
    # One partition id per output block, and the 16 blocks 16 different ids.
    pids = sorted(p.pid_min for p in parts)
    return all(p.pid_min == p.pid_max for p in parts) and pids == list(range(REDUCERS))


def ray_system_config(workers: int) -> dict[str, int]:
    """Ray's worker-process settings for the Ray Data peers (see the comment in
    :func:`_ray_run`); a cluster started elsewhere must be started with them."""
    return {"num_workers_soft_limit": 4 * workers, "idle_worker_killing_time_threshold_ms": 600_000}


def _ray_run(size: int, workers: int, by_key: bool, address: str | None = None) -> dict[str, Any]:
    """One warm-up and one measured run; on ``ray.init(num_cpus=workers)``, or on the
    running cluster at ``address`` (started with :func:`ray_system_config`)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data
    from ray.data.context import ShuffleStrategy

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Two notices that are warnings only by level: token auth on, progress bars off.
    for name in (
        "ray._private.authentication.authentication_token_setup",
        "ray.data._internal.progress",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",  # its own Ray, not one running on this machine
            num_cpus=workers,
            log_to_driver=False,
            include_dashboard=False,
            logging_level=logging.WARNING,
            # Ray Data runs shuffle map and reduce tasks in worker processes of
            # their own (a runtime_env each), beside the ones for ordinary tasks.
            # Ray keeps only num_cpus idle workers and kills the rest after 1 s,
            # so every run would start new worker processes (several seconds
            # here). Keeping them lets the warm-up leave a warm pool, as the
            # other contestants have; at most num_cpus tasks still run at once.
            _system_config=ray_system_config(workers),
        )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.shuffle_strategy = ShuffleStrategy.SHUFFLE_V2
        ctx.use_disk_based_hash_shuffle = False
        _ray_pipeline(WARMUP_SIZE, by_key)
        started = time.perf_counter()
        parts = _ray_pipeline(size, by_key)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    return _result(seconds, size, parts, _ray_placement if by_key else None)


def ray_data_hash(size: int, workers: int) -> dict[str, Any]:
    """Ray Data hash shuffle by key: ``repartition(16, keys=["key"])``."""
    return _ray_run(size, workers, by_key=True)


def ray_data_random(size: int, workers: int) -> dict[str, Any]:
    """Ray Data ``random_shuffle`` into 16 blocks (not by key; a reference point)."""
    return _ray_run(size, workers, by_key=False)


# -- Dask -----------------------------------------------------------------------------------


def _dask_meta() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "key": pd.Series([], dtype="int64"),
            "payload": pd.Series([], dtype=pd.ArrowDtype(pa.binary())),
        }
    )


def _dask_generate(task: int, chunks: list[list[int]]) -> Any:
    import pandas as pd

    table = pa.concat_tables(_generate(task, chunks[task]))
    # key stays numpy int64, payload an Arrow-backed column (no copy, no Python objects).
    return table.to_pandas(types_mapper={pa.binary(): pd.ArrowDtype(pa.binary())}.get)


def _dask_check(df: Any, partition_info: dict[str, Any] | None = None) -> Any:
    import pandas as pd
    from dask.dataframe.dask_expr._shuffle import AssignPartitioningIndex

    # Dask's own partition function, as its shuffles apply it to the "on" columns.
    pids = AssignPartitioningIndex.operation(df, ["key"], "_p", REDUCERS, df.iloc[:0], False)
    part = _check(pa.Table.from_pandas(df, preserve_index=False), pids["_p"].to_numpy())
    part = part._replace(number=-1 if partition_info is None else partition_info["number"])
    return pd.DataFrame({n: [v] for n, v in part._asdict().items()})


def _dask_pipeline(client: Any, size: int, method: str) -> list[Part]:
    import dask.dataframe as dd
    import pandas as pd

    _, chunks = _chunks(size)
    ddf = dd.from_map(
        _dask_generate, range(MAPS), args=(chunks,), meta=_dask_meta(), enforce_metadata=False
    )
    shuffled = ddf.shuffle(on="key", npartitions=REDUCERS, ignore_index=True, shuffle_method=method)
    meta = pd.DataFrame({n: pd.Series([], dtype="int64") for n in Part._fields})
    checked = shuffled.map_partitions(_dask_check, partition_info=True, meta=meta)
    frame = client.compute(checked).result()
    return [Part(**{n: int(r[n]) for n in Part._fields}) for _, r in frame.iterrows() if r["rows"]]


def _dask_placement(parts: list[Part]) -> bool:
    # Every row of output partition i has Dask's partition id i, for all 16 partitions.
    numbers = sorted(p.number for p in parts)
    return all(p.pid_min == p.pid_max == p.number for p in parts) and numbers == list(
        range(REDUCERS)
    )


def _dask_run(size: int, workers: int, method: str) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    # P2P's scheduler plugin logs every shuffle's start and end as a warning.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    try:
        with Client(cluster) as client:
            _dask_pipeline(client, WARMUP_SIZE, method)
            started = time.perf_counter()
            parts = _dask_pipeline(client, size, method)
            seconds = time.perf_counter() - started
    finally:
        cluster.close()
    return _result(seconds, size, parts, _dask_placement)


def dask_p2p(size: int, workers: int) -> dict[str, Any]:
    """Dask ``shuffle(on="key", shuffle_method="p2p")``."""
    return _dask_run(size, workers, "p2p")


def dask_tasks(size: int, workers: int) -> dict[str, Any]:
    """Dask ``shuffle(on="key", shuffle_method="tasks")``."""
    return _dask_run(size, workers, "tasks")


CONTESTANTS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "ray-data-hash": ray_data_hash,
    "ray-data-random": ray_data_random,
    "dask-p2p": dask_p2p,
    "dask-tasks": dask_tasks,
}


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256MiB")
    p.add_argument("--contestant", choices=sorted(CONTESTANTS), required=True)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    size = parse_size(args.size)
    row = {"contestant": args.contestant, "size": args.size}
    row |= CONTESTANTS[args.contestant](size, args.workers)
    row["gib_per_s"] = round(size / 2**30 / row["seconds"], 3)
    print(json.dumps(row), flush=True)
    return 0 if row["verified"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
