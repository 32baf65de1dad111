"""The Ray backend: a stage's tasks run in long-lived worker actors across a cluster.

Called by the driver for ``--backend ray`` (through the registry in
:mod:`scheduler.backends`). On entry it connects to a cluster
(``address``: ``auto``, ``host:port`` or ``ray://...``) or starts a local
Ray, then starts one :class:`~scheduler.backends.ray.actors.TaskWorker` per
CPU of every node (or ``num_workers`` spread over the nodes by their CPUs),
each pinned to its node, and one
:class:`~scheduler.backends.ray.actors.NodeReader` per node, through which
reducers elsewhere read that node's map outputs.

``run_stage`` hands each task to an idle worker. With a ``placement``
(task index -> node id, from :mod:`scheduler.placement`) a task runs only on
a worker of its node, unless that node has no live worker left. A worker
actor that dies (killed, its process lost, its node gone) fails its attempt
as a lost worker: the attempt is retried on another worker, up to the
stage's ``max_attempts``, and the actor is replaced on its node if the node
is still alive. :meth:`nodes` tells the driver which nodes are alive and how
many tasks each can run at once: the capacity for placement, and, for a map
output kept on a node that is gone, the sign that its map task must run
again before the reducers that need it. Speculative attempts are not
implemented on this backend: a stage that asks for them is refused (and
``mrk8s run --speculative --backend ray`` is a usage error).

When connecting to an existing cluster with a ``working_dir`` (the job
script's directory), that directory is shipped to every worker as Ray's
runtime environment (see :mod:`scheduler.backends.ray.ship`).
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from scheduler.backends.ray import actors, logdrain, nodefs, ship
from scheduler.errors import JobFailedError
from scheduler.stage import EventSink, StageSpec, TaskError, TaskEvent

logger = logging.getLogger(__name__)

#: Seconds to wait for the worker pool to come up before giving up with a message
#: (a cluster whose nodes are still starting, or a pool that cannot be scheduled).
START_TIMEOUT = 300.0

#: Errors that mean the actor (or its node) is gone, not that the task failed.
_LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ActorUnschedulableError,
)


@dataclass(slots=True)
class _Slot:
    """One worker actor: its node, its handle, what it is running."""

    name: str
    node: str
    handle: Any
    task: tuple[int, int, float] | None = None  # (index, attempt, started)
    dead: bool = False


@dataclass(slots=True)
class _Run:
    """State of one ``run_stage``: the queue, results and failures per task."""

    queue: collections.deque[tuple[int, int]]
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: collections.Counter[int] = field(default_factory=collections.Counter)
    inflight: dict[Any, _Slot] = field(default_factory=dict)


class RayExecutor:
    """Runs stages on Ray worker actors; see the module docstring.

    Parameters: ``num_workers`` (None: one per CPU of the cluster),
    ``address`` (None: start a local Ray), ``working_dir`` (shipped to the
    workers when connecting to an existing cluster), ``local_dir`` (base of
    every node's directory for node-local map outputs), ``preload`` (what a
    worker imports first), ``ship_limit`` (bytes), ``env`` (extra
    environment of the workers).
    """

    name = "ray"

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        address: str | None = None,
        working_dir: str | None = None,
        local_dir: str | None = None,
        preload: Sequence[str] = (),
        ship_limit: int = ship.DEFAULT_LIMIT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.num_workers = num_workers
        self.address = address
        self.working_dir = working_dir
        self.local_dir = local_dir or os.path.join(tempfile.gettempdir(), "mrk8s-ray")
        self.preload = tuple(preload)
        self.ship_limit = ship_limit
        self.env = {"OMP_NUM_THREADS": "1", **(env or {})}
        self.reader_prefix = f"mrk8s-reader-{secrets.token_hex(4)}-"
        self._started_ray = False
        self._namespace = ""
        self._code: tuple[str, list[Any]] | None = None
        self._slots: list[_Slot] = []
        self._readers: dict[str, Any] = {}
        self._spawned = 0
        self._job_dirs: set[str] = set()

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect (or start Ray) and bring the worker pool up; idempotent."""
        if self._slots:
            return
        package = None
        if self.working_dir is not None and (self.address is not None or ray.is_initialized()):
            package = ship.measure(self.working_dir, self.ship_limit)
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            options: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": True,
            }
            if self.address is None:
                options["num_cpus"] = self.num_workers or os.cpu_count() or 1
            try:
                # "local": a Ray of its own, even when another is running on this
                # machine (ray.init() with no address would join that one).
                ray.init(address=self.address or "local", **options)
            except ConnectionError as exc:
                raise JobFailedError(
                    f"cannot connect to the Ray cluster at {self.address} ({exc}): check "
                    "that it runs (ray status on its head node), that --ray-address names it "
                    "(host:port of its GCS, or ray://host:port of its Ray client server, "
                    "port 10001 unless it was started with another), and that this machine "
                    "can reach that port. A cluster with token authentication (ray start turns "
                    "it on when the machine has ~/.ray/auth_token) also needs "
                    "RAY_AUTH_MODE=token here, and its token in RAY_AUTH_TOKEN or "
                    "~/.ray/auth_token",
                    user_error=True,
                ) from exc
            self._started_ray = True
        self._namespace = ray.get_runtime_context().namespace
        if package is not None:
            logger.info(
                "shipping %s (%d files, %.1f MiB) to the cluster",
                package.directory,
                package.files,
                package.size / 2**20,
            )
            digest, data = ship.pack(package)
            self._code = (digest, [ray.put(data)])
        plan = self._pool_plan()
        if not plan:
            raise JobFailedError(
                "the Ray cluster has no node with a CPU for a worker: add worker nodes "
                "(or give the head node CPUs), then run again"
            )
        for node in plan:
            self._reader(node)
        for node, count in plan.items():
            for _ in range(count):
                self._spawn(node)
        pings = [s.handle.ping.remote() for s in self._slots]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=START_TIMEOUT)
        if len(ready) < len(pings):
            self.close()
            raise JobFailedError(
                f"only {len(ready)} of {len(pings)} Ray worker actors started within "
                f"{START_TIMEOUT:.0f} s: check that the cluster's nodes are up and that each "
                "has the CPUs it reports (ray status), or pass fewer --workers"
            )
        ray.get(ready)  # an actor that failed in its constructor raises here

    def close(self) -> None:
        """Kill the actors (after removing finished jobs' node-local data)."""
        if not ray.is_initialized():
            return
        finished = [
            os.path.basename(d.rstrip("/"))
            for d in self._job_dirs
            if "://" not in d and not os.path.exists(d)
        ]
        if finished and self._readers:
            calls = [r.remove_jobs.remote(finished) for r in self._readers.values()]
            ray.wait(calls, num_returns=len(calls), timeout=30)
        logdrain.drain([slot.handle for slot in self._slots])
        for slot in self._slots:
            ray.kill(slot.handle, no_restart=True)
        for reader in self._readers.values():
            ray.kill(reader, no_restart=True)
        self._slots = []
        self._readers = {}
        self._code = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- the pool ----------------------------------------------------------------------

    @staticmethod
    def _alive_nodes() -> dict[str, int]:
        """Alive nodes and their CPUs."""
        return {
            n["NodeID"]: int(n.get("Resources", {}).get("CPU", 0))
            for n in ray.nodes()  # type: ignore[no-untyped-call]
            if n.get("Alive")
        }

    def _pool_plan(self) -> dict[str, int]:
        """Workers per node: one per CPU, or ``num_workers`` dealt out by CPUs."""
        cpus = {n: c for n, c in sorted(self._alive_nodes().items()) if c > 0}
        if self.num_workers is None:
            return cpus
        plan = dict.fromkeys(cpus, 0)
        room = dict(cpus)
        for _ in range(self.num_workers):
            if not room:
                break
            node = max(sorted(room), key=lambda n: (room[n], -plan[n]))
            plan[node] += 1
            room[node] -= 1
            if room[node] == 0:
                del room[node]
        return {n: c for n, c in plan.items() if c}

    def _pin(self, node: str) -> NodeAffinitySchedulingStrategy:
        return NodeAffinitySchedulingStrategy(node_id=node, soft=False)

    def _reader(self, node: str) -> Any:
        reader = self._readers.get(node)
        if reader is None:
            reader = (
                ray.remote(actors.NodeReader)
                .options(
                    name=nodefs.reader_name(self.reader_prefix, node),
                    namespace=self._namespace,
                    num_cpus=0,
                    max_concurrency=8,
                    scheduling_strategy=self._pin(node),
                )
                .remote(node, self.local_dir)
            )
            self._readers[node] = reader
        return reader

    def _spawn(self, node: str) -> _Slot:
        self._spawned += 1
        options: dict[str, Any] = {
            "num_cpus": 1,
            "max_restarts": 0,
            "scheduling_strategy": self._pin(node),
        }
        handle = (
            ray.remote(actors.TaskWorker)
            .options(**options)
            .remote(
                node,
                self.local_dir,
                self.reader_prefix,
                self._namespace,
                self.env,
                self.preload,
                self._code,
            )
        )
        slot = _Slot(f"ray-{node[:8]}-{self._spawned}", node, handle)
        self._slots.append(slot)
        return slot

    def _replace(self, slot: _Slot) -> None:
        """Drop a dead (or abandoned) worker and start a new one on its node if it lives."""
        slot.dead = True
        ray.kill(slot.handle, no_restart=True)
        self._slots.remove(slot)
        if slot.node in self._alive_nodes():
            try:
                self._spawn(slot.node)
            except Exception as exc:  # the node went away in between
                logger.warning("could not replace worker %s on its node: %s", slot.name, exc)

    def worker_actors(self) -> list[tuple[str, Any]]:
        """(node id, actor handle) of every live worker (for tests and monitoring)."""
        return [(s.node, s.handle) for s in self._slots]

    def reader_actors(self) -> dict[str, Any]:
        """The reader actor of each node (for tests and monitoring)."""
        return dict(self._readers)

    def busy_workers(self) -> list[tuple[str, Any, int]]:
        """(node id, actor handle, task index) of the workers running a task now."""
        return [(s.node, s.handle, s.task[0]) for s in self._slots if s.task is not None]

    def nodes(self) -> dict[str, int]:
        """Alive nodes with live workers, and how many tasks each runs at once.

        Workers whose actor has died are replaced first (on their node, if it
        lives), so the answer is the capacity the next stage will have.
        """
        pings = {s.handle.ping.remote(): s for s in self._slots if s.task is None}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=60)
        for ref in ready:
            try:
                ray.get(ref)
            except _LOST:
                self._replace(pings[ref])
        alive = self._alive_nodes()
        out: dict[str, int] = {}
        for s in self._slots:
            if s.node in alive:
                out[s.node] = out.get(s.node, 0) + 1
        return out

    # -- a stage -----------------------------------------------------------------------

    def run_stage(
        self,
        stage: StageSpec,
        *,
        indexes: Sequence[int],
        placement: Mapping[int, str] | None = None,
        on_event: EventSink | None = None,
    ) -> dict[int, dict[str, Any]]:
        self.start()
        emit = on_event or (lambda event: None)
        if stage.speculative:
            # The driver refuses --speculative on this backend before a job starts;
            # a stage asking for it from elsewhere is refused, not silently ignored.
            raise JobFailedError(
                f"{stage.name}: speculative attempts are not implemented on the Ray backend: "
                "run the stage without speculative=True",
                user_error=True,
                stage=stage.name,
            )
        job_dir = stage.payload.get("job_dir")
        if isinstance(job_dir, str):
            self._job_dirs.add(job_dir)
        run = _Run(collections.deque((i, 1) for i in indexes))
        where = dict(placement or {})
        try:
            while run.queue or run.inflight:
                self._dispatch(stage, run, where, emit)
                if not run.inflight:
                    self._refill(stage)
                    continue
                ready, _ = ray.wait(list(run.inflight), num_returns=1)
                for ref in ready:
                    self._receive(stage, run, ref, emit)
        except BaseException:
            # Fail fast: whatever still runs is abandoned (tasks are idempotent and
            # their half-written files are never committed).
            for slot in list(run.inflight.values()):
                self._replace(slot)
            raise
        return run.results

    def _refill(self, stage: StageSpec) -> None:
        """Nothing could be dispatched: the pool lost its workers. Wait for replacements."""
        if not self._slots:
            plan = self._pool_plan()
            for node, count in plan.items():
                for _ in range(count):
                    self._spawn(node)
        if not self._slots:
            raise JobFailedError(
                f"{stage.name}: no Ray worker is left and no node can take a new one: "
                "the cluster has lost its nodes; run the same command again when it is back",
                stage=stage.name,
            )

    def _dispatch(
        self, stage: StageSpec, run: _Run, where: Mapping[int, str], emit: EventSink
    ) -> None:
        served = {s.node for s in self._slots}
        for slot in [s for s in self._slots if s.task is None]:
            pick = None
            for pos, (index, _) in enumerate(run.queue):
                node = where.get(index)
                # A placed task waits for a worker of its node, unless the node has none left.
                if node is None or node == slot.node or node not in served:
                    pick = pos
                    break
            if pick is None:
                continue
            index, attempt = run.queue[pick]
            del run.queue[pick]
            slot.task = (index, attempt, time.monotonic())
            emit(TaskEvent(stage.name, index, attempt, "started", worker=slot.name))
            ref = slot.handle.run.remote(stage.entrypoint, dict(stage.payload), index, attempt)
            run.inflight[ref] = slot

    def _receive(self, stage: StageSpec, run: _Run, ref: Any, emit: EventSink) -> None:
        slot = run.inflight.pop(ref)
        assert slot.task is not None
        index, attempt, _ = slot.task
        slot.task = None
        try:
            reply = ray.get(ref)
        except _LOST as exc:
            error = TaskError(
                "WorkerLostError",
                f"Ray worker {slot.name} on node {slot.node} was lost "
                f"({type(exc).__name__}) while running task {index} of {stage.name}",
                retryable=True,
                user_error=False,
            )
            self._replace(slot)
        else:
            if reply.get("ok"):
                run.results[index] = dict(reply["result"])
                emit(TaskEvent(stage.name, index, attempt, "finished", run.results[index],
                               worker=slot.name))  # fmt: skip
                return
            error = TaskError.from_json(reply["error"])
        emit(TaskEvent(stage.name, index, attempt, "failed", error=error, worker=slot.name))
        run.failures[index] += 1
        may_retry = error.retryable or (stage.retry_user_errors and error.user_error)
        if may_retry and run.failures[index] < stage.max_attempts:
            logger.warning(
                "task %d of %s failed (attempt %d of %d), retrying: %s",
                index,
                stage.name,
                run.failures[index],
                stage.max_attempts,
                error.message.splitlines()[0],
            )
            run.queue.append((index, attempt + 1))
            return
        raise JobFailedError.from_task_error(
            error, stage=stage.name, index=index, attempt=run.failures[index]
        )
