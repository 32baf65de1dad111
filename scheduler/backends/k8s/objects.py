"""A job's Kubernetes objects, found by their labels: state, pod logs, cancelling.

What ``mrk8s status``, ``mrk8s logs`` and ``mrk8s cancel`` ask the cluster
(the CLI renders the answers). Everything is found through the conventions of
:mod:`scheduler.backends.k8s.names`: the owner ConfigMap by name, the Jobs
and pods by ``mrk8s.io/job-id``, a stage's by ``mrk8s.io/step`` and
``mrk8s.io/stage``, a task's pod by the completion index the Job controller
puts on it, mapped to the pod's tasks through the index map in its
environment (:mod:`indexmap`). Cancelling deletes the owner with background propagation: the
garbage collector then deletes the Jobs it owns and, through them, the pods.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import indexmap, names
from scheduler.backends.k8s.connect import Connection, api_errors
from scheduler.errors import ClusterError
from shuffle.errors import UserError

#: The order stages are shown in (the driver first, then each step's map and reduce).
STAGE_ORDER = {"driver": 0, "map": 1, "reduce": 2}
#: Between looks at a pod whose container has not started, when following its log.
FOLLOW_WAIT = 0.5


class NoSuchJobError(UserError):
    """No Kubernetes object of this job id in the namespace."""


@dataclass(frozen=True)
class StageJob:
    """One Job of the mrk8s job: a stage's Indexed Job, or the driver's Job."""

    name: str
    step: int | None
    stage: str
    completions: int
    succeeded: int
    failed: int
    active: int
    state: str  # running, complete, failed, suspended


@dataclass(frozen=True)
class PodState:
    name: str
    step: int | None
    stage: str
    index: int | None  # the (first) task the pod runs
    phase: str
    node: str
    exit_code: int | None
    created: str
    tasks: tuple[int, ...] = ()  # every task the pod runs (a batch: --tasks-per-pod)


@dataclass
class JobState:
    """What the cluster holds of one mrk8s job."""

    job_id: str
    namespace: str
    owner: str | None  # the owner ConfigMap's name, if it exists
    jobs: list[StageJob] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)

    def pods_by_phase(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in self.pods:
            counts[pod.phase] = counts.get(pod.phase, 0) + 1
        return counts


def _step(labels: dict[str, str]) -> int | None:
    value = labels.get(names.STEP_LABEL)
    return int(value) if value and value.isdigit() else None


def _sort_key(step: int | None, stage: str, index: int | None = None) -> tuple[int, int, int]:
    return (-1 if step is None else step, STAGE_ORDER.get(stage, 9), -1 if index is None else index)


def _job_state(job: Any) -> str:
    conditions = {c.type for c in job.status.conditions or [] if c.status == "True"}
    if "Complete" in conditions:
        return "complete"
    if "Failed" in conditions:
        return "failed"
    if job.spec.suspend:
        return "suspended"
    return "running"


def _pod_state(pod: Any) -> PodState:
    labels = pod.metadata.labels or {}
    annotations = pod.metadata.annotations or {}
    completion = labels.get(names.INDEX_LABEL) or annotations.get(names.INDEX_LABEL)
    tasks: tuple[int, ...] = ()
    if completion is not None and str(completion).isdigit():
        tasks = (int(completion),)
        for container in pod.spec.containers or []:
            for var in container.env or []:
                if var.name == indexmap.ENV and var.value:
                    with contextlib.suppress(ValueError):  # not ours: the index alone
                        tasks = tuple(indexmap.batch(var.value, int(completion)))
    exit_code = None
    for status in pod.status.container_statuses or []:
        if status.state and status.state.terminated:
            exit_code = status.state.terminated.exit_code
    return PodState(
        name=pod.metadata.name,
        step=_step(labels),
        stage=labels.get(names.STAGE_LABEL, ""),
        index=tasks[0] if tasks else None,
        phase=pod.status.phase or "Unknown",
        node=pod.spec.node_name or "",
        exit_code=exit_code,
        created=pod.metadata.creation_timestamp.isoformat()
        if pod.metadata.creation_timestamp
        else "",
        tasks=tasks,
    )


def known_job_ids(connection: Connection) -> list[str]:
    """The ids of the mrk8s jobs whose owner object is in the namespace."""
    core = kubernetes.client.CoreV1Api(connection.api)
    with api_errors(connection, "listing mrk8s jobs"):
        owners = core.list_namespaced_config_map(
            connection.namespace, label_selector=f"{names.APP_LABEL}={names.APP}"
        ).items
    ids = []
    for owner in owners:
        job_id = (owner.metadata.annotations or {}).get(names.JOB_ID_ANNOTATION)
        if job_id and owner.metadata.name == names.owner_name(job_id):
            ids.append(job_id)
    return sorted(ids)


def no_such_job(connection: Connection, job_id: str) -> NoSuchJobError:
    try:
        ids = known_job_ids(connection)
    except ClusterError:
        # Not allowed to list config maps: say what we know without the list.
        listed = "the jobs there cannot be listed with these credentials"
    else:
        listed = f"the jobs there are: {', '.join(ids[:20])}" if ids else "it holds no mrk8s job"
    return NoSuchJobError(
        f"no job {job_id!r} in namespace {connection.namespace!r} ({connection.source}); "
        f"{listed}. Check the id `mrk8s submit` printed, give the --namespace (and "
        f"--context) it ran in, or list them with `kubectl get configmaps -n "
        f"{connection.namespace} -l {names.APP_LABEL}={names.APP}`"
    )


def find(connection: Connection, job_id: str) -> JobState:
    """The job's owner, Jobs and pods; :class:`NoSuchJobError` if the cluster has none."""
    core = kubernetes.client.CoreV1Api(connection.api)
    batch = kubernetes.client.BatchV1Api(connection.api)
    namespace, selector = connection.namespace, names.job_selector(job_id)
    owner: str | None = names.owner_name(job_id)
    with api_errors(connection, f"reading job {job_id!r}"):
        try:
            core.read_namespaced_config_map(owner, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            owner = None
        jobs = batch.list_namespaced_job(namespace, label_selector=selector).items
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    if owner is None and not jobs and not pods:
        raise no_such_job(connection, job_id)
    state = JobState(job_id, namespace, owner)
    for job in jobs:
        labels = job.metadata.labels or {}
        state.jobs.append(
            StageJob(
                name=job.metadata.name,
                step=_step(labels),
                stage=labels.get(names.STAGE_LABEL, ""),
                completions=job.spec.completions or 1,
                succeeded=job.status.succeeded or 0,
                failed=job.status.failed or 0,
                active=job.status.active or 0,
                state=_job_state(job),
            )
        )
    state.jobs.sort(key=lambda j: (*_sort_key(j.step, j.stage), j.name))
    state.pods = sorted(
        (_pod_state(p) for p in pods),
        key=lambda p: (*_sort_key(p.step, p.stage, p.index), p.created, p.name),
    )
    return state


def select_pods(
    state: JobState, *, step: int | None = None, stage: str | None = None, index: int | None = None
) -> list[PodState]:
    """The job's pods of that step, stage and task index (None: any)."""
    return [
        p
        for p in state.pods
        if (step is None or p.step == step)
        and (stage is None or p.stage == stage)
        and (index is None or index in (p.tasks or (p.index,)))
    ]


def _waiting(exc: ApiException) -> bool:
    """The API server's answer for a container that has not started yet."""
    return exc.status == 400 and "waiting to start" in str(exc.body)


def read_log(connection: Connection, pod: str) -> str | None:
    """A pod's log as it is now; None while its container has not started."""
    core = kubernetes.client.CoreV1Api(connection.api)
    with api_errors(connection, f"reading the log of pod {pod}"):
        try:
            response = core.read_namespaced_pod_log(
                pod, connection.namespace, _preload_content=False
            )
        except ApiException as exc:
            if _waiting(exc):
                return None
            raise
        return bytes(response.data).decode("utf-8", errors="replace")


def follow_log(connection: Connection, pod: str, *, timeout: float | None = None) -> Iterator[str]:
    """A pod's log as it is written, until its container ends (waits for it to start)."""
    core = kubernetes.client.CoreV1Api(connection.api)
    deadline = None if timeout is None else time.monotonic() + timeout
    with api_errors(connection, f"following the log of pod {pod}"):
        while True:
            try:
                response = core.read_namespaced_pod_log(
                    pod, connection.namespace, follow=True, _preload_content=False
                )
                break
            except ApiException as exc:
                if not _waiting(exc) or (deadline is not None and time.monotonic() > deadline):
                    raise
                time.sleep(FOLLOW_WAIT)
        try:
            for chunk in response.stream(4096, decode_content=True):
                yield bytes(chunk).decode("utf-8", errors="replace")
        finally:
            response.release_conn()


@dataclass(frozen=True)
class Cancelled:
    """What ``cancel`` deleted: the owner, and the Jobs and pods that go with it."""

    owner: str | None
    jobs: list[str]
    pods: int


def cancel(connection: Connection, job_id: str) -> Cancelled:
    """Delete the job's owner ConfigMap with background propagation (its Jobs and their pods
    follow); Jobs of the job that name no owner are deleted themselves, the same way."""
    state = find(connection, job_id)
    core = kubernetes.client.CoreV1Api(connection.api)
    batch = kubernetes.client.BatchV1Api(connection.api)
    with api_errors(connection, f"cancelling job {job_id!r}"):
        owned: set[str] = set()
        if state.owner is not None:
            for job in batch.list_namespaced_job(
                connection.namespace, label_selector=names.job_selector(job_id)
            ).items:
                if any(r.kind == "ConfigMap" for r in job.metadata.owner_references or []):
                    owned.add(job.metadata.name)
            try:
                core.delete_namespaced_config_map(
                    state.owner, connection.namespace, propagation_policy="Background"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
        for job in state.jobs:
            if job.name not in owned:
                try:
                    batch.delete_namespaced_job(
                        job.name, connection.namespace, propagation_policy="Background"
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
    return Cancelled(state.owner, [j.name for j in state.jobs], len(state.pods))
