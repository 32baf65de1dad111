"""A DaemonSet on the test cluster: one pod on every node, as the shuffle server needs."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from tests.cluster import kube
from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster


@pytest.mark.timeout(90)
def test_a_daemonset_runs_one_pod_on_every_node(cluster: Cluster, api: Any, namespace: str) -> None:
    labels = {"app": "everywhere"}
    kubernetes.client.AppsV1Api(api).create_namespaced_daemon_set(
        namespace,
        {
            "metadata": {"name": "everywhere"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "main",
                                "image": "python",
                                "command": ["python", "-c", "import time; time.sleep(600)"],
                            }
                        ],
                    },
                },
            },
        },
    )
    core = kubernetes.client.CoreV1Api(api)
    nodes = sorted(n.metadata.name for n in core.list_node().items)

    def running() -> list[str] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=everywhere").items
        on = sorted(p.spec.node_name for p in pods if p.status.phase == "Running")
        return on if on == nodes else None

    assert kube.wait_until(running, timeout=60, what="a running pod on every node") == nodes
    assert len(nodes) == 3
