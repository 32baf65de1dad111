"""The driver: the fixed sequence of a job, the same on every backend.

load -> plan -> ship -> (per step: sample? -> map -> place -> reduce) ->
commit output -> summary. Called by the CLI (``mrk8s run``) and by the
programmatic :func:`mrk8s.run`. A backend only runs "the indexed tasks of a
stage"; everything else happens here. Workers never share this process or
(necessarily) this disk: all they get is the job directory's URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

import pyarrow as pa

from mrk8s.engine.executors import check_options, make_executor
from mrk8s.engine.progress import Progress
from mrk8s.engine.settings import RunSettings, check_reachable_by_workers, redact
from mrk8s.errors import (
    JobDefinitionError,
    JobFailedError,
    MRError,
    UsageError,
    UserError,
)
from mrk8s.io import inputs, outputs
from mrk8s.io.split import Split
from mrk8s.job import MapReduce, Step
from mrk8s.tasks import loader
from mrk8s.tasks.plan import JobId, JobPlan, StepPlan
from mrk8s.tasks.run import CODE_DIR, FILES_DIR, INPUT_COUNTERS, INVALID_UTF8, PLAN_FILE
from scheduler import backends, placement, ship
from scheduler.stage import Executor, StageSpec, TaskEvent, pending
from shuffle import commit, nodelocal, partition
from shuffle.store import FsspecStore, join

logger = logging.getLogger(__name__)

TASK_ENTRYPOINT = "mrk8s.tasks.run:run_task"
CLEANUP_ENTRYPOINT = "mrk8s.tasks.run:cleanup_attempt"
RESULT_ENTRYPOINT = "mrk8s.tasks.run:committed_result"

#: Keys sampled per step for range partitioning (TeraSort samples ~100k; a
#: few thousand per reducer already gives partitions within a few percent).
RANGE_SAMPLE_KEYS = 20_000


@dataclass(frozen=True)
class JobResult:
    """What a finished job returns: its summary and where its output is."""

    job_id: str
    output: str | None
    summary: dict[str, Any]

    def records(self, storage_options: Mapping[str, Any] | None = None) -> list[tuple[Any, Any]]:
        """The output's records, in partition and key order (text or jsonl output)."""
        if self.output is None:
            raise ValueError("this job wrote its results to stdout; pass output= to keep them")
        store = FsspecStore(self.output, storage_options)
        out: list[tuple[Any, Any]] = []
        for name in store.list(""):
            if not name.startswith("part-"):
                continue
            data = store.read_bytes(name).decode()
            for line in data.splitlines():
                if name.endswith(".jsonl"):
                    rec = json.loads(line)
                    out.append((rec["key"], rec["value"]))
                else:
                    k, _, v = line.partition("\t")
                    out.append((json.loads(k), json.loads(v)))
        return out


def new_job_id(script: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", os.path.splitext(os.path.basename(script))[0])
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _staging_url(settings: RunSettings, job_dir: str, job_id: str) -> str:
    if settings.output is None:
        return join(job_dir, "output")
    out = settings.output.rstrip("/")
    parent, _, name = out.rpartition("/")
    if not parent and not name.startswith("/"):
        parent = "."
    return join(parent or "/", f".{name}.mrk8s-{job_id}")


def _step_plans(
    settings: RunSettings, steps: list[Step], first_splits: list[Split], job_dir: str
) -> tuple[StepPlan, ...]:
    plans = []
    splits = first_splits
    for i, step in enumerate(steps):
        r = step.reducers or settings.num_reducers()
        plans.append(
            StepPlan(
                index=i,
                has_mapper=step.mapper is not None or step.mapper_raw is not None,
                has_map_batch=step.map_batch is not None,
                has_combiner=step.combiner is not None,
                has_reducer=step.reducer is not None,
                has_reduce_batch=step.reduce_batch is not None,
                num_reducers=r if step.has_reduce else 0,
                partitioner="",  # filled in by the caller
                splits=tuple(splits),
            )
        )
        parts = r if step.has_reduce else len(splits)
        splits = [
            Split(join(job_dir, f"s{i}/out/{outputs.part_name(j, 'shuffle')}"), "shuffle")
            for j in range(parts)
        ]
    return tuple(plans)


def _partitioner_name(job_class: type[MapReduce]) -> str:
    if job_class.has_custom_partition():
        return "custom"
    name = str(getattr(job_class, "PARTITIONER", "hash")).lower()
    if name not in ("hash", "range"):
        raise JobDefinitionError(
            f"{job_class.__name__}.PARTITIONER is {name!r}: use 'hash' or 'range', or define "
            "partition(self, key, num_reducers)"
        )
    return name


def _sort_keys(job_class: type[MapReduce], steps: list[Step]) -> bool:
    sort_keys = getattr(job_class, "SORT_KEYS", True)
    if not isinstance(sort_keys, bool):
        raise JobDefinitionError(
            f"{job_class.__name__}.SORT_KEYS is {sort_keys!r}: set it to True or False"
        )
    if sort_keys:
        return True
    name = job_class.__name__
    if _partitioner_name(job_class) != "hash":
        raise JobDefinitionError(
            f"{name}.SORT_KEYS = False needs the hash partitioner: an unsorted shuffle "
            "places keys by their hash; drop SORT_KEYS = False to keep your partitioner"
        )
    for i, step in enumerate(steps):
        if step.reducer is not None:
            raise JobDefinitionError(
                f"{name}.SORT_KEYS = False, but step {i + 1} has a record reducer, which "
                "needs its keys grouped in order: use reduce_batch, or drop SORT_KEYS = False"
            )
    return False


def _reduce_batch_pieces(job_class: type[MapReduce], steps: list[Step]) -> bool:
    pieces = getattr(job_class, "REDUCE_BATCH_PIECES", False)
    if not isinstance(pieces, bool):
        raise JobDefinitionError(
            f"{job_class.__name__}.REDUCE_BATCH_PIECES is {pieces!r}: set it to True or False"
        )
    if pieces and not any(step.reduce_batch is not None for step in steps):
        raise JobDefinitionError(
            f"{job_class.__name__}.REDUCE_BATCH_PIECES = True, but no step has a reduce_batch: "
            "it says how reduce_batch gets its partition (a record reducer streams anyway); "
            "define reduce_batch, or drop REDUCE_BATCH_PIECES"
        )
    return pieces


def _plan_key(plan: JobPlan) -> dict[str, Any]:
    """The parts of a plan that must match for a job to resume."""
    data = plan.to_json()
    data.pop("script_origin", None)
    # A resumed job keeps the code shipped by its first run (the script itself is compared).
    data.pop("code_package", None)
    return data


class Driver:
    """Runs one job with one executor; see the module docstring."""

    def __init__(self, settings: RunSettings, *, progress: Progress | None = None) -> None:
        self.settings = settings
        self.progress = progress or Progress()
        self.timings: dict[str, float] = {}
        #: The packed script directory (path under the job dir, zip), when shipped.
        self._code: tuple[str, bytes] | None = None
        #: Per stage ("s0-map"): tasks run and skipped (resumed), attempts started and failed.
        self.stage_stats: dict[str, dict[str, int]] = {}

    # -- load, plan, ship ---------------------------------------------------------

    def load(self) -> type[MapReduce]:
        return loader.load_job_class(self.settings.script, self.settings.job_class)

    def plan(self, job_class: type[MapReduce], job_id: str, input_urls: list[str]) -> JobPlan:
        s = self.settings
        job = job_class(_namespace(s.job_args))
        steps = job.engine_steps()
        if not steps:
            raise JobDefinitionError(f"{job_class.__name__}.steps() returned no steps: add one")
        for i, step in enumerate(steps):
            if not isinstance(step, Step):
                raise JobDefinitionError(
                    f"{job_class.__name__}.steps()[{i}] is {type(step).__name__}, not a Step"
                )
        for i, step in enumerate(steps[1:], 1):
            if step.mapper_raw is not None:
                raise JobDefinitionError(
                    f"{job_class.__name__}.steps()[{i}] has a mapper_raw: only the first step "
                    "reads input files; use a mapper in later steps"
                )
        job_files = _check_job_files(job_class, job.job_files())
        shuffle_dir = s.shuffle_dir
        if job_files and "://" not in shuffle_dir:
            # Tasks of a job with files run in their own working directory.
            shuffle_dir = os.path.abspath(shuffle_dir)
        job_dir = join(shuffle_dir, job_id)
        files = inputs.list_inputs(input_urls, s.storage_options, format=job.input_format())
        if steps[0].mapper_raw is not None:
            # mapper_raw reads a whole file (as stored) per map task.
            splits = [
                Split(f.url, f.format, compression=f.compression, size=max(f.size, 0))
                for f in files
            ]
        else:
            splits = inputs.plan_splits(
                files,
                target_splits=max(2, 2 * s.num_workers()),
                max_split_bytes=s.max_split_bytes,
                storage_options=s.storage_options,
            )
        sort_keys = _sort_keys(job_class, steps)
        pieces = _reduce_batch_pieces(job_class, steps)
        step_plans = tuple(
            replace(
                p,
                partitioner=_partitioner_name(job_class) if p.num_reducers else "",
                sort_keys=sort_keys or not p.num_reducers,
                reduce_batch_pieces=pieces and p.has_reduce_batch,
            )
            for p in _step_plans(s, steps, splits, job_dir)
        )
        script = os.path.abspath(s.script)
        code_package = self._pack_code(script)
        return JobPlan(
            job_id=JobId(job_id),
            job_dir=job_dir,
            script_name=os.path.basename(script),
            script_origin=script,
            script_sha256=loader.sha256_file(script),
            job_class=job_class.__name__,
            job_args=dict(s.job_args),
            steps=step_plans,
            output_url=s.output or "",
            staging_url=_staging_url(s if not job_files else _absolute_output(s), job_dir, job_id),
            output_format=s.output_format,
            memory_per_worker=s.memory_per_worker,
            # Credentials stay out of the plan, which lives in the shuffle store.
            storage_options=redact(s.storage_options),
            files=tuple(name for _, name in job_files),
            input_fingerprint=inputs.fingerprint(files, s.storage_options),
            code_package=code_package,
        )

    def _pack_code(self, script: str) -> str:
        """Pack the script's directory if the backend's tasks run elsewhere; its path.

        Refused past ``settings.ship_limit`` (before anything is written or
        created), with the largest entries named.
        """
        s = self.settings
        entry = backends.REGISTRY.get(s.backend)
        if entry is None or not entry.ships_code:
            return ""
        package = ship.measure(
            os.path.dirname(script), s.ship_limit, backend=s.backend, limit_env="MRK8S_SHIP_LIMIT"
        )
        digest, data = ship.pack(package)
        path = f"{CODE_DIR}/package-{digest[:24]}.zip"
        self._code = (path, data)
        return path

    def ship(
        self, plan: JobPlan, store: FsspecStore, files: list[tuple[str, str]] | None = None
    ) -> bool:
        """Write plan and script to the job dir; True if a matching plan was there (resume)."""
        if store.exists(PLAN_FILE):
            try:
                old = JobPlan.loads(store.read_bytes(PLAN_FILE).decode())
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(
                    f"job {plan.job_id} in {store.root_url} has an unreadable plan ({exc}): "
                    f"remove {store.root_url} or choose another --job-id"
                ) from exc
            if _plan_key(old) != _plan_key(plan):
                raise UsageError(
                    f"job {plan.job_id} already exists in {store.root_url} and its "
                    f"{_plan_difference(old, plan)} changed since it started: pass --restart "
                    "to start it over, or choose another --job-id"
                )
            return True
        with open(plan.script_origin, "rb") as f:
            store.write_bytes(f"{CODE_DIR}/{plan.script_name}", f.read())
        if self._code is not None:
            store.write_bytes(*self._code)
        for path, name in files or ():
            _ship_path(store, path, f"{FILES_DIR}/{name}")
        store.write_bytes(PLAN_FILE, plan.dumps().encode())
        return False

    # -- stages ---------------------------------------------------------------------

    def run_stage(
        self,
        executor: Executor,
        plan: JobPlan,
        store: FsspecStore,
        step: int,
        stage: str,
        num_tasks: int,
        total_bytes: int,
        placed: Mapping[int, str] | None = None,
    ) -> None:
        name = f"step {step + 1}/{len(plan.steps)} {stage}"
        done = commit.committed_indexes(store, step, stage)
        if done and _writes_final_output(plan, step, stage):
            done = self._drop_commits_without_parts(plan, store, step, stage, done)
        todo = pending(num_tasks, done)
        self.progress.stage_started(
            name, total_tasks=num_tasks, done_tasks=num_tasks - len(todo), total_bytes=total_bytes
        )
        spec = self.stage_spec(plan, step, stage, num_tasks)
        started = time.perf_counter()

        stats = self.stage_stats.setdefault(
            f"s{step}-{stage}",
            {"tasks_run": 0, "tasks_skipped": 0, "attempts": 0, "failed_attempts": 0},
        )
        stats["tasks_run"] += len(todo)
        stats["tasks_skipped"] += num_tasks - len(todo)

        def on_event(event: TaskEvent) -> None:
            if event.kind == "started":
                stats["attempts"] += 1
            elif event.kind == "failed":
                stats["failed_attempts"] += 1
                commit.write_failure(
                    store, step, stage, event.index, event.attempt,
                    event.error.to_json() if event.error else {},
                )  # fmt: skip
            self.progress.task_event(event)

        if todo:
            executor.run_stage(spec, indexes=todo, placement=placed, on_event=on_event)
        self.timings[f"s{step}-{stage}"] = time.perf_counter() - started
        self.progress.stage_finished(name)

    def stage_spec(self, plan: JobPlan, step: int, stage: str, num_tasks: int) -> StageSpec:
        """What the executor runs for ``stage`` of ``step``: the entry point and its command.

        The container command (``mrk8s worker``) carries the storage options
        without credentials (a pod spec is readable by whoever may read the
        Job); pods get credentials from their own environment.
        """
        s = self.settings
        command = ["mrk8s", "worker", "--job", plan.job_dir, "--step", str(step), "--stage", stage]
        public = redact(s.storage_options)
        if public:
            command += ["--storage-options", json.dumps(public, sort_keys=True)]
        return StageSpec(
            name=f"step {step + 1}/{len(plan.steps)} {stage}",
            num_tasks=num_tasks,
            entrypoint=TASK_ENTRYPOINT,
            payload={
                "job_dir": plan.job_dir,
                "storage_options": dict(s.storage_options),
                "step": step,
                "stage": stage,
            },
            command=tuple(command),
            max_attempts=s.max_attempts,
            retry_user_errors=s.retry_user_errors,
            speculative=s.speculative,
            cleanup_entrypoint=CLEANUP_ENTRYPOINT,
            result_entrypoint=RESULT_ENTRYPOINT,
            job_id=plan.job_id,
            step=step,
            kind=stage,
        )

    def place_reducers(
        self, executor: Executor, plan: JobPlan, store: FsspecStore, step: int
    ) -> dict[int, str]:
        """Where each reducer of ``step`` runs, after recovering lost map outputs.

        A map output kept on a node's own disk (``shuffle.nodelocal``) is lost
        with its node: such map tasks run again, elsewhere, before any reducer
        needs them (``recomputed_lost`` in the summary). Then each reducer goes
        to the node holding most of its partition's bytes, within the node's
        share of the reducers (``scheduler.placement``).
        """
        sp = plan.steps[step]
        nodes = executor.nodes()
        maps = commit.read_stage(store, step, "map", len(sp.splits))
        lost = sorted(
            int(m.index)
            for m in maps
            if nodelocal.is_node_local(m.data_path) and m.node not in nodes
        )
        if lost:
            self.progress.message(
                f"step {step + 1}: the map outputs of task(s) {', '.join(map(str, lost))} "
                "were on node(s) that are gone; running those map tasks again"
            )
            for index in lost:
                store.remove(commit.record_path(step, "map", index))
            stats = self.stage_stats.setdefault(f"s{step}-map", {})
            stats["recomputed_lost"] = stats.get("recomputed_lost", 0) + len(lost)
            map_seconds = self.timings.get(f"s{step}-map", 0.0)
            self.run_stage(executor, plan, store, step, "map", len(sp.splits), 0)
            self.timings[f"s{step}-map"] += map_seconds
            maps = commit.read_stage(store, step, "map", len(sp.splits))
        by_partition = _partition_bytes(maps)
        capacity = placement.capacity(sp.num_reducers, nodes)
        if self.settings.placement == "random":
            return placement.random_assign(range(sp.num_reducers), capacity, seed=step)
        return placement.assign(
            {p: by_partition.get(p, {}) for p in range(sp.num_reducers)}, capacity
        )

    def _drop_commits_without_parts(
        self, plan: JobPlan, store: FsspecStore, step: int, stage: str, done: set[int]
    ) -> set[int]:
        """Committed final-output tasks whose part is still staged; the others run again.

        A part leaves the staging directory when the job's output is committed;
        rerunning a finished job (kept shuffle, --overwrite) must then produce
        the parts again rather than commit an empty output.
        """
        staging = FsspecStore(plan.staging_url, self.settings.storage_options)
        present = set(staging.list(""))
        kept = set()
        for index in sorted(done):
            if outputs.part_name(index, plan.output_format) in present:
                kept.add(index)
            else:
                store.remove(commit.record_path(step, stage, index))
        return kept

    def sample_boundaries(
        self, plan: JobPlan, store: FsspecStore, step: int, job: MapReduce
    ) -> None:
        """Range partitioning: run the map side on a sample and store R-1 boundaries."""
        path = f"s{step}/boundaries.arrow"
        if store.exists(path):
            return
        from mrk8s.engine.sampling import sample_keys

        step_plan = plan.steps[step]
        keys = sample_keys(
            job.engine_steps()[step],
            step_plan.splits,
            self.settings.storage_options,
            RANGE_SAMPLE_KEYS,
        )
        bounds = partition.boundaries_from_sample(keys, step_plan.num_reducers)
        sink = pa.BufferOutputStream()
        table = pa.table({"boundary": pa.array(bounds, pa.binary())})
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        store.write_bytes(path, sink.getvalue().to_pybytes())

    # -- the whole job ----------------------------------------------------------------

    def run(
        self, executor: Executor | None = None, *, stdout: IO[bytes] | None = None
    ) -> JobResult:
        s = self.settings
        t0 = time.perf_counter()
        if s.output_format not in outputs.FORMATS:
            raise UsageError(
                f"--output-format {s.output_format!r} is not one of {', '.join(outputs.FORMATS)}"
            )
        if s.output is None and s.output_format == "parquet":
            raise UsageError("--output-format parquet needs --output DIR (it cannot go to stdout)")
        check_reachable_by_workers(s.backend, s.shuffle_dir, s.output, s.inputs)
        check_options(getattr(executor, "name", None) or s.backend, speculative=s.speculative)
        job_class = self.load()
        job_id = s.job_id or new_job_id(s.script)
        if s.output is not None:
            outputs.check_output(s.output, s.storage_options, overwrite=s.overwrite)
        if s.restart:  # before stdin is spooled into the job's directory
            FsspecStore(join(s.shuffle_dir, job_id), s.storage_options).remove("", recursive=True)
        new_job_dir = FsspecStore(join(s.shuffle_dir, job_id), s.storage_options)
        existed = bool(new_job_dir.list(""))
        try:
            input_urls = list(s.inputs)
            if not input_urls:
                input_urls = [self._spool_stdin(new_job_dir)]
            plan = self.plan(job_class, job_id, input_urls)
            job_store = FsspecStore(plan.job_dir, s.storage_options)
            files = job_class(_namespace(s.job_args)).job_files() if plan.files else []
            if s.restart:
                FsspecStore(plan.staging_url, s.storage_options).remove("", recursive=True)
            resumed = self.ship(plan, job_store, files)
        except BaseException:
            if not existed:  # what this run wrote (a spooled stdin) is of no use to anyone
                new_job_dir.remove("", recursive=True)
            raise
        try:
            return self._run_shipped(
                job_class, plan, job_store, executor, stdout, resumed=resumed, started=t0
            )
        except BaseException as exc:
            self._after_failure(exc, plan, job_store)
            raise

    def _run_shipped(
        self,
        job_class: type[MapReduce],
        plan: JobPlan,
        job_store: FsspecStore,
        executor: Executor | None,
        stdout: IO[bytes] | None,
        *,
        resumed: bool,
        started: float,
    ) -> JobResult:
        """The job's stages and its output, once its plan is in the job directory."""
        s = self.settings
        t0, job_id = started, plan.job_id
        if s.output is not None:
            # Fail now, not after the map stage, if the output cannot be written.
            FsspecStore(plan.staging_url, s.storage_options).makedirs("")
        if resumed:
            self.progress.message(f"resuming job {job_id} from {job_store.root_url}")
        self.timings["plan"] = time.perf_counter() - t0

        own_executor = executor is None
        if executor is None:
            executor = make_executor(
                s.backend,
                s.num_workers() if s.backend == "local" else s.workers,
                ray_address=s.ray_address,
                script=s.script,
                kubernetes=s.kubernetes,
                memory_per_worker=s.memory_per_worker,
            )
        with _closing(executor, own_executor):
            job = job_class(_namespace(s.job_args))
            for sp in plan.steps:
                map_bytes = sum(x.size for x in sp.splits)
                if sp.partitioner == "range":
                    self.sample_boundaries(plan, job_store, sp.index, job)
                self.run_stage(
                    executor, plan, job_store, sp.index, "map", len(sp.splits), map_bytes
                )
                if sp.num_reducers:
                    placed = self.place_reducers(executor, plan, job_store, sp.index)
                    self.run_stage(
                        executor, plan, job_store, sp.index, "reduce", sp.num_reducers, 0, placed
                    )
            done = getattr(executor, "job_done", None)  # the k8s backend's tidy-up
            if done is not None:
                done(job_id)
        summary = self.summarize(plan, job_store, time.perf_counter() - t0)
        _warn_about_input(summary)
        staging = FsspecStore(plan.staging_url, s.storage_options)
        last = plan.steps[-1]
        n_parts = last.num_reducers or len(last.splits)
        part_names = [outputs.part_name(i, s.output_format) for i in range(n_parts)]
        if s.output is None:
            outputs.cat_parts(staging, part_names, stdout)
        else:
            outputs.commit_output(staging, part_names, s.output, s.storage_options, summary)
        if not s.keep_shuffle:
            job_store.remove("", recursive=True)
        _print_counters(summary, self.progress)
        return JobResult(job_id, s.output, summary)

    def _after_failure(self, exc: BaseException, plan: JobPlan, job_store: FsspecStore) -> None:
        """Tidy up after a job that stopped, and say in one line what is kept and why.

        Staged parts never stay beside the output (a resumed job writes them
        again). A job stopped by something outside it (Ctrl-C, a full disk, an
        unwritable output, a lost worker) keeps its finished tasks to resume; a
        job that is itself wrong (bad input, bad code, a result that cannot be
        written) keeps nothing, unless --keep-shuffle: a rerun can only succeed
        once its script or input changes, and a changed job starts over. A
        closed stdout (``| head``) keeps nothing and says nothing. The line is
        added to the exception as a note, so the CLI prints it with the error.
        """
        s = self.settings
        if s.output is not None:
            _remove_quietly(FsspecStore(plan.staging_url, s.storage_options))
        job_id, where = plan.job_id, job_store.root_url
        clean = f"mrk8s clean {job_id}{_shuffle_dir_option(s.shuffle_dir)}"
        if isinstance(exc, BrokenPipeError):
            if not s.keep_shuffle:
                _remove_quietly(job_store)
            return
        if rerun_can_fix(exc):
            exc.add_note(
                f"job {job_id} stopped; its finished tasks are kept in {where}: fix the cause, "
                f"then rerun the same command with --job-id {job_id} to resume (or remove "
                f"them with `{clean}`)"
            )
        elif s.keep_shuffle:
            exc.add_note(
                f"job {job_id} failed on something a rerun cannot fix; its data is kept in "
                f"{where} because of --keep-shuffle (`mrk8s status {job_id}` shows it): "
                f"remove it with `{clean}`"
            )
        else:
            _remove_quietly(job_store)
            exc.add_note(
                f"job {job_id} kept nothing: it can only succeed once its script or input "
                "changes, and a changed job starts over (--keep-shuffle keeps its data to "
                "inspect)"
            )

    def dry_run(self, executor: Any, out: IO[str]) -> list[dict[str, Any]]:
        """Print (as YAML) every manifest the job would create on Kubernetes; create nothing.

        Loads and plans the job (its inputs are listed, to count the map
        tasks), then renders the owner ConfigMap and one Job per stage with
        ``executor`` (a ``KubernetesExecutor`` that is never started).
        """
        s = self.settings
        check_reachable_by_workers(s.backend, s.shuffle_dir, s.output, s.inputs)
        if not s.inputs:
            raise UsageError("--dry-run needs input files (it does not read stdin)")
        job_class = self.load()
        job_id = s.job_id or new_job_id(s.script)
        plan = self.plan(job_class, job_id, list(s.inputs))
        stages = []
        for sp in plan.steps:
            stages.append(self.stage_spec(plan, sp.index, "map", len(sp.splits)))
            if sp.num_reducers:
                stages.append(self.stage_spec(plan, sp.index, "reduce", sp.num_reducers))
        manifests = executor.dry_run_manifests(
            job_id, [(spec, range(spec.num_tasks)) for spec in stages]
        )
        out.write(
            f"# mrk8s run --dry-run: job {job_id}, {len(stages)} stage Job(s) in namespace "
            f"{s.kubernetes.namespace}; each Job's ownerReferences name the ConfigMap by the "
            "uid it gets when created\n"
        )
        out.write(executor.to_yaml(manifests))
        out.flush()
        return list(manifests)

    def summarize(self, plan: JobPlan, store: FsspecStore, seconds: float) -> dict[str, Any]:
        counters: dict[str, dict[str, int]] = {}
        stages: dict[str, Any] = {}
        local_bytes = total_bytes = best_bytes = 0
        for sp in plan.steps:
            stage_sizes = {"map": len(sp.splits), "reduce": sp.num_reducers}
            for stage, n in stage_sizes.items():
                if not n:
                    continue
                records = commit.read_stage(store, sp.index, stage, n)
                for r in records:
                    for group, names in r.counters.items():
                        bucket = counters.setdefault(group, {})
                        for name, amount in names.items():
                            bucket[name] = bucket.get(name, 0) + amount
                stages[f"step{sp.index}-{stage}"] = {
                    "tasks": n,
                    "records_in": sum(r.records_in for r in records),
                    "records_out": sum(r.records_out for r in records),
                    "bytes_in": sum(r.bytes_in for r in records),
                    "bytes_out": sum(r.bytes_out for r in records),
                    "spills": sum(r.spills for r in records),
                    **self.stage_stats.get(f"s{sp.index}-{stage}", {}),
                    "recomputed_map_tasks": sum(r.recomputed for r in records),
                    "attempts_max": max((r.attempt for r in records), default=0),
                    "task_seconds_sum": round(sum(r.seconds for r in records), 3),
                    "task_seconds_max": round(max((r.seconds for r in records), default=0.0), 3),
                    "peak_rss_max": max((r.peak_rss for r in records), default=0),
                    "seconds": round(self.timings.get(f"s{sp.index}-{stage}", 0.0), 3),
                }
                if stage == "map" and sp.num_reducers:
                    by_partition = _partition_bytes(records)
                    reduces = commit.read_stage(store, sp.index, "reduce", sp.num_reducers)
                    where = {int(r.index): r.node for r in reduces}
                    total = sum(sum(n.values()) for n in by_partition.values())
                    total_bytes += total
                    local_bytes += round(placement.locality(where, by_partition) * total)
                    best_bytes += sum(max(n.values(), default=0) for n in by_partition.values())
        return {
            "job_id": plan.job_id,
            "steps": len(plan.steps),
            "reducers": [sp.num_reducers for sp in plan.steps],
            "counters": counters,
            "stages": stages,
            "shuffle_bytes": total_bytes,
            # Bytes reducers read from their own node, and from other nodes (or a store).
            "shuffle_bytes_local": local_bytes,
            "shuffle_bytes_remote": total_bytes - local_bytes,
            "locality": round(local_bytes / total_bytes, 4) if total_bytes else 1.0,
            # The locality if every reducer ran where most of its partition was.
            "locality_best": round(best_bytes / total_bytes, 4) if total_bytes else 1.0,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "seconds": round(seconds, 3),
        }

    def _spool_stdin(self, store: FsspecStore) -> str:
        """No inputs given: copy stdin into the job dir and read it from there."""
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(
                "no input given: name input files, directories or globs after the script, "
                "or pipe data to stdin"
            )
        with store.open_write("stdin.txt") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        return store.url("stdin.txt")


def _partition_bytes(maps: list[commit.Record]) -> dict[int, dict[str, int]]:
    """Bytes of each partition per node, from the map stage's commit records."""
    by_partition: dict[int, dict[str, int]] = {}
    for r in maps:
        for p, b in r.partition_bytes().items():
            nodes = by_partition.setdefault(p, {})
            nodes[r.node] = nodes.get(r.node, 0) + b
    return by_partition


def _check_job_files(
    job_class: type[MapReduce], files: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Each shipped path exists, and each name is a plain, unique file name."""
    seen: set[str] = set()
    for path, name in files:
        if not os.path.exists(path):
            raise JobDefinitionError(
                f"{job_class.__name__} ships {path!r}, which does not exist: fix the path "
                "(relative paths are relative to the current directory, or to the script's "
                "directory for class-level FILES/DIRS)"
            )
        if not name or "/" in name or name in (".", "..") or name in seen:
            raise JobDefinitionError(
                f"{job_class.__name__} ships {path!r} as {name!r}: a shipped name must be a "
                "plain file name, unique within the job"
            )
        seen.add(name)
    return files


def _ship_path(store: FsspecStore, path: str, target: str) -> None:
    """Copy a local file, or a directory tree, into the job directory."""
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            rel = os.path.relpath(root, path)
            for name in names:
                inner = name if rel == "." else f"{rel}/{name}"
                _ship_path(store, os.path.join(root, name), f"{target}/{inner}")
        return
    with open(path, "rb") as f:
        store.write_bytes(target, f.read())


def _absolute_output(settings: RunSettings) -> RunSettings:
    """Settings whose local output path is absolute (tasks may change directory)."""
    if settings.output is None or "://" in settings.output:
        return settings
    return replace(settings, output=os.path.abspath(settings.output))


def _plan_difference(old: JobPlan, new: JobPlan) -> str:
    """Which part of a job's plan a rerun changed, in words."""
    if old.script_sha256 != new.script_sha256:
        return "script"
    if old.input_fingerprint != new.input_fingerprint or [p.splits for p in old.steps] != [
        p.splits for p in new.steps
    ]:
        return "input"
    return "options"


def _writes_final_output(plan: JobPlan, step: int, stage: str) -> bool:
    """Whether this stage's tasks write the job's output parts (the last step's last stage)."""
    last = plan.steps[-1]
    return step == last.index and stage == ("reduce" if last.num_reducers else "map")


#: User errors that a rerun of the same job gets past once the cause outside it is fixed.
_FIXABLE_OUTSIDE = ("UserErrorPermission", "OutOfSpaceError")


def rerun_can_fix(exc: BaseException) -> bool:
    """Whether the same job, run again with its --job-id, may succeed (and so resume).

    Not after a user error of the job's own (bad input, bad code, a bad
    result, a bad definition); yes after an interruption, an infrastructure
    failure, our own bug, a full disk or an unwritable location.
    """
    if isinstance(exc, JobFailedError):
        return not exc.user_error or exc.kind in _FIXABLE_OUTSIDE
    if isinstance(exc, UserError):
        return type(exc).__name__ in _FIXABLE_OUTSIDE
    return True


def _remove_quietly(store: FsspecStore) -> None:
    """Remove a store's tree while handling another error: a failure here is only logged."""
    try:
        if store.exists(""):
            store.remove("", recursive=True)
    except (MRError, OSError) as exc:
        logger.warning("could not remove %s: %s", store.root_url, exc)


def _shuffle_dir_option(shuffle_dir: str) -> str:
    """`` --shuffle-dir URL`` when the job's is not the default, for commands to copy."""
    from mrk8s.engine.settings import default_shuffle_dir

    return "" if shuffle_dir == default_shuffle_dir() else f" --shuffle-dir {shuffle_dir}"


def _namespace(args: Mapping[str, Any]) -> Any:
    import argparse

    return argparse.Namespace(**dict(args))


class _closing:
    def __init__(self, executor: Executor, own: bool) -> None:
        self.executor = executor
        self.own = own

    def __enter__(self) -> Executor:
        if self.own:
            self.executor.__enter__()
        return self.executor

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.executor.__exit__(*exc)


def _warn_about_input(summary: Mapping[str, Any]) -> None:
    """One warning line for the whole job if its input was not all valid UTF-8."""
    bad = summary.get("counters", {}).get(INPUT_COUNTERS, {}).get(INVALID_UTF8, 0)
    if bad:
        logger.warning(
            "%d input bytes were not valid UTF-8 and were read as U+FFFD (counter %s/%s in "
            "summary.json): if the input is in another encoding, convert it to UTF-8 first, "
            "e.g. with iconv -f latin1 -t utf-8",
            bad,
            INPUT_COUNTERS,
            INVALID_UTF8,
        )


def _print_counters(summary: Mapping[str, Any], progress: Progress) -> None:
    counters = summary.get("counters") or {}
    for group in sorted(counters):
        for name in sorted(counters[group]):
            progress.message(f"counter {group}/{name} = {counters[group][name]}")
