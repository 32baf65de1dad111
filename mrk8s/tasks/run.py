"""The bodies of map and reduce tasks: what every backend's worker runs.

Entry point :func:`run_task` (``mrk8s.tasks.run:run_task``) is called by the
local backend's worker processes, by ``mrk8s worker`` (one task per process,
as a Kubernetes pod runs it) and by other in-process backends, with a payload
naming the job directory, the step and the stage. It loads the plan and the
job once per process, runs the user's functions, writes the map output or the
part file, and commits. A task is idempotent: running it twice leaves one
committed result.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mrk8s.io import inputs
from mrk8s.io.outputs import PartWriter, part_name, read_stream_file, table_records
from mrk8s.io.split import Split
from mrk8s.job import MapReduce, Step, as_records
from mrk8s.tasks import loader, process
from mrk8s.tasks.groups import Grouper, whole_key_pieces
from mrk8s.tasks.plan import JobPlan, StepPlan
from mrk8s.tasks.records import (
    CombiningBuffer,
    RecordBuffer,
    as_tables,
    emit,
)
from mrk8s.tasks.usercode import Where, call, guarded
from shuffle import codec, commit, mapfile, merge, nodelocal, storecount
from shuffle.errors import CorruptSegmentError
from shuffle.sorter import (
    UNSORTED_BUCKETS,
    FunctionPartitioner,
    HashPartitioner,
    MapSorter,
    RangePartitioner,
)
from shuffle.store import FsspecStore

logger = logging.getLogger(__name__)


#: Share of --memory-per-worker a map task's sort buffer may fill before it
#: spills. A spill needs about three times the buffer at its peak (the sorted
#: copy, the serialized streams, numpy's sort indices); measured with
#: bench/wordcount_memory.py.
SORT_BUFFER_SHARE = 0.125

#: The same for an unsorted (hash) shuffle, which holds only the buffer and
#: its copy in partition order at once...
UNSORTED_BUFFER_SHARE = 0.25

#: ...and, when there is no combiner, at most this much, whatever the number
#: of reducers, so that a map task's memory is the same at 32 and at 256
#: reducers (issue 25). With many reducers each spill's streams are small (32
#: MiB over 256 reducers x 4 buckets: 32 KiB), so the writer joins each
#: partition's and bucket's streams of every run into one stream
#: (``MapOutputWriter(join_runs=True)``; on local disk in place, as each run
#: comes, else when it publishes the file): reducers read as many streams as
#: from one run. Before, the buffer grew with the reducer count
#: (32 MiB up to 64 reducers, 128 MiB from 256) to keep streams large, and a
#: 256-reducer map task held 1.8x the memory of a 32-reducer one.
UNSORTED_SPILL_BYTES = 32 << 20

#: With few reducers, less: this much per stream (partition x hash bucket), from
#: :data:`UNSORTED_MIN_SPILL_BYTES` up (8 MiB at 16 reducers, the full 32 MiB from
#: 64). A small spill's pieces are still in the CPU's caches when they are
#: joined, serialised and written: at 1 GiB over 16 x 16 the map tasks took
#: 1.2-1.3 CPU-s with 8 MiB spills against 1.6-2.1 with 32 MiB (4 rounds,
#: alternated), and the reducers 0.1 CPU-s more (a stream holds a batch per run).
UNSORTED_SPILL_PER_STREAM = 128 << 10
UNSORTED_MIN_SPILL_BYTES = 8 << 20


def unsorted_spill_bytes(num_reducers: int) -> int:
    """The most a hash map task without a combiner buffers before it spills."""
    streams = num_reducers * UNSORTED_BUCKETS
    wanted = streams * UNSORTED_SPILL_PER_STREAM
    return max(UNSORTED_MIN_SPILL_BYTES, min(UNSORTED_SPILL_BYTES, wanted))


#: Runs (in runs the size of its first, ``MapOutputWriter.runs_placed``) and
#: input bytes of the last map task of each (job, step) in this process: the next
#: one sizes its map output's regions from them (``MapOutputWriter(in_place=True)``).
#: A few entries, the newest kept.
_LAST_MAP_RUNS: dict[tuple[str, int], tuple[float, int]] = {}
_LAST_MAP_RUNS_KEPT = 8


def _expected_runs(job_id: str, step: int, split_bytes: int) -> float | None:
    """Runs a map task of ``split_bytes`` should write, from the step's last one here."""
    last = _LAST_MAP_RUNS.get((job_id, step))
    if last is None:
        return None
    runs, size = last
    return runs * split_bytes / size if size > 0 and split_bytes > 0 else runs


def _remember_runs(job_id: str, step: int, runs: float | None, split_bytes: int) -> None:
    if not runs:
        return
    _LAST_MAP_RUNS.pop((job_id, step), None)
    _LAST_MAP_RUNS[(job_id, step)] = (runs, split_bytes)
    while len(_LAST_MAP_RUNS) > _LAST_MAP_RUNS_KEPT:
        del _LAST_MAP_RUNS[next(iter(_LAST_MAP_RUNS))]


#: Share of the budget a reducer's inputs may take for the one-shot sort path
#: (or, sorted, the merge's reads and passes), and the most one ``reduce_batch``
#: call of an unsorted shuffle, or of a sorted one in pieces, gets...
REDUCE_IN_MEMORY_SHARE = 0.25

#: ...up to this much: the partition is read in pieces of about this size (whole
#: hash buckets; sorted with ``MapReduce.REDUCE_BATCH_PIECES``, whole keys in key
#: order), so a reducer's memory does not grow with its partition. A reducer then
#: holds the piece being reduced plus at most the share (the read-ahead of the
#: next pieces; sorted, the merge's buffers and the pass being cut). Read from
#: an object store or another node's shuffle server, an unsorted partition's
#: pieces take the whole share instead (:func:`_piece_bytes`).
PIECE_BYTES = 32 << 20


#: Rough memory of one row in a reducer's merge pass: its Arrow bytes, the
#: sorted copy, sort indices and the decoded Python value handed to the reducer.
REDUCE_BYTES_PER_ROW = 128

#: Damaged map outputs one reduce attempt may recompute before it gives up
#: (each is a full re-run of a map task).
MAX_RECOMPUTED_MAPS = 3

#: Node-local map outputs are named by absolute path (see shuffle.nodelocal).
_ROOT_STORE = FsspecStore("/")

#: The counter of input bytes that were not valid UTF-8 (group, name), in summary.json.
INPUT_COUNTERS = "mrk8s"
INVALID_UTF8 = "invalid_utf8_bytes"

PLAN_FILE = "plan.json"
CODE_DIR = "code"
FILES_DIR = "files"


# -- per-process job context ---------------------------------------------------


@dataclass
class JobContext:
    plan: JobPlan
    store: FsspecStore  # the job directory
    job_class: type[MapReduce]
    #: The plan's storage options overlaid with the ones this worker was given:
    #: credentials are never written into the plan (see mrk8s.engine.settings.redact).
    storage_options: dict[str, Any]

    def new_job(self) -> MapReduce:
        import argparse

        return self.job_class(argparse.Namespace(**self.plan.job_args))

    def step(self, job: MapReduce, step: int) -> Step:
        return job.engine_steps()[step]


_CONTEXTS: dict[str, JobContext] = {}


def warm_up() -> None:
    """What a local worker does before its first task (see ``LocalExecutor``'s
    ``preload``): load what tasks use and let pyarrow build one array. When
    pandas is installed, pyarrow imports it on the first array it builds from
    Python or numpy data (0.4 s and some 50 MB here); done now, that overlaps
    with the driver's own start instead of delaying the first task."""
    pa.array([0])


def load_context(job_dir: str, storage_options: Mapping[str, Any] | None = None) -> JobContext:
    """Load a job's plan and class once per process."""
    ctx = _CONTEXTS.get(job_dir)
    if ctx is not None:
        return ctx
    store = FsspecStore(job_dir, storage_options)
    plan = JobPlan.loads(store.read_bytes(PLAN_FILE).decode())
    script = plan.script_origin
    if plan.code_package:
        # Shipped for workers on other machines: the package, never a same-named local path.
        script = _unpack_code(store, plan)
    elif not (os.path.isfile(script) and loader.sha256_file(script) == plan.script_sha256):
        script = _fetch_script(store, plan)
    elif os.path.dirname(script) not in sys.path:
        sys.path.insert(0, os.path.dirname(script))
    job_class = loader.load_job_class(script, plan.job_class, quiet=True)
    ctx = JobContext(plan, store, job_class, {**plan.storage_options, **(storage_options or {})})
    _CONTEXTS[job_dir] = ctx
    return ctx


def _unpack_code(store: FsspecStore, plan: JobPlan) -> str:
    """Unpack the shipped script directory (once per machine); the script's path in it.

    The directory goes first on ``sys.path``, so the modules beside the script
    import as they did on the driver's machine.
    """
    from scheduler import ship

    digest = plan.code_package.rsplit("-", 1)[-1].removesuffix(".zip")
    directory = ship.unpack(digest, store.read_bytes(plan.code_package))
    script = os.path.join(directory, plan.script_name)
    if not os.path.isfile(script) or loader.sha256_file(script) != plan.script_sha256:
        raise RuntimeError(
            f"the shipped code {plan.code_package} of job {plan.job_id} does not hold the "
            f"script {plan.script_name} the job was planned with"
        )
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return script


def committed_result(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """The committed record of task ``index`` of the payload's stage (its result).

    For backends whose tasks cannot hand their result back to the driver
    (Kubernetes pods): the result is read from storage. ``attempt`` is unused.
    """
    store = FsspecStore(str(payload["job_dir"]), payload.get("storage_options") or {})
    step, stage = int(payload["step"]), str(payload["stage"])
    record = commit.read(store, step, stage, index)
    if record is None:
        raise RuntimeError(f"task {index} of step {step} {stage} has no commit record")
    return record.to_json()


def _fetch_script(store: FsspecStore, plan: JobPlan) -> str:
    """The shipped copy of the script, on this machine's disk."""
    local = store.local_path(f"{CODE_DIR}/{plan.script_name}")
    if local is not None:
        return local
    import tempfile

    directory = tempfile.mkdtemp(prefix="mrk8s-code-")
    path = os.path.join(directory, plan.script_name)
    with open(path, "wb") as f:
        f.write(store.read_bytes(f"{CODE_DIR}/{plan.script_name}"))
    return path


def _task_counters(ctx: JobContext, job: MapReduce) -> dict[str, dict[str, int]]:
    """The job's counters, with the object-store requests this task sent
    (:mod:`shuffle.storecount`) as the ``store`` group.

    The commit record is written after its counters are taken, so its own
    request is counted here, ahead: one PUT (a record is one small object; on
    s3fs one PutObject, checked against the server in tests/mrk8s/bench/test_cost.py),
    and :func:`_commit` drops what the write really sent. Its bytes are not counted.
    """
    counters = job.take_counters()
    sent = storecount.take()
    if storecount.is_watched(ctx.store.fs):
        sent[storecount.PUT] = sent.get(storecount.PUT, 0) + 1
    if sent:
        group = counters.setdefault(storecount.COUNTER_GROUP, {})
        for name, amount in sent.items():
            group[name] = group.get(name, 0) + amount
    return counters


def _commit(ctx: JobContext, record: commit.Record) -> None:
    """Write the commit record; its request was counted ahead (:func:`_task_counters`)."""
    commit.write(ctx.store, record)
    storecount.take()


# -- map -----------------------------------------------------------------------


def _input_records(
    split: Split, storage_options: Mapping[str, Any], stats: inputs.ReadStats
) -> Iterator[tuple[Any, Any]]:
    if split.format == "shuffle":
        return itertools.chain.from_iterable(
            zip(*table_records(table), strict=True)
            for table in _shuffle_tables(split, storage_options)
        )
    return zip(itertools.repeat(None), inputs.read_records(split, storage_options, stats))


def _input_tables(
    split: Split, storage_options: Mapping[str, Any], stats: inputs.ReadStats
) -> Iterator[pa.Table]:
    if split.format == "shuffle":
        yield from _shuffle_tables(split, storage_options)
    else:
        yield from inputs.read_tables(split, storage_options, stats=stats)


def _shuffle_tables(split: Split, storage_options: Mapping[str, Any]) -> Iterator[pa.Table]:
    store = FsspecStore(split.url, storage_options)
    with store.open_read("") as f:
        yield from read_stream_file(f)


def _partitioner(
    ctx: JobContext, job: MapReduce, step_plan: StepPlan, where: Where
) -> HashPartitioner | RangePartitioner | FunctionPartitioner:
    r = step_plan.num_reducers
    if step_plan.partitioner == "range":
        data = ctx.store.read_bytes(f"s{step_plan.index}/boundaries.arrow")
        boundaries = pa.ipc.open_file(pa.py_buffer(data)).read_all().column(0).to_pylist()
        return RangePartitioner(tuple(boundaries))
    if step_plan.partitioner == "custom":
        partition_fn = job.partition  # type: ignore[attr-defined]

        def assign(table: pa.Table) -> Any:
            import numpy as np

            keys = codec.decode_keys(
                table.column(codec.KEY).combine_chunks(), codec.table_key_encoding(table.schema)
            )
            return np.fromiter(
                (call(where, "partition()", partition_fn, k, r) for k in keys),
                dtype=np.int32,
                count=len(keys),
            )

        return FunctionPartitioner(r, assign)
    return HashPartitioner(r, sort_keys=step_plan.sort_keys)


def _combine_fn(job: MapReduce, step: Step, where: Where) -> Callable[[pa.Table], pa.Table] | None:
    combine_batch = step.combine_batch
    if combine_batch is not None:

        def combine_columns(table: pa.Table) -> pa.Table:
            out = call(where, "combine_batch", combine_batch, table)
            _check_map_table(out, where, "combine_batch")
            return out

        return combine_columns
    combiner = step.combiner
    if combiner is None:
        return None

    def combine(table: pa.Table) -> pa.Table:
        out: list[pa.Table] = []
        buf = RecordBuffer(as_tables(out.append), where, "combiner")
        emit(buf, where, "combiner_init", step.combiner_init)
        with guarded(where, "combiner"):
            buf.run(combiner, Grouper([table]))
        emit(buf, where, "combiner_final", step.combiner_final)
        buf.flush()
        if not out:
            return table.slice(0, 0)
        return merge.concat(out)

    return combine


def _check_map_table(out: object, where: Where, what: str) -> None:
    if not isinstance(out, pa.Table) or codec.KEY not in out.column_names:
        raise where.wrap(
            TypeError(
                f"{what} must return a pyarrow.Table with a {codec.KEY!r} column, "
                f"got {type(out).__name__}"
                + (f" with columns {out.column_names}" if isinstance(out, pa.Table) else "")
            ),
            what,
        )


def run_map(ctx: JobContext, step_index: int, index: int, attempt: int) -> dict[str, Any]:
    plan = ctx.plan
    step_plan = plan.steps[step_index]
    split = step_plan.splits[index]
    where = Where(step_index, len(plan.steps), "map", index, split.describe())
    job = ctx.new_job()
    job.input_url = None if split.format == "shuffle" else split.url
    step = call(where, "steps()", ctx.step, job, step_index)
    started = time.perf_counter()
    if not step_plan.has_reduce:
        return _run_map_only(ctx, job, step, step_plan, split, where, index, attempt, started)

    # A backend may keep map outputs on its node's own disk (shuffle.nodelocal); a
    # shuffle on object storage stays there unless the backend says otherwise.
    node_dir = nodelocal.output_dir(ctx.store.is_local)
    if node_dir is not None:
        out_store = _ROOT_STORE
        data_path = nodelocal.map_output_path(node_dir, plan.job_id, step_index, index, attempt)
        spill_dir: str | None = os.path.dirname(data_path)
    else:
        out_store = ctx.store
        data_path = f"s{step_index}/map-{index:05d}-a{attempt}.arrow"
        spill_dir = ctx.store.local_path(f"s{step_index}/tmp") if ctx.store.is_local else None
    sorted_ = step_plan.sort_keys
    writer = mapfile.MapOutputWriter(
        spill_dir=spill_dir,
        # Unsorted streams are read whole, never merged batch by batch.
        batch_rows=mapfile.DEFAULT_BATCH_ROWS if sorted_ else 0,
        join_runs=not sorted_,
        # On this disk the joined streams are written in place, once (no spill file).
        in_place=out_store.is_local,
        expected_runs=_expected_runs(plan.job_id, step_index, split.size),
    )
    # With a record mapper the combiner already ran in the mapper's dict
    # (CombiningBuffer); running it again over the sorted run rarely pays.
    record_map = step.mapper is not None or step.mapper_raw is not None
    combine = (
        _combine_fn(job, step, where) if step.combine_batch is not None or not record_map else None
    )
    if sorted_:
        budget = int(plan.memory_per_worker * SORT_BUFFER_SHARE)
    else:
        budget = int(plan.memory_per_worker * UNSORTED_BUFFER_SHARE)
        if combine is None:
            budget = min(budget, unsorted_spill_bytes(step_plan.num_reducers))
    try:
        sorter = MapSorter(
            writer,
            _partitioner(ctx, job, step_plan, where),
            budget_bytes=budget,
            combine=combine,
            # A record combiner groups sorted keys; combine_batch takes rows as they are.
            combine_sorted=step.combine_batch is None,
        )
        records_in = _feed_map(ctx, job, step, split, where, sorter.add)
        sorter.finish()
        index_ = writer.finish(out_store, data_path)
    except BaseException:
        writer.abort()
        raise
    _remember_runs(plan.job_id, step_index, writer.runs_placed, split.size)
    record = commit.Record.with_index(
        index_,
        step=step_index,
        stage="map",
        index=commit.TaskIndex(index),
        attempt=attempt,
        node=process.node_name(),
        data_path=data_path,
        records_in=records_in,
        records_out=writer.rows_written,
        bytes_in=split.size,
        bytes_out=writer.bytes_written,
        seconds=time.perf_counter() - started,
        peak_rss=process.peak_rss(),
        spills=max(0, writer.num_runs - 1),
        counters=_task_counters(ctx, job),
    )
    _commit(ctx, record)
    return record.to_json()


def _feed_map(
    ctx: JobContext,
    job: MapReduce,
    step: Step,
    split: Split,
    where: Where,
    sink: Callable[[pa.Table], None],
) -> int:
    """Run the step's map side over the split; returns the number of input records.

    Input bytes that were not valid UTF-8 are added to the job's counter
    ``INPUT_COUNTERS``/``INVALID_UTF8`` (the driver warns about them once).
    """
    stats = inputs.ReadStats()
    try:
        return _feed_map_body(ctx, job, step, split, where, sink, stats)
    finally:
        if stats.invalid_utf8_bytes:
            job.increment_counter(INPUT_COUNTERS, INVALID_UTF8, stats.invalid_utf8_bytes)


def _feed_map_body(
    ctx: JobContext,
    job: MapReduce,
    step: Step,
    split: Split,
    where: Where,
    sink: Callable[[pa.Table], None],
    stats: inputs.ReadStats,
) -> int:
    opts = ctx.storage_options
    if step.map_batch is not None:
        count = 0
        for table in _input_tables(split, opts, stats):
            count += table.num_rows
            out = call(where, "map_batch", step.map_batch, table)
            _check_map_table(out, where, "map_batch")
            sink(out)
        return count
    buf = RecordBuffer(as_tables(sink), where, "mapper")
    if (step.mapper is not None or step.mapper_raw is not None) and step.combiner is not None:
        limit = int(ctx.plan.memory_per_worker * SORT_BUFFER_SHARE)
        buf = CombiningBuffer(
            buf, step.combiner, where, limit, init=step.combiner_init, final=step.combiner_final
        )
    emit(buf, where, "mapper_init", step.mapper_init)
    if step.mapper_raw is not None:
        with _local_file(split, opts) as path, guarded(where, "mapper_raw"):
            buf.extend(as_records(step.mapper_raw(path, split.url), what="mapper_raw"))
        emit(buf, where, "mapper_final", step.mapper_final)
        buf.flush()
        return 1
    records = _input_records(split, opts, stats)
    with guarded(where, "mapper"):
        count = buf.run(step.mapper, records)
    emit(buf, where, "mapper_final", step.mapper_final)
    buf.flush()
    return count


@contextlib.contextmanager
def _local_file(split: Split, storage_options: Mapping[str, Any]) -> Iterator[str]:
    """A local path holding the split's whole file, as stored (for ``mapper_raw``)."""
    local = FsspecStore(split.url, storage_options).local_path("")
    if local is not None:
        yield local
        return
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="mrk8s-raw-")
    try:
        path = os.path.join(directory, split.url.rstrip("/").rsplit("/", 1)[-1] or "input")
        store = FsspecStore(split.url, storage_options)
        with store.open_read("") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _working_dir(ctx: JobContext) -> Iterator[None]:
    """Run a task in a fresh working directory holding the job's shipped files.

    Jobs open shipped files by their bare names (as mrjob tasks do), so each
    task gets its own directory: links to the job directory's copies when it
    is on this disk, downloaded copies otherwise. Without files, nothing
    changes.
    """
    if not ctx.plan.files:
        yield
        return
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="mrk8s-task-")
    previous = os.getcwd()
    try:
        for name in ctx.plan.files:
            source = f"{FILES_DIR}/{name}"
            local = ctx.store.local_path(source)
            target = os.path.join(directory, name)
            if local is not None:
                os.symlink(local, target)
            else:
                ctx.store.fs.get(ctx.store.url(source), target, recursive=True)
        os.chdir(directory)
        yield
    finally:
        os.chdir(previous)
        shutil.rmtree(directory, ignore_errors=True)


def _run_map_only(
    ctx: JobContext,
    job: MapReduce,
    step: Step,
    step_plan: StepPlan,
    split: Split,
    where: Where,
    index: int,
    attempt: int,
    started: float,
) -> dict[str, Any]:
    """A step without a reducer: the map output is the step's output."""
    store, path = _part_target(ctx, step_plan.index, index)
    writer = _part_writer(ctx, job, step_plan.index, store, path)
    try:
        records_in = _feed_map(ctx, job, step, split, where, writer.add_table)
        size = writer.close()
    except BaseException:
        writer.abort()
        raise
    record = commit.Record(
        step=step_plan.index,
        stage="map",
        index=commit.TaskIndex(index),
        attempt=attempt,
        node=process.node_name(),
        data_path=store.url(path),
        records_in=records_in,
        records_out=writer.records,
        bytes_in=split.size,
        bytes_out=size,
        seconds=time.perf_counter() - started,
        peak_rss=process.peak_rss(),
        counters=_task_counters(ctx, job),
    )
    _commit(ctx, record)
    return record.to_json()


# -- reduce ----------------------------------------------------------------------


def _part_format(ctx: JobContext, step_index: int) -> str:
    return ctx.plan.output_format if step_index == len(ctx.plan.steps) - 1 else "shuffle"


def _part_target(ctx: JobContext, step_index: int, index: int) -> tuple[FsspecStore, str]:
    """Where a step's part ``index`` goes: the output staging dir, or the next step's input."""
    fmt = _part_format(ctx, step_index)
    if fmt == "shuffle":
        return ctx.store, f"s{step_index}/out/{part_name(index, fmt)}"
    return FsspecStore(ctx.plan.staging_url, ctx.storage_options), part_name(index, fmt)


def _part_writer(
    ctx: JobContext, job: MapReduce, step_index: int, store: FsspecStore, path: str
) -> PartWriter:
    fmt = _part_format(ctx, step_index)
    line_writer = job.text_line_writer() if fmt == "text" else None
    return PartWriter(store, path, fmt, line_writer)


def run_reduce(ctx: JobContext, step_index: int, index: int, attempt: int) -> dict[str, Any]:
    """Run a reducer; re-run any map task whose output turns out damaged, then retry.

    The map task's lineage (its split, the job's code) is in the plan, so the
    reducer recomputes it itself: a new attempt writes a new map output and
    replaces the commit record, and this reducer starts over from the records.
    """
    recomputed = 0
    while True:
        try:
            return _reduce_once(ctx, step_index, index, attempt, recomputed)
        except CorruptSegmentError as exc:
            if not exc.data_path or recomputed >= MAX_RECOMPUTED_MAPS:
                raise
            maps = commit.read_stage(
                ctx.store, step_index, "map", len(ctx.plan.steps[step_index].splits)
            )
            damaged = next((m for m in maps if m.data_path == exc.data_path), None)
            if damaged is None:
                # Another reducer already replaced it: just read the new one.
                recomputed += 1
                continue
            logger.warning(
                "%s; re-running map task %d of step %d before reducing partition %d",
                exc,
                int(damaged.index),
                step_index + 1,
                index,
            )
            run_map(ctx, step_index, int(damaged.index), damaged.attempt + 1)
            recomputed += 1


#: A partition's segments: (store to read through, map output path, its streams).
Segments = list[tuple[FsspecStore, str, list[mapfile.StreamRef]]]


def _locate(ctx: JobContext, maps: list[tuple[commit.Record, list[mapfile.StreamRef]]]) -> Segments:
    """Where each committed map output's streams of a partition are read from.

    A node-local map output (``shuffle.nodelocal``) is read from this node's
    disk when it was written here, else through the backend's remote reader.
    """
    here = process.node_name()
    located: Segments = []
    for m, refs in maps:
        if refs:
            store, path = nodelocal.segment_store(ctx.store, m.node, m.data_path, here)
            located.append((store, path, refs))
    return located


def _read_segments(located: Segments, **options: Any) -> list[Iterator[pa.RecordBatch]]:
    """``mapfile.read_segments`` over segments that may live in several stores."""
    by_store: dict[int, tuple[FsspecStore, list[tuple[str, list[mapfile.StreamRef]]]]] = {}
    for store, path, refs in located:
        by_store.setdefault(id(store), (store, []))[1].append((path, refs))
    runs: list[Iterator[pa.RecordBatch]] = []
    for store, segments in by_store.values():
        runs += mapfile.read_segments(store, segments, **options)
    return runs


def _sorted_tables(located: Segments, share: int, *, whole: bool) -> Iterable[pa.Table]:
    """A partition's rows in key order: one sort if it fits (or ``whole``), else a merge."""
    n_streams = sum(len(refs) for _, _, refs in located)
    runs = _read_segments(
        located,
        # Small segments in one read each, all of them within the share...
        whole_read_limit=min(mapfile.WHOLE_READ_LIMIT, share // max(1, len(located))),
        # ...and every streamed run's buffer too, however many runs there are.
        buffer_bytes=min(mapfile.STREAM_BUFFER, max(16 << 10, share // (4 * max(1, n_streams)))),
    )
    # Each merge pass holds about this many rows, decoded for the reducer too.
    pass_rows = max(1024, share // REDUCE_BYTES_PER_ROW)
    rows_in = sum(r.rows for _, _, refs in located for r in refs)
    if whole or rows_in <= pass_rows:
        # The partition fits (or reduce_batch wants it whole): one sort, no merge.
        table = merge.concat_sorted(runs)
        if table is None:
            return []
        if whole:
            return [table]
        return (table.slice(i, pass_rows) for i in range(0, table.num_rows, pass_rows))
    return merge.merge_sorted_runs(runs, max_rows_per_run=max(64, pass_rows // len(runs)))


def bucket_ranges(sizes: Mapping[int, int], limit: int) -> list[list[int]]:
    """Consecutive buckets grouped so each group's bytes stay within ``limit``.

    A bucket bigger than ``limit`` is a group of its own (a key's rows are
    never split); there is always at least one bucket per group.
    """
    groups: list[list[int]] = []
    total = 0
    for bucket in sorted(sizes):
        if groups and total + sizes[bucket] <= limit:
            groups[-1].append(bucket)
            total += sizes[bucket]
        else:
            groups.append([bucket])
            total = sizes[bucket]
    return groups


def _piece_bytes(located: Segments, share: int) -> int:
    """How much of an unsorted partition one piece holds: at most ``share``, and
    at most :data:`PIECE_BYTES` when every map output is on this node's disk.

    Each piece is a request per map output when the outputs are remote. At 1 GiB
    over 16 x 16 through S3 a reducer read each map output in 8 ranged GETs of
    about 0.5 MiB (4 pieces of one hash bucket, 2 spilled runs each) where one
    of 4 MiB would do: 2,051 GETs against 256 (measured), and S3 bills and waits
    per request.
    """
    if all(store.is_local for store, _, _ in located):
        return min(share, PIECE_BYTES)
    return share


def _unsorted_pieces(located: Segments, share: int) -> Iterator[pa.Table]:
    """A partition of an unsorted shuffle, in as few pieces as fit in ``share``.

    A piece is a range of the partition's hash buckets, read from every map
    output; a key's rows share a bucket, so each piece holds whole keys. The
    next piece is read while the caller reduces this one
    (:func:`shuffle.mapfile.read_pieces`, within ``share`` of read-ahead).
    """
    sizes: dict[int, int] = {}
    for _, _, refs in located:
        for ref in refs:
            sizes[ref.bucket] = sizes.get(ref.bucket, 0) + ref.length
    pieces: list[Segments] = []
    for group in bucket_ranges(sizes, share):
        wanted = set(group)
        segments = [(st, p, [r for r in refs if r.bucket in wanted]) for st, p, refs in located]
        pieces.append([(st, p, refs) for st, p, refs in segments if refs])
    largest = max(
        (sum(r.length for _, _, refs in piece for r in refs) for piece in pieces), default=0
    )
    for runs in _read_pieces(
        pieces, whole_read_limit=max(mapfile.WHOLE_READ_LIMIT, largest), budget=share
    ):
        batches = [b for run in runs for b in run if b.num_rows]
        del runs
        if batches:
            # One chunk per stream (the map side writes a stream as one batch);
            # concatenating them copies nothing.
            table = merge.concat(batches)
            del batches
            yield table
            del table  # one piece in memory at a time, plus what is read ahead
            pa.default_memory_pool().release_unused()


def _read_pieces(
    pieces: list[Segments], **options: Any
) -> Iterator[list[Iterator[pa.RecordBatch]]]:
    """``mapfile.read_pieces`` when every segment lives in one store, else a few pieces at a
    time (:func:`_read_together`)."""
    stores = {id(st): st for piece in pieces for st, _, _ in piece}
    if len(stores) == 1:
        (store,) = stores.values()
        yield from mapfile.read_pieces(
            store, [[(p, refs) for _, p, refs in piece] for piece in pieces], **options
        )
        return
    budget = options.pop("budget", 0)
    sizes = [sum(r.length for _, _, refs in piece for r in refs) for piece in pieces]
    # As on local disk: the piece being reduced, plus up to ``budget`` bytes after it.
    limit = max(sizes, default=0) + budget
    batch: list[Segments] = []
    held = 0
    for piece, size in zip(pieces, sizes, strict=True):
        if batch and held + size > limit:
            yield from _read_together(batch, **options)
            batch, held = [], 0
        batch.append(piece)
        held += size
    if batch:
        yield from _read_together(batch, **options)


def _read_together(batch: list[Segments], **options: Any) -> list[list[Iterator[pa.RecordBatch]]]:
    """The runs of each piece of ``batch``, every map output's streams of all of them read
    in one :func:`mapfile.read_segments` call (so adjacent streams in one range).

    Another node's map output is read through its shuffle server, a request per
    contiguous range: a reducer on the three-node Ray cluster read each map
    output's segment in 8 ranges of about 550 KiB (4 pieces x 2 spilled runs);
    two pieces together halve the requests (README, "Running on Ray").
    """
    if len(batch) == 1:
        return [_read_segments(batch[0], **options)]
    owner: dict[tuple[int, str, int], int] = {}
    merged: dict[tuple[int, str], tuple[FsspecStore, str, list[mapfile.StreamRef]]] = {}
    for i, piece in enumerate(batch):
        for store, path, refs in piece:
            merged.setdefault((id(store), path), (store, path, []))[2].extend(refs)
            owner.update(((id(store), path, r.offset), i) for r in refs)
    by_store: dict[int, tuple[FsspecStore, list[tuple[str, list[mapfile.StreamRef]]]]] = {}
    for store, path, refs in merged.values():
        refs.sort(key=lambda r: r.offset)
        by_store.setdefault(id(store), (store, []))[1].append((path, refs))
    runs_of: list[list[Iterator[pa.RecordBatch]]] = [[] for _ in batch]
    for store, segments in by_store.values():
        runs = mapfile.read_segments(store, segments, **options)  # one run per stream, in order
        streams = [(path, r.offset) for path, refs in segments for r in refs]
        for (path, offset), run in zip(streams, runs, strict=True):
            runs_of[owner[(id(store), path, offset)]].append(run)
    return runs_of


def _reduce_once(
    ctx: JobContext, step_index: int, index: int, attempt: int, recomputed: int
) -> dict[str, Any]:
    plan = ctx.plan
    step_plan = plan.steps[step_index]
    where = Where(step_index, len(plan.steps), "reduce", index, str(index))
    job = ctx.new_job()
    step = call(where, "steps()", ctx.step, job, step_index)
    started = time.perf_counter()

    maps = commit.partition_streams(ctx.store, step_index, "map", len(step_plan.splits), index)
    located = _locate(ctx, maps)
    bytes_in = sum(r.length for _, _, refs in located for r in refs)
    budget = plan.memory_per_worker
    share = int(budget * REDUCE_IN_MEMORY_SHARE)
    tables: Iterable[pa.Table]
    if not step_plan.sort_keys:
        tables = _unsorted_pieces(located, _piece_bytes(located, share))
    elif step.reduce_batch is not None and step_plan.reduce_batch_pieces:
        # Merged within the share, as for a record reducer, then cut at key boundaries.
        tables = whole_key_pieces(
            _sorted_tables(located, share, whole=False), min(share, PIECE_BYTES)
        )
    else:
        tables = _sorted_tables(located, share, whole=step.reduce_batch is not None)

    store, path = _part_target(ctx, step_index, index)
    writer = _part_writer(ctx, job, step_index, store, path)
    records_in = 0
    try:
        if step.reduce_batch is not None:
            for table in tables:
                records_in += table.num_rows
                out = call(where, "reduce_batch", step.reduce_batch, table)
                if not isinstance(out, pa.Table):
                    raise where.wrap(
                        TypeError(
                            f"reduce_batch must return a pyarrow.Table, got {type(out).__name__}"
                        ),
                        "reduce_batch",
                    )
                del table  # not held while the next piece is read
                writer.add_table(out)
                del out
        else:

            def count_rows(ts: Iterable[pa.Table]) -> Iterator[pa.Table]:
                nonlocal records_in
                for t in ts:
                    records_in += t.num_rows
                    yield t

            buf = RecordBuffer(writer.add_records, where, "reducer")
            emit(buf, where, "reducer_init", step.reducer_init)
            reducer = step.reducer
            assert reducer is not None
            with guarded(where, "reducer"):
                buf.run(reducer, Grouper(count_rows(tables)))
            emit(buf, where, "reducer_final", step.reducer_final)
            buf.flush()
        size = writer.close()
    except BaseException:
        writer.abort()
        raise
    record = commit.Record(
        step=step_index,
        stage="reduce",
        index=commit.TaskIndex(index),
        attempt=attempt,
        node=process.node_name(),
        data_path=store.url(path),
        records_in=records_in,
        records_out=writer.records,
        bytes_in=bytes_in,
        bytes_out=size,
        seconds=time.perf_counter() - started,
        peak_rss=process.peak_rss(),
        counters=_task_counters(ctx, job),
        recomputed=recomputed,
    )
    _commit(ctx, record)
    return record.to_json()


# -- entry points ------------------------------------------------------------------


def cleanup_attempt(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Remove what a cancelled attempt (the loser of a speculative pair) wrote.

    Its map output goes, unless the commit record names it: a loser killed just
    after committing leaves a valid, committed file that readers rely on.
    A reducer's half-written part has a temporary name, dropped at output commit.
    """
    ctx = load_context(str(payload["job_dir"]), payload.get("storage_options") or {})
    step = int(payload["step"])
    removed: list[str] = []
    if payload["stage"] == "map":
        path = f"s{step}/map-{index:05d}-a{attempt}.arrow"
        record = commit.read(ctx.store, step, "map", index)
        if record is None or record.data_path != path:
            ctx.store.remove(path)
            removed.append(path)
    return {"removed": removed}


def run_task(payload: Mapping[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Run task ``index`` of the stage named in ``payload`` (see module docstring).

    ``payload``: ``job_dir`` (URL), ``storage_options``, ``step``, ``stage``.
    A task that already committed returns its record without running again.
    """
    # Requests sent since the last task (none of a task's) are no task's to report.
    storecount.take()
    ctx = load_context(str(payload["job_dir"]), payload.get("storage_options") or {})
    step = int(payload["step"])
    stage = str(payload["stage"])
    done = commit.read(ctx.store, step, stage, index)
    if done is not None:
        return done.to_json()
    runner = {"map": run_map, "reduce": run_reduce}.get(stage)
    if runner is None:
        raise ValueError(f"unknown stage {stage!r}: expected 'map' or 'reduce'")
    process.release_memory()
    process.reset_peak_rss()
    try:
        with _working_dir(ctx):
            return runner(ctx, step, index, attempt)
    finally:
        process.release_memory()
