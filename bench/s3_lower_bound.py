"""The S3 lower bound: the least a Python two-stage shuffle through s3fs does.

    python -m bench.compare_shuffle --contestants mrk8s-s3,s3-lower-bound --sizes 256MiB

It does the object-store traffic of mrk8s' S3 shuffle (``--shuffle-dir
s3://...``) and nothing else, through the same client and the same server,
so that ``mrk8s-s3`` is judged against what that server allows:

- map task ``i`` (a process of a pool) generates the same rows as every
  contestant (:func:`mrk8s.bench.jobs.shuffle_job.generate_chunk`), hashes
  the key with numpy and ``take``\\ s the rows into partition order, writes each
  partition as an Arrow IPC stream into one buffer in memory and uploads it as
  ONE object, ``{prefix}/s0/map-{i:05d}.arrow``, with s3fs's ``pipe_file`` in
  :data:`shuffle.store.UPLOAD_PART_BYTES` parts,
  :data:`shuffle.store.UPLOAD_PARTS_IN_FLIGHT` at a time: what mrk8s' upload
  (s3fs's ``put_file`` with the same options) sends. Below two parts s3fs
  sends one PUT instead of a multipart upload, for both;
- the partition index (where each partition's bytes are in each object) comes
  back to this process as the task's return value: no commit records, no
  listing, no HEADs;
- reduce task ``j`` issues one ranged GET per map object whose range for ``j``
  is not empty, for exactly those bytes (s3fs's ``cat_ranges``, all at once),
  decodes the streams, concatenates them and checksums the rows;
- the answer is verified as the other lower bound's (row count and checksum of
  all rows, :func:`bench.peers.expected_checksum`).

No sort, no commit records, no retries, no spill file (a map task holds its
rows and its object in memory), no clean-up inside the timing. A warm-up
round (one row per worker, under another prefix) first creates each worker's
s3fs client, as mrk8s' bench warms its workers up.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from shuffle.store import UPLOAD_PART_BYTES, UPLOAD_PARTS_IN_FLIGHT

MAPS = REDUCERS = 16
PAYLOAD = 90
SEED = 1
ROW_BYTES = 8 + PAYLOAD
MIX = np.uint64(0x9E3779B97F4A7C15)

#: A partition's place in a map object: ``(start, end)`` bytes, ``end == start`` if empty.
Span = tuple[int, int]


def map_key(prefix: str, task: int) -> str:
    """The object map task ``task`` writes under ``prefix`` (``bucket/some/prefix``)."""
    return f"{prefix}/s0/map-{task:05d}.arrow"


def _fs(storage_options: dict[str, Any]) -> Any:
    import s3fs

    # s3fs keeps one instance per process and options: a worker makes its client once.
    return s3fs.S3FileSystem(**storage_options)


def _map(
    task: int,
    chunks: list[int],
    reducers: int,
    prefix: str,
    storage_options: dict[str, Any],
    part_bytes: int,
) -> list[Span]:
    """Generate, partition and upload map task ``task``'s rows; each partition's span."""
    from mrk8s.bench.jobs.shuffle_job import generate_chunk

    pieces: list[list[pa.Table]] = [[] for _ in range(reducers)]
    schema = None
    for chunk, rows in enumerate(chunks):
        table = generate_chunk(
            seed=SEED, task=task, chunk=chunk, rows=rows, key_type="int64", payload_bytes=PAYLOAD
        )
        schema = table.schema
        keys = table.column("key").to_numpy().view(np.uint64)
        pids = ((keys * MIX) >> np.uint64(32)) % np.uint64(reducers)
        order = np.argsort(pids, kind="stable")
        ordered = table.take(pa.array(order))
        start = 0
        for p, count in enumerate(np.bincount(pids, minlength=reducers).tolist()):
            if count:
                pieces[p].append(ordered.slice(start, count))
            start += count
    sink = pa.BufferOutputStream()
    spans: list[Span] = []
    for p in range(reducers):
        start = sink.tell()
        if pieces[p]:
            with pa.ipc.new_stream(sink, schema) as writer:
                for piece in pieces[p]:
                    writer.write_table(piece)
        spans.append((start, sink.tell()))
    del pieces
    data = sink.getvalue().to_pybytes()  # botocore takes bytes, not a buffer view
    _fs(storage_options).pipe_file(
        map_key(prefix, task),
        data,
        chunksize=part_bytes,
        max_concurrency=UPLOAD_PARTS_IN_FLIGHT,
    )
    return spans


def _reduce(
    partition: int,
    spans: list[list[Span]],
    prefix: str,
    storage_options: dict[str, Any],
) -> tuple[int, int, int]:
    """Fetch partition ``partition`` (one ranged GET per non-empty span), decode, checksum."""
    from mrk8s.bench.jobs.shuffle_job import checksum

    wanted = [
        (task, s[partition]) for task, s in enumerate(spans) if s[partition][1] > s[partition][0]
    ]
    if not wanted:
        return 0, 0, 0
    blobs = _fs(storage_options).cat_ranges(
        [map_key(prefix, task) for task, _ in wanted],
        [start for _, (start, _) in wanted],
        [end for _, (_, end) in wanted],
        on_error="raise",
    )
    tables = [pa.ipc.open_stream(pa.py_buffer(blob)).read_all() for blob in blobs]
    table = pa.concat_tables(tables).combine_chunks()
    return checksum(table, PAYLOAD)


def expected_checksum(size: int, maps: int = MAPS) -> tuple[int, int, int]:
    """The checksum of all the rows ``maps`` map tasks generate for ``size`` bytes."""
    from bench import peers

    if maps == peers.MAPS:
        return peers.expected_checksum(size)  # the other contestants' answer (cached)
    from mrk8s.bench.jobs.shuffle_job import checksum, generate_chunk
    from mrk8s.bench.shuffle_bench import task_chunks

    total = [0, 0, 0]
    for task, sizes in enumerate(task_chunks(size // ROW_BYTES, maps, ROW_BYTES)):
        for chunk, rows in enumerate(sizes):
            table = generate_chunk(
                seed=SEED, task=task, chunk=chunk, rows=rows, key_type="int64",
                payload_bytes=PAYLOAD,
            )  # fmt: skip
            for i, v in enumerate(checksum(table, PAYLOAD)):
                total[i] += v
    return total[0], total[1], total[2]


def lower_bound(
    size: int,
    workers: int,
    *,
    storage_options: dict[str, Any],
    bucket: str,
    maps: int = MAPS,
    reducers: int = REDUCERS,
    part_bytes: int = UPLOAD_PART_BYTES,
    start_method: str = "fork",
) -> dict[str, Any]:
    """One run: ``size`` bytes of rows from ``maps`` map tasks to ``reducers`` reducers
    through the S3 bucket ``bucket`` (which must exist) on ``workers`` processes.

    Returns the timings, the rows and their checksum (:func:`expected_checksum`'s
    three numbers), whether they verified, the key prefix the run
    wrote under (``s3_prefix``, ``bucket/...``; its objects are left there), and
    what it uploaded and fetched (``objects``: each map object's bytes;
    ``ranged_gets``, ``ranged_get_bytes``).
    """
    from mrk8s.bench.shuffle_bench import task_chunks

    chunks = task_chunks(size // ROW_BYTES, maps, ROW_BYTES)
    run = uuid.uuid4().hex[:8]
    prefix = f"{bucket}/s3-lower-bound-{run}"
    context = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        # Warm up: every worker imports what it needs and makes its S3 client.
        warm = [f"{bucket}/s3-lower-bound-warmup-{run}"] * workers
        options = [storage_options] * workers
        list(pool.map(_map, range(workers), [[1]] * workers, [reducers] * workers, warm,
                      options, [part_bytes] * workers))  # fmt: skip
        started = time.perf_counter()
        spans = list(pool.map(_map, range(maps), chunks, [reducers] * maps, [prefix] * maps,
                              [storage_options] * maps, [part_bytes] * maps))  # fmt: skip
        mapped = time.perf_counter()
        sums = list(pool.map(_reduce, range(reducers), [spans] * reducers,
                             [prefix] * reducers, [storage_options] * reducers))  # fmt: skip
        done = time.perf_counter()
    got = tuple(sum(s[i] for s in sums) for i in range(3))
    ranges = [end - start for s in spans for start, end in s if end > start]
    return {
        "seconds": round(done - started, 3),
        "map_seconds": round(mapped - started, 3),
        "reduce_seconds": round(done - mapped, 3),
        "rows": got[0],
        "checksum": list(got),
        "verified": got == expected_checksum(size, maps),
        "s3_prefix": prefix + "/",
        "objects": [s[-1][1] for s in spans],
        "ranged_gets": len(ranges),
        "ranged_get_bytes": sum(ranges),
    }
