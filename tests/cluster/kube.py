"""Small helpers the cluster tests share: Job bodies, waiting on a Job, pods of a Job."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.cluster.controlplane import Cluster

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.3
) -> Any:
    """Poll predicate until it returns something true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}", pytrace=False)
        time.sleep(interval)


def node_directory(cluster: Cluster, node: str) -> Path:
    """Where the node agent keeps a node's hostPath volumes and pods."""
    return cluster.state / "nodes" / node


def python_job(
    name: str,
    code: str,
    *,
    completions: int,
    parallelism: int | None = None,
    args: tuple[str, ...] = (),
    **spec: Any,
) -> dict[str, Any]:
    """An Indexed Job whose one container runs `python -c code args...` (restartPolicy Never)."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "main",
                # Not pulled: the node agent runs the command with this machine's Python.
                "image": f"python:{sys.version_info.major}.{sys.version_info.minor}",
                "command": ["python", "-c", code, *args],
                "env": [
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ],
            }
        ],
    }
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism or completions,
            "template": {"spec": pod_spec},
            **spec,
        },
    }


def create_job(api: Any, namespace: str, body: dict[str, Any]) -> None:
    kubernetes.client.BatchV1Api(api).create_namespaced_job(namespace, body)


def job(api: Any, namespace: str, name: str) -> Any:
    return kubernetes.client.BatchV1Api(api).read_namespaced_job_status(name, namespace)


def condition(job_object: Any, kind: str) -> Any:
    """The Job's condition of this type if it is True, else None."""
    for c in job_object.status.conditions or []:
        if c.type == kind and c.status == "True":
            return c
    return None


def wait_finished(api: Any, namespace: str, name: str, *, timeout: float) -> Any:
    """The Job once the Job controller marked it Complete or Failed."""

    def finished() -> Any:
        current = job(api, namespace, name)
        if condition(current, "Complete") or condition(current, "Failed"):
            return current
        return None

    return wait_until(finished, timeout=timeout, what=f"Job {namespace}/{name} to finish")


def pods(api: Any, namespace: str, job_name: str) -> list[Any]:
    """Every pod of the Job that still exists."""
    return (
        kubernetes.client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
        .items
    )


def index(pod: Any) -> int:
    return int(pod.metadata.annotations[INDEX_ANNOTATION])


def ready_nodes(api: Any) -> list[str]:
    names = []
    for node in kubernetes.client.CoreV1Api(api).list_node().items:
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
            names.append(node.metadata.name)
    return sorted(names)
