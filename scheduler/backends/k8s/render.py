"""The manifests of a job's Kubernetes objects, as plain dicts (no cluster needed).

Used by :class:`scheduler.backends.k8s.executor.KubernetesExecutor` to create
them and by ``mrk8s run --dry-run`` to print them. Two kinds:

- the job's owner object, the ConfigMap :func:`names.owner_name`, which
  every stage Job names in its ``ownerReferences`` (deleting it, background
  propagation, deletes the Jobs and through them the pods);
- one ``batch/v1`` Indexed Job per stage run (:func:`stage_job`):
  ``completions`` = the pods to run, each running a batch of
  :func:`tasks_per_pod` of the stage's pending tasks one after another (an
  index map, :mod:`indexmap`, tells each pod which tasks its completion
  index is), ``parallelism`` = the workers, ``restartPolicy: Never``,
  ``backoffLimitPerIndex`` = ``max_attempts - 1`` (attempts of a pod: a
  retried pod skips the tasks of its batch that committed) with
  ``maxFailedIndexes: 0`` (an index that used up
  its attempts fails the stage at once, as on the other backends),
  ``podReplacementPolicy: Failed`` (a retry starts once the failed pod has
  stopped, never beside it), and a ``podFailurePolicy`` that ignores
  disruptions (``DisruptionTarget``: eviction, preemption, drain) and fails
  the Job at once on the worker's user-error exit code 2 (unless
  ``retry_user_errors``). Pods meet the Pod Security "restricted" level:
  non-root, no privilege escalation, every capability dropped,
  ``RuntimeDefault`` seccomp, a read-only root filesystem with an
  ``emptyDir`` at :data:`SCRATCH` for temporary files (``TMPDIR``, ``HOME``).

The attempt number of a pod comes from the Job controller's own counters on
the pod (``batch.kubernetes.io/job-index-failure-count`` and
``...-ignored-failure-count``, through the downward API), so a retry never
overwrites the output of an earlier attempt of its task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.backends.k8s import indexmap, names, nodeshuffle
from scheduler.stage import StageSpec

#: The worker's exit code for a user error (``mrk8s.cli.worker``): never retried.
USER_ERROR_EXIT = 2
#: The container's name in every stage pod.
CONTAINER = "task"
#: Where the pod's scratch volume is mounted (the root filesystem is read-only).
SCRATCH = "/scratch"
#: A non-root user for the container (restricted Pod Security wants non-root;
#: a numeric id lets the kubelet check it whatever the image's USER says): the
#: UID of manifests/Dockerfile's user (tests/manifests/test_dockerfile.py checks).
RUN_AS_USER = 10001

#: The Job controller's counters on each pod of a Job with backoffLimitPerIndex.
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
IGNORED_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
#: The environment variables of a pod that carry them to ``mrk8s worker``.
FAILURES_ENV = "MRK8S_INDEX_FAILURES"
IGNORED_FAILURES_ENV = "MRK8S_INDEX_IGNORED_FAILURES"

#: What a pod-failure-policy rule on a condition needs (servers up to 1.34 insist on it).
_TRUE = "True"


@dataclass(frozen=True, slots=True)
class PodSettings:
    """Where and how a job's pods run (the ``--backend k8s`` options)."""

    #: Namespace of every object of the job.
    namespace: str = "mrk8s"
    #: The worker image (it has mrk8s and the job's dependencies installed).
    image: str = "mrk8s:latest"
    #: Pods of a stage at once; None: every task of the stage at once.
    workers: int | None = None
    #: CPU request and limit of a task's pod (Kubernetes quantity).
    cpu: str = "1"
    #: Memory request and limit of a task's pod, in bytes.
    memory: int = 1 << 30
    #: Seconds a finished Job (and its pods) stays for inspection.
    ttl_seconds: int = 3600
    #: The task pods' service account (no API rights; its token is not mounted).
    service_account: str = "mrk8s-worker"
    #: The (non-preempting) PriorityClass of task pods.
    priority_class: str = "mrk8s"
    #: Secrets whose keys become the pods' environment (credentials of the storage).
    env_secrets: tuple[str, ...] = ()
    #: Extra environment of the pods.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Node-local shuffle: map outputs on each node's hostPath directory, read
    #: across nodes from the shuffle-server DaemonSet (:mod:`nodeshuffle`).
    node_local: bool = False
    #: Whether the shuffle servers want the token of the Secret mrk8s-shuffle-token.
    shuffle_token: bool = True
    #: Tasks each pod runs, one after another in one process; None: as many as keep
    #: every worker busy (:func:`tasks_per_pod`).
    tasks_per_pod: int | None = None


def tasks_per_pod(settings: PodSettings, tasks: int) -> int:
    """How many of a stage's ``tasks`` each pod runs.

    ``settings.tasks_per_pod`` if given; else, with ``workers`` pods at once,
    ``ceil(tasks / workers)``: each worker slot gets one pod, which pays the
    interpreter's start, the imports and the storage client once for its
    batch; with no ``workers`` (every task at once) one task per pod.
    """
    if settings.tasks_per_pod is not None:
        return max(1, settings.tasks_per_pod)
    if not settings.workers or tasks <= 0:
        return 1
    return max(1, -(-tasks // settings.workers))


def quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: ``768Mi`` when whole mebibytes, else bytes."""
    for unit, shift in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if size % (1 << shift) == 0 and size:
            return f"{size >> shift}{unit}"
    return str(size)


def owner_config_map(job_id: str, settings: PodSettings) -> dict[str, Any]:
    """The ConfigMap owning every object of job ``job_id``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.owner_name(job_id),
            "namespace": settings.namespace,
            "labels": names.job_labels(job_id),
            "annotations": {names.JOB_ID_ANNOTATION: job_id},
        },
        "data": {"job-id": job_id},
    }


def owner_reference(config_map: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to the owner ConfigMap (which must have its uid)."""
    meta = config_map["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "blockOwnerDeletion": True,
    }


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def _annotation(key: str) -> str:
    return f"metadata.annotations['{key}']"


def _failure_policy(stage: StageSpec) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            # Eviction, preemption, a drained node: not the task's fault, not counted.
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": _TRUE}],
        }
    ]
    if not stage.retry_user_errors:
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [USER_ERROR_EXIT],
                },
            }
        )
    return {"rules": rules}


def stage_job(
    stage: StageSpec,
    indexes: Sequence[int],
    settings: PodSettings,
    *,
    owner: Mapping[str, Any] | None = None,
    node: str | None = None,
    servers: Mapping[str, str] | None = None,
    per_pod: int | None = None,
) -> dict[str, Any]:
    """The Indexed Job running tasks ``indexes`` of ``stage`` (see the module docstring).

    With ``settings.node_local``, its pods also get what node-local shuffle
    needs (:func:`nodeshuffle.task_pod_parts`, with the shuffle servers'
    ``servers``); with ``node``, the Job is that node's group of the stage
    (its own name) and its pods are pinned there by node affinity. Each pod
    runs ``per_pod`` of the tasks (default: :func:`tasks_per_pod` of them).
    """
    if not stage.command:
        raise ValueError(f"stage {stage.name!r} has no container command to run in a pod")
    if not indexes:
        raise ValueError(f"stage {stage.name!r}: a Job needs at least one task to run")
    job_id = stage.job_id
    labels = names.stage_labels(job_id, stage.step, stage.kind)
    if per_pod is None:
        per_pod = tasks_per_pod(settings, len(indexes))
    index_map = indexmap.encode(list(indexes), per_pod)
    pods = indexmap.pods(index_map)
    env: list[dict[str, Any]] = [
        {"name": indexmap.ENV, "value": index_map},
        {"name": FAILURES_ENV, **_field(_annotation(FAILURE_COUNT_ANNOTATION))},
        {"name": IGNORED_FAILURES_ENV, **_field(_annotation(IGNORED_FAILURE_COUNT_ANNOTATION))},
        # Where the task's data lives (commit records name it; placement reads it).
        {"name": "MRK8S_NODE", **_field("spec.nodeName")},
        {"name": "TMPDIR", "value": SCRATCH},
        {"name": "HOME", "value": SCRATCH},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        *({"name": k, "value": v} for k, v in sorted(settings.env.items())),
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.image,
        "command": list(stage.command),
        "env": env,
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": quantity(settings.memory)},
            "limits": {"cpu": settings.cpu, "memory": quantity(settings.memory)},
        },
        "securityContext": _restricted_container_security(),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "workingDir": SCRATCH,
    }
    if settings.env_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in settings.env_secrets]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if settings.node_local:
        parts = nodeshuffle.task_pod_parts(servers or {}, token=settings.shuffle_token)
        have = {e["name"] for e in env}
        env += [e for e in parts["env"] if e["name"] not in have]
        container["volumeMounts"] += parts["volumeMounts"]
        volumes += parts["volumes"]
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if settings.node_local:
        # A kubelet makes a Secret volume's files root's, readable by the pod's
        # fsGroup: without one the token file (mode 0440) is unreadable as non-root.
        pod_security["fsGroup"] = RUN_AS_USER
    group = names.label_value(node) if node else ""
    metadata: dict[str, Any] = {
        "name": names.stage_job_name(job_id, stage.step, stage.kind, group),
        "namespace": settings.namespace,
        "labels": labels,
        "annotations": {names.JOB_ID_ANNOTATION: job_id, indexmap.ANNOTATION: index_map},
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    workers = settings.workers or pods
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": pods,
            "parallelism": min(workers, pods),
            "backoffLimitPerIndex": stage.max_attempts - 1,
            "maxFailedIndexes": 0,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _failure_policy(stage),
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {names.JOB_ID_ANNOTATION: job_id},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "priorityClassName": settings.priority_class,
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": volumes,
                    **({"affinity": nodeshuffle.pin_to_node(node)} if node else {}),
                },
            },
        },
    }


def to_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
    """Manifests as one multi-document YAML text (what ``kubectl apply -f`` reads)."""
    import yaml

    return "---\n".join(
        yaml.safe_dump(json.loads(json.dumps(m)), sort_keys=False) for m in manifests
    )
