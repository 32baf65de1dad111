"""Where pods run: placement by the real scheduler, and a node deleted mid-job.

The scheduler (kube-scheduler) chooses the node; the node agent then runs the
pod there, which shows in the hostPath directory the pod wrote into: each
node's hostPath volumes live in that node's own directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import kubernetes.client
import psutil
import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster import kube
from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster


def _selector(node: str) -> dict[str, Any]:
    return {"nodeSelector": {"kubernetes.io/hostname": node}}


def _affinity(node: str) -> dict[str, Any]:
    term = {
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    }
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    }


@pytest.mark.timeout(90)
@pytest.mark.parametrize("placement", [_selector, _affinity], ids=["nodeSelector", "nodeAffinity"])
def test_the_scheduler_places_a_pod_on_the_chosen_node_and_it_runs_there(
    api: Any, cluster: Cluster, namespace: str, placement: Any
) -> None:
    nodes = kube.ready_nodes(api)
    target = nodes[-1]  # not the first one, which a default choice might hit by chance
    code = "import os\nopen('/data/where.txt', 'w').write(os.environ['NODE_NAME'])\n"
    pod_spec = {
        **placement(target),
        "volumes": [{"name": "data", "hostPath": {"path": f"/mrk8s/{namespace}"}}],
    }
    body = kube.python_job("placed", code, completions=1, pod=pod_spec)
    body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}
    ]
    kube.create_job(api, namespace, body)
    done = kube.wait_finished(api, namespace, "placed", timeout=60)

    assert kube.condition(done, "Complete"), done.status.conditions
    (pod,) = kube.pods(api, namespace, "placed")
    assert pod.spec.node_name == target
    scheduled = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert scheduled and scheduled[0].status == "True"
    written = {
        node: kube.node_directory(cluster, node) / "hostpath" / "mrk8s" / namespace / "where.txt"
        for node in nodes
    }
    assert written[target].read_text() == target
    assert [n for n, path in written.items() if path.exists()] == [target]


@pytest.mark.timeout(240)
def test_a_deleted_nodes_pods_are_collected_and_their_indexes_complete_elsewhere(
    api: Any, namespace: str
) -> None:
    # A pod runs until its node's release file appears: pods on the node we delete never finish.
    code = (
        "import os, sys, time\n"
        "release = os.path.join(sys.argv[1], os.environ['NODE_NAME'])\n"
        "while not os.path.exists(release): time.sleep(0.1)\n"
    )
    core = kubernetes.client.CoreV1Api(api)
    with tempfile.TemporaryDirectory() as releases:
        body = kube.python_job("orphans", code, completions=6, args=(releases,), backoffLimit=6)
        kube.create_job(api, namespace, body)

        def all_running() -> list[Any]:
            pods = kube.pods(api, namespace, "orphans")
            running = [p for p in pods if p.status.phase == "Running"]
            return running if len(running) == 6 else []

        first = kube.wait_until(all_running, timeout=60, what="6 pods running")
        by_node: dict[str, list[Any]] = {}
        for pod in first:
            by_node.setdefault(pod.spec.node_name, []).append(pod)
        assert len(kube.ready_nodes(api)) >= 2, "this test needs a second node to move to"
        doomed = max(by_node, key=lambda n: len(by_node[n]))
        for node in kube.ready_nodes(api):
            if node != doomed:
                Path(releases, node).touch()
        core.delete_node(doomed)

        def collected() -> bool:
            for pod in by_node[doomed]:
                try:
                    core.read_namespaced_pod(pod.metadata.name, namespace)
                except ApiException as error:
                    if error.status != 404:
                        raise
                else:
                    return False
            return True

        # The pod GC controller deletes pods bound to a node that no longer exists.
        kube.wait_until(
            collected, timeout=150, what=f"the pods of deleted {doomed} to be collected"
        )
        done = kube.wait_finished(api, namespace, "orphans", timeout=60)

    assert kube.condition(done, "Complete"), done.status.conditions
    assert done.status.succeeded == 6 and done.status.completed_indexes == "0-5"
    finished = kube.pods(api, namespace, "orphans")
    succeeded = [p for p in finished if p.status.phase == "Succeeded"]
    assert sorted(kube.index(p) for p in succeeded) == list(range(6))
    assert doomed not in {p.spec.node_name for p in succeeded}
    # The node agent killed the collected pods' processes.
    for pod in by_node[doomed]:
        pid = int(pod.status.container_statuses[0].container_id.split("://")[1])
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
