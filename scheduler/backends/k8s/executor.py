"""The Kubernetes backend: each stage's tasks as the pods of one Indexed Job.

Called by the driver for ``--backend k8s`` (through the registry in
:mod:`scheduler.backends`). ``run_stage`` makes sure the job's owner
ConfigMap exists, creates the stage's Job (:mod:`render`), follows the Job
and its pods with the watch API (:mod:`watch`) and turns what it sees into
:class:`~scheduler.stage.TaskEvent` s: a pod running is an attempt
``started``; a pod that succeeded, ``finished`` (its result read from
storage through the stage's ``result_entrypoint``: a pod's return value
cannot reach the driver); a pod that failed, ``failed``, with the message
the task printed, read from the pod's log (:mod:`podlog`); an evicted or
preempted pod (``DisruptionTarget``), ``cancelled``: the Job's pod failure
policy does not count it, and the task runs again. Retries are the Job
controller's (``backoffLimitPerIndex``); the Job failing (an index out of
attempts, or a user error, exit code 2) raises
:class:`scheduler.errors.JobFailedError` with the task's own message.

A pod may run a batch of tasks (``PodSettings.tasks_per_pod``; by default
``ceil(tasks / workers)``, :func:`render.tasks_per_pod`), one after another in
one process: the pod running is its first task ``started``; then, every
:data:`BATCH_POLL_SECONDS`, the commit record of the task it runs is looked
for, and when it appears that task is ``finished`` and the next ``started``.
A failed batch pod's message names the task that failed; its replacement
skips the tasks that committed.

A driver that died and runs again with the same job id re-attaches: a
stage's Job that still runs and covers the tasks asked for is followed, not
created again (the Job's name is fixed by the job id, step and stage); one
that finished or covers other tasks is deleted and replaced. On an error
(Ctrl-C included) the Job being followed is deleted, so its pods stop; on
success nothing is deleted: finished Jobs stay until their
``ttlSecondsAfterFinished``.

Shuffle in two modes. Object store: map outputs, commit records, the plan
and the code live under the job's ``--shuffle-dir`` URL, which every pod
reaches; ``placement`` is not used. Node-local (``PodSettings.node_local``):
map outputs go to each node's hostPath directory and are served to other
nodes by the shuffle-server DaemonSet (:mod:`nodeshuffle`; the plan, code,
commit records and output stay under ``--shuffle-dir``); the nodes are those
with a running server (:meth:`KubernetesExecutor.nodes`), and a reduce stage
runs as one Job per node the driver's placement chose, pinned there by node
affinity, each with its own index map.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import client as k8s_client
from scheduler.backends.k8s import indexmap, names, nodeshuffle, podlog, render, watch
from scheduler.errors import ClusterError, JobFailedError
from scheduler.stage import EventSink, StageSpec, TaskError, TaskEvent, resolve

logger = logging.getLogger(__name__)

#: While no pod of a new Job exists, how often to look for the reason in its events.
CREATE_CHECK_SECONDS = 5.0
#: How long to wait for a replaced Job to be gone before creating it again.
DELETE_TIMEOUT = 60.0


#: While a pod runs a batch of tasks, how often the driver looks for the commit record
#: of the task it runs (a task's "finished", and the next one's "started").
BATCH_POLL_SECONDS = 1.0


@dataclass(slots=True)
class _PodSeen:
    """What was already reported about one pod (events are replayed: report once)."""

    batch: list[int]  # the tasks the pod runs, in order
    attempt: int
    name: str = ""
    started: bool = False  # the pod's process started
    ended: bool = False
    running: int | None = None  # the task reported started and not yet finished


@dataclass(slots=True)
class _Follow:
    """State of following one stage Job."""

    stage: StageSpec
    name: str
    uid: str
    tasks: list[int]  # the Job's tasks in completion order
    per_pod: int  # completion index k runs tasks[k * per_pod : (k + 1) * per_pod]
    emit: EventSink
    pods: dict[str, _PodSeen] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    failures: dict[int, tuple[int, TaskError]] = field(default_factory=dict)  # task -> last
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # read when finished
    finished: set[int] = field(default_factory=set)  # tasks whose "finished" was emitted


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _is_finished(job: Mapping[str, Any]) -> bool:
    return bool(_condition(job, "Complete") or _condition(job, "Failed"))


def _attempt(pod: Mapping[str, Any]) -> int:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    failed = int(annotations.get(render.FAILURE_COUNT_ANNOTATION) or 0)
    ignored = int(annotations.get(render.IGNORED_FAILURE_COUNT_ANNOTATION) or 0)
    return 1 + failed + ignored


def _is_done(follow: _Follow) -> bool:
    """The Job completed, or each of its tasks has a pod that succeeded."""
    return bool(_condition(follow.job, "Complete")) or follow.finished >= set(follow.tasks)


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


class KubernetesExecutor:
    """Runs stages as Indexed Jobs on a Kubernetes cluster; see the module docstring.

    Parameters: ``settings`` (namespace, image, workers, resources, TTL, ...;
    :class:`render.PodSettings`), ``kubeconfig`` and ``context`` (None: the
    in-cluster configuration, else ``$KUBECONFIG`` or ``~/.kube/config``).
    """

    name = "k8s"

    def __init__(
        self,
        settings: render.PodSettings | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> None:
        self.settings = settings or render.PodSettings()
        self.kubeconfig = kubeconfig
        self.context = context
        self._client: Any = None
        self._owners: dict[str, dict[str, Any]] = {}
        self._following: list[str] = []  # the names of the Jobs being followed
        # Jobs this driver followed until done. A stage is done when its pods succeeded,
        # before the Job controller marks the Job Complete, so such a Job may still look
        # running when the stage runs again (map outputs lost with a node): it is never
        # re-attached to, as its tasks' results may since have been invalidated.
        self._done_uids: set[str] = set()

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> KubernetesExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None and self._client is not None:
            for name in self._following:
                self._delete_unfinished(name)
        self.close()

    def start(self) -> None:
        """Connect to the API server (once) and check that it answers."""
        if self._client is not None:
            return
        client = k8s_client.connect(self.kubeconfig, self.context)
        k8s_client.check_reachable(client)
        self._client = client
        self.batch = kubernetes.client.BatchV1Api(client)
        self.core = kubernetes.client.CoreV1Api(client)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def nodes(self) -> dict[str, int]:
        """Ready nodes and the pods each may run at once (their ``pods`` allocatable).

        In object-store mode no node keeps map outputs, so this only informs
        placement, which the executor does not use; without the right to list
        nodes (the driver's Role is namespaced) it is empty. In node-local mode
        the nodes are those with a running shuffle server (:meth:`shuffle_servers`;
        a node without one has lost its map outputs for the job), each with its
        ``pods`` allocatable when nodes may be listed, else 1 (equal shares).
        """
        self.start()
        serving = self.shuffle_servers() if self.settings.node_local else None
        try:
            items = self.core.list_node().items
        except ApiException as exc:
            if exc.status != 403:
                raise k8s_client.explain(exc, self._client, "list nodes") from exc
            return dict.fromkeys(serving or (), 1)
        out: dict[str, int] = {}
        for node in items:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            )
            if ready and (serving is None or node.metadata.name in serving):
                out[node.metadata.name] = int((node.status.allocatable or {}).get("pods", 1))
        return out

    # -- objects -----------------------------------------------------------------------

    def owner(self, job_id: str) -> dict[str, Any]:
        """The job's owner ConfigMap, created if missing (as a dict with its uid)."""
        cached = self._owners.get(job_id)
        if cached is not None:
            # Deleted since (kubectl delete, mrk8s cancel): the job is cancelled, and a
            # Job made for the dead owner would only be garbage-collected.
            name = cached["metadata"]["name"]
            try:
                now = self.core.read_namespaced_config_map(name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise k8s_client.explain(
                        exc, self._client, "read the job's ConfigMap", self.namespace
                    ) from exc
                now = None
            if now is None or now.metadata.uid != cached["metadata"]["uid"]:
                raise JobFailedError(
                    f"the job's owner ConfigMap {self.namespace}/{name} was deleted while "
                    "it ran (mrk8s cancel, or kubectl delete): its Jobs and pods "
                    "are gone; run the same command again to resume from its checkpoints"
                )
            return cached
        body = render.owner_config_map(job_id, self.settings)
        name = body["metadata"]["name"]
        try:
            created = self.core.create_namespaced_config_map(
                self.namespace, body, field_validation="Strict"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise k8s_client.explain(
                    exc, self._client, "create the job's ConfigMap", self.namespace
                ) from exc
            created = self.core.read_namespaced_config_map(name, self.namespace)
        owner = self._client.sanitize_for_serialization(created)
        self._owners[job_id] = owner
        return dict(owner)

    def job_done(self, job_id: str) -> None:
        """Every stage of job ``job_id`` ran: its owner ConfigMap goes with its Jobs.

        The ConfigMap owns the Jobs (deleting it stops the job); now it is also
        made a dependent of each of them (ownerReferences without
        ``blockOwnerDeletion``), so when the last is deleted -- by its
        ``ttlSecondsAfterFinished`` (``--ttl``) or by hand -- the garbage
        collector deletes the ConfigMap too: no object of a finished job stays
        for ever. A job run again creates its ConfigMap anew. Failing here only
        leaves the ConfigMap (a warning): the job's work is done.
        """
        owner = self._owners.get(job_id)
        if owner is None or self._client is None:
            return
        selector = ",".join(f"{k}={v}" for k, v in names.job_labels(job_id).items())
        try:
            jobs = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
            refs = [
                {"apiVersion": "batch/v1", "kind": "Job", "name": j.metadata.name,
                 "uid": j.metadata.uid}
                for j in jobs
                if any(r.uid == owner["metadata"]["uid"] for r in j.metadata.owner_references or [])
            ]  # fmt: skip
            if refs:
                self.core.patch_namespaced_config_map(
                    owner["metadata"]["name"],
                    self.namespace,
                    {"metadata": {"ownerReferences": refs, "uid": owner["metadata"]["uid"]}},
                )
        except ApiException as exc:
            logger.warning(
                "the job's ConfigMap %s/%s stays after its Jobs: %s",
                self.namespace,
                owner["metadata"]["name"],
                k8s_client.explain(exc, self._client, "tie the ConfigMap to the job's Jobs"),
            )

    def _read_job(self, name: str) -> dict[str, Any] | None:
        try:
            job = self.batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise k8s_client.explain(exc, self._client, f"read Job {name}", self.namespace) from exc
        return dict(self._client.sanitize_for_serialization(job))

    def _delete_job(self, name: str, uid: str | None = None) -> None:
        body = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}  # type: ignore[assignment]
        with contextlib.suppress(ApiException):
            self.batch.delete_namespaced_job(name, self.namespace, body=body)

    def _delete_unfinished(self, name: str) -> None:
        """On an error: stop the Job being followed (and its pods) unless it finished."""
        try:
            job = self._read_job(name)
            if job is not None and not _is_finished(job):
                logger.warning("deleting Job %s/%s (the driver stopped)", self.namespace, name)
                self._delete_job(name, job["metadata"]["uid"])
        except Exception as exc:  # the cluster may be why we stopped
            logger.warning("could not delete Job %s/%s: %s", self.namespace, name, exc)

    def _attach_or_create(self, body: dict[str, Any], indexes: Sequence[int]) -> dict[str, Any]:
        """The stage's Job: the running one if it covers ``indexes``, else a new one."""
        name = body["metadata"]["name"]
        existing = self._read_job(name)
        if existing is not None:
            theirs = (existing["metadata"].get("annotations") or {}).get(indexmap.ANNOTATION)
            covered = theirs is not None and set(indexes) <= set(indexmap.decode(theirs))
            done_here = existing["metadata"]["uid"] in self._done_uids
            if covered and not _is_finished(existing) and not done_here:
                logger.info("re-attaching to the running Job %s/%s", self.namespace, name)
                return existing
            self._delete_job(name, existing["metadata"]["uid"])
            deadline = time.monotonic() + DELETE_TIMEOUT
            while (again := self._read_job(name)) is not None:
                if again["metadata"]["uid"] != existing["metadata"]["uid"]:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"--backend k8s: the old Job {self.namespace}/{name} was not deleted "
                        f"within {DELETE_TIMEOUT:.0f} s: delete it (kubectl delete job {name} "
                        f"-n {self.namespace}), then run the same command again"
                    )
                time.sleep(0.2)
        try:
            created = self.batch.create_namespaced_job(
                self.namespace, body, field_validation="Strict"
            )
        except ApiException as exc:
            raise k8s_client.explain(
                exc, self._client, f"create Job {name}", self.namespace
            ) from exc
        return dict(self._client.sanitize_for_serialization(created))

    def dry_run_manifests(
        self, job_id: str, stages: Sequence[tuple[StageSpec, Sequence[int]]]
    ) -> list[dict[str, Any]]:
        """What the job would create (no cluster needed): its owner ConfigMap, then one
        Job per ``(stage, task indexes)``. The Jobs' ownerReferences are left out: they
        name the ConfigMap by the uid it gets when created."""
        out = [render.owner_config_map(job_id, self.settings)]
        out += [render.stage_job(stage, list(idx), self.settings) for stage, idx in stages]
        return out

    @staticmethod
    def to_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
        return render.to_yaml(manifests)

    # -- a stage -----------------------------------------------------------------------

    def run_stage(
        self,
        stage: StageSpec,
        *,
        indexes: Sequence[int],
        placement: Mapping[int, str] | None = None,
        on_event: EventSink | None = None,
    ) -> dict[int, dict[str, Any]]:
        indexes = sorted(indexes)
        if not indexes:
            return {}
        if not stage.result_entrypoint:
            raise ValueError(f"stage {stage.name!r}: --backend k8s needs a result_entrypoint")
        self.start()
        owner = self.owner(stage.job_id)
        servers = self.shuffle_servers() if self.settings.node_local else None
        if servers == {}:
            raise ClusterError(
                f"--node-local-shuffle: no shuffle server runs in namespace {self.namespace} "
                f"(no running pod labelled {nodeshuffle.SERVER_SELECTOR}): apply "
                "manifests/node-local/ (the mrk8s-shuffle-server DaemonSet and the "
                "mrk8s-shuffle-token Secret), wait for its pods to run, then run the same "
                "command again"
            )
        follows: list[_Follow] = []
        # One number for the stage: a node group of the reducers has its share of the pods.
        per_pod = render.tasks_per_pod(self.settings, len(indexes))
        for node, group in self._groups(stage, indexes, placement):
            body = render.stage_job(
                stage, group, self.settings, owner=owner, node=node, servers=servers,
                per_pod=per_pod,
            )  # fmt: skip
            job = self._attach_or_create(body, group)
            meta = job["metadata"]
            index_map = meta["annotations"][indexmap.ANNOTATION]
            follows.append(
                _Follow(
                    stage,
                    meta["name"],
                    meta["uid"],
                    indexmap.decode(index_map),
                    indexmap.per_pod(index_map),
                    on_event or (lambda event: None),
                    job=job,
                )
            )
            self._following.append(meta["name"])
        # Every group's Job runs at once, and is followed at once: a failure in any is
        # reported when it happens.
        self._follow(follows)
        self._done_uids.update(f.uid for f in follows)
        self._following = []
        fetch = resolve(stage.result_entrypoint)
        seen_results = {i: r for f in follows for i, r in f.results.items()}
        finished = {i for f in follows for i in f.finished}
        results: dict[int, dict[str, Any]] = {}
        for index in indexes:
            results[index] = seen_results.get(index) or dict(fetch(stage.payload, index, 0))
        # A task whose pod succeeded unseen (e.g. it was gone before a re-attached driver).
        emit = follows[0].emit
        for index in indexes:
            if index not in finished:
                attempt = int(results[index].get("attempt", 1))
                emit(TaskEvent(stage.name, index, attempt, "started"))
                emit(TaskEvent(stage.name, index, attempt, "finished", results[index]))
        return results

    def _groups(
        self, stage: StageSpec, indexes: Sequence[int], placement: Mapping[int, str] | None
    ) -> list[tuple[str | None, list[int]]]:
        """The stage's Jobs: one for every task, or, for the reducers of node-local
        shuffle, one per node the placement chose (pinned there), with its tasks."""
        if not (self.settings.node_local and stage.kind == "reduce" and placement):
            return [(None, list(indexes))]
        by_node: dict[str, list[int]] = {}
        for index in indexes:
            by_node.setdefault(placement[index], []).append(index)
        return sorted(by_node.items())

    def shuffle_servers(self) -> dict[str, str]:
        """``{node: base URL}`` of the shuffle-server DaemonSet's running pods.

        Read from the pods in the job's namespace (the driver may list pods, not
        nodes): each pod's node and host IP, and its container port named
        ``shuffle`` (else :data:`nodeshuffle.SERVER_PORT`). A node without a
        running server cannot serve its map outputs: it counts as gone.
        """
        self.start()
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=nodeshuffle.SERVER_SELECTOR
            ).items
        except ApiException as exc:
            raise k8s_client.explain(
                exc, self._client, "list the shuffle servers' pods", self.namespace
            ) from exc
        servers: dict[str, str] = {}
        for pod in pods:
            body = self._client.sanitize_for_serialization(pod)
            url = nodeshuffle.server_url(body)
            if url is not None:
                servers[body["spec"]["nodeName"]] = url
        return servers

    def _follow(self, follows: Sequence[_Follow]) -> None:
        """Follow a stage's Jobs (one, or one per node group) and their pods at once,
        until every Job is done; raise as soon as any fails.

        A Job is done when the Job controller marks it Complete, or as soon as
        every one of its tasks has a pod that succeeded (the worker exits 0
        only after its task committed): the controller's Complete follows,
        after its own batching delay of about a second, which the stage need
        not wait for.
        """
        events: queue.Queue[watch.Event] = queue.Queue()
        stage = follows[0].stage
        selector = ",".join(
            f"{k}={v}" for k, v in names.stage_labels(stage.job_id, stage.step, stage.kind).items()
        )
        by_uid = {f.uid: f for f in follows}
        followers = [
            f.start()
            for f in watch.jobs_and_pods(
                self._client, namespace=self.namespace, selector=selector, out=events
            )
        ]
        last_check = last_poll = time.monotonic()
        try:
            while True:
                for follow in follows:
                    if _condition(follow.job, "Failed"):
                        self._raise_failure(follow)
                if all(_is_done(f) for f in follows):
                    return
                batching = any(
                    seen.running is not None and len(seen.batch) > 1
                    for f in follows
                    for seen in f.pods.values()
                )
                if batching and time.monotonic() - last_poll >= BATCH_POLL_SECONDS:
                    last_poll = time.monotonic()
                    for follow in follows:
                        self._poll_batches(follow)
                    continue
                wait = BATCH_POLL_SECONDS if batching else CREATE_CHECK_SECONDS
                try:
                    kind, what, payload = events.get(timeout=wait)
                except queue.Empty:
                    kind, what, payload = "", "", None
                if what == "ERROR":
                    jobs = ", ".join(f.name for f in follows)
                    raise k8s_client.explain(payload, self._client, f"watch the {kind}s of {jobs}")
                items = payload if what == "LIST" else [payload] if payload else []
                if kind == "job" and what == "LIST":
                    # A (re-)list that lacks a followed Job: it was deleted, maybe
                    # before the watch began (the garbage collector removes a Job
                    # created for an owner ConfigMap that was just deleted).
                    listed = {obj["metadata"].get("uid") for obj in items}
                    for follow in follows:
                        if follow.uid not in listed and not _is_done(follow):
                            raise self._deleted(follow)
                for obj in items:
                    if kind == "job":
                        mine = by_uid.get(obj["metadata"].get("uid"))
                        if mine is None:
                            continue
                        if what == "DELETED" and not _is_done(mine):
                            raise self._deleted(mine)
                        mine.job = obj
                    elif kind == "pod":
                        for follow in follows:
                            if _owned_by(obj, follow.uid):
                                self._on_pod(follow, obj, deleted=what == "DELETED")
                if time.monotonic() - last_check > CREATE_CHECK_SECONDS:
                    last_check = time.monotonic()
                    for follow in follows:
                        if not follow.pods:
                            self._check_creation(follow)
        finally:
            for f in followers:
                f.stop()

    def _deleted(self, follow: _Follow) -> JobFailedError:
        return JobFailedError(
            f"{follow.stage.name}: Job {self.namespace}/{follow.name} was deleted while it "
            "ran (mrk8s cancel, kubectl delete, or its owner ConfigMap "
            f"{names.owner_name(follow.stage.job_id)} deleted)",
            stage=follow.stage.name,
        )

    @staticmethod
    def _batch(follow: _Follow, completion: int) -> list[int]:
        n = follow.per_pod
        return follow.tasks[completion * n : (completion + 1) * n]

    def _pod_batch(self, follow: _Follow, pod: Mapping[str, Any]) -> list[int]:
        """The tasks a pod runs (empty if its completion index is not the Job's)."""
        meta = pod.get("metadata") or {}
        value = (meta.get("labels") or {}).get(names.INDEX_LABEL)
        if value is None:
            value = (meta.get("annotations") or {}).get(names.INDEX_LABEL)
        if value is None or int(value) < 0:
            return []
        return self._batch(follow, int(value))

    def _start_next(self, follow: _Follow, seen: _PodSeen) -> None:
        """Report the pod's next task that has not finished as started (if any)."""
        seen.running = next((i for i in seen.batch if i not in follow.finished), None)
        if seen.running is not None:
            follow.emit(
                TaskEvent(
                    follow.stage.name, seen.running, seen.attempt, "started", worker=seen.name
                )
            )

    def _finish(
        self, follow: _Follow, seen: _PodSeen, index: int, result: dict[str, Any] | None
    ) -> None:
        """Report task ``index`` of a pod finished (its result read if not given)."""
        if result is None:
            try:
                fetch = resolve(follow.stage.result_entrypoint)
                result = dict(fetch(follow.stage.payload, index, 0))
            except Exception as exc:  # read again once the Job completes
                logger.info("result of task %d not readable yet: %s", index, exc)
                result = {}
        if result:
            follow.results[index] = result
        follow.finished.add(index)
        attempt = int(result.get("attempt") or seen.attempt)
        follow.emit(
            TaskEvent(follow.stage.name, index, attempt, "finished", result, worker=seen.name)
        )

    def _poll_batches(self, follow: _Follow) -> None:
        """For each running pod of a batch: has the task it runs committed? Then it
        finished, and the pod's next task started (its commit record is the sign)."""
        for seen in follow.pods.values():
            if not seen.ended and len(seen.batch) > 1:
                self._advance(follow, seen)

    def _advance(self, follow: _Follow, seen: _PodSeen) -> None:
        """Report the pod's tasks that committed since the last look, in order."""
        fetch = resolve(follow.stage.result_entrypoint)
        while seen.running is not None:
            index = seen.running
            try:
                result = dict(fetch(follow.stage.payload, index, 0))
            except Exception:
                return  # not committed yet
            self._finish(follow, seen, index, result)
            self._start_next(follow, seen)

    def _on_pod(self, follow: _Follow, pod: dict[str, Any], *, deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        seen = follow.pods.get(uid)
        if seen is None:
            batch = self._pod_batch(follow, pod)
            if not batch:
                return
            seen = follow.pods[uid] = _PodSeen(batch, _attempt(pod), pod["metadata"]["name"])
        if seen.ended:
            return
        stage, name = follow.stage, pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if not seen.started and phase in ("Running", "Succeeded", "Failed"):
            seen.started = True
            self._start_next(follow, seen)
        if phase == "Succeeded":
            seen.ended = True
            # The worker exits 0 only once every task of its batch committed.
            while seen.running is not None:
                self._finish(follow, seen, seen.running, None)
                self._start_next(follow, seen)
        elif phase == "Failed" or (deleted and seen.started):
            seen.ended = True
            if len(seen.batch) > 1:
                # The tasks of the batch that committed before the pod ended finished.
                self._advance(follow, seen)
            if podlog.is_disrupted(pod) or phase != "Failed":
                index = seen.running if seen.running is not None else seen.batch[0]
                error = TaskError(
                    "Disrupted",
                    f"pod {name} of task {index} of {stage.name} was evicted, preempted "
                    "or deleted: it runs again, and this does not count as a failure",
                    retryable=True,
                    user_error=False,
                )
                logger.warning("%s", error.message)
                if seen.running is not None:
                    follow.emit(
                        TaskEvent(
                            stage.name, index, seen.attempt, "cancelled", error=error, worker=name
                        )
                    )
                return
            if pod["metadata"].get("deletionTimestamp") and self._job_failing(follow):
                # Stopped by the Job controller because the Job failed: not an attempt's
                # failure (a failing stage stops its running attempts without an event).
                return
            log = self._log(name)
            said = podlog.failed_task(log)
            running = seen.running if seen.running is not None else seen.batch[0]
            index = said if said is not None and said in seen.batch else running
            error = podlog.task_error(pod, render.CONTAINER, log)
            follow.failures[index] = (seen.attempt, error)
            follow.emit(
                TaskEvent(stage.name, index, seen.attempt, "failed", error=error, worker=name)
            )
            if error.retryable and seen.attempt < stage.max_attempts:
                logger.warning(
                    "task %d of %s failed (attempt %d of %d), retrying: %s",
                    index,
                    stage.name,
                    seen.attempt,
                    stage.max_attempts,
                    error.message.splitlines()[0] if error.message else "",
                )

    def _job_failing(self, follow: _Follow) -> bool:
        """Whether the followed Job is failing (read afresh: its watch may lag the pods')."""
        if _condition(follow.job, "FailureTarget") or _condition(follow.job, "Failed"):
            return True
        current = self._read_job(follow.name)
        if current is None or current["metadata"]["uid"] != follow.uid:
            return True  # deleted
        follow.job = current
        return bool(_condition(current, "FailureTarget") or _condition(current, "Failed"))

    def _log(self, pod: str) -> str:
        try:
            return str(
                self.core.read_namespaced_pod_log(
                    pod, self.namespace, container=render.CONTAINER, _request_timeout=30
                )
            )
        except Exception as exc:
            logger.warning("could not read the log of pod %s: %s", pod, exc)
            return ""

    def _raise_failure(self, follow: _Follow) -> None:
        """The Job failed: raise JobFailedError with the failing task's own message."""
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"batch.kubernetes.io/controller-uid={follow.uid}"
        )
        for pod in pods.items:
            self._on_pod(follow, self._client.sanitize_for_serialization(pod), deleted=False)
        condition = _condition(follow.job, "Failed") or {}
        status = follow.job.get("status") or {}
        failed = indexmap.decode(status.get("failedIndexes") or "")
        culprit = None
        if condition.get("reason") == "PodFailurePolicy":
            users = [i for i, (_, e) in follow.failures.items() if e.user_error]
            culprit = users[0] if users else None
        elif failed:
            batch = self._batch(follow, failed[0])
            culprit = next((i for i in batch if i in follow.failures), None)
        if culprit is None and follow.failures:
            culprit = next(iter(follow.failures))
        if culprit is not None and culprit in follow.failures:
            attempt, error = follow.failures[culprit]
            raise JobFailedError.from_task_error(
                error, stage=follow.stage.name, index=culprit, attempt=attempt
            )
        raise JobFailedError(
            f"{follow.stage.name}: Job {self.namespace}/{follow.name} failed "
            f"({condition.get('reason', '?')}: {condition.get('message', '')}); "
            f"see kubectl describe job {follow.name} -n {self.namespace}",
            stage=follow.stage.name,
        )

    def _check_creation(self, follow: _Follow) -> None:
        """No pod yet: if the Job controller cannot create them, say why (and stop)."""
        try:
            events = self.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.uid={follow.uid}"
            ).items
        except ApiException:
            return  # no right to read events: keep waiting
        failed = [e for e in events if e.reason == "FailedCreate"]
        if failed:
            message = failed[-1].message
            self._delete_job(follow.name, follow.uid)
            raise ClusterError(
                f"--backend k8s: the pods of Job {self.namespace}/{follow.name} cannot be "
                f"created: {message}. Apply manifests/ (the mrk8s-worker ServiceAccount and "
                "the mrk8s PriorityClass), or fix what the message names, then run the "
                "same command again"
            )
