"""Node-local shuffle's pods on the test cluster: the shuffle server as a DaemonSet,
map pods on one node, reducer pods on another reading through the server.

What the Kubernetes backend's node-local mode puts in its pods
(``scheduler.backends.k8s.nodeshuffle``), run by the real control plane and
the node agent that runs pods as local processes: the hostPath directory
(each node's its own), the node's name from the downward API, the token
Secret mounted as a file, the servers' URLs from the Node objects'
InternalIPs, and reducers pinned by node affinity. The job's directory (plan
and commit records) is a local directory every node's processes reach,
standing for the bucket of a real cluster. Until ``manifests/`` holds the
server's DaemonSet, it is rendered here with the same names.
"""

from __future__ import annotations

import secrets
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

import mrk8s
from mrk8s.tasks.plan import JobPlan
from scheduler.backends.k8s import nodeshuffle
from shuffle import commit
from shuffle.store import FsspecStore
from tests.cluster import kube
from tests.cluster.controlplane import Cluster, free_port
from tests.cluster.shuffleserver import server_daemonset
from tests.util import WORDCOUNT, make_words, parse_text_output

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}"  # not pulled


def task_pod(
    name: str, job_dir: str, stage: str, index: int, node: str, servers: dict[str, str]
) -> dict[str, Any]:
    """A pod running one task, as a stage Job's pod does, pinned to ``node``."""
    parts = nodeshuffle.task_pod_parts(servers)
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "affinity": nodeshuffle.pin_to_node(node),
            "volumes": parts["volumes"],
            "containers": [
                {
                    "name": "task",
                    "image": IMAGE,
                    "command": ["python", "-m", "mrk8s.cli", "worker", "--job", job_dir],
                    "args": ["--step", "0", "--stage", stage, "--index", str(index)],
                    "env": parts["env"],
                    "volumeMounts": parts["volumeMounts"],
                }
            ],
        },
    }


def run_pods(core: Any, namespace: str, bodies: list[dict[str, Any]]) -> list[Any]:
    for body in bodies:
        core.create_namespaced_pod(namespace, body)

    def finished() -> list[Any] | None:
        pods = [core.read_namespaced_pod(b["metadata"]["name"], namespace) for b in bodies]
        return pods if all(p.status.phase in ("Succeeded", "Failed") for p in pods) else None

    pods: list[Any] = kube.wait_until(finished, timeout=150, what="the task pods to finish")
    for pod in pods:
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        assert pod.status.phase == "Succeeded", log
    return pods


def test_reducers_on_another_node_read_map_outputs_through_the_daemonset(
    cluster: Cluster, api: Any, namespace: str, tmp_path: Path
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    token = secrets.token_urlsafe(16)
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": nodeshuffle.TOKEN_SECRET}, "stringData": {"token": token}},
    )
    port = free_port()
    kubernetes.client.AppsV1Api(api).create_namespaced_daemon_set(namespace, server_daemonset(port))

    # A word count planned in a directory every node reaches; its tasks run below as pods.
    script = tmp_path / "wordcount.py"
    script.write_text(WORDCOUNT)
    text = make_words(30_000, vocab=2000, seed=5)
    (tmp_path / "in.txt").write_text(text)
    job_id = f"wc-{namespace}"
    mrk8s.run(
        str(script),
        [str(tmp_path / "in.txt")],
        output=str(tmp_path / "out"),
        shuffle_dir=str(tmp_path / "shuffle"),
        job_id=job_id,
        keep_shuffle=True,
        workers=1,
        reducers=2,
        max_split_bytes=len(text) // 3 + 1,
    )
    job_dir = str(tmp_path / "shuffle" / job_id)
    store = FsspecStore(job_dir)
    plan = JobPlan.loads(store.read_bytes("plan.json").decode())
    maps = len(plan.steps[0].splits)
    assert maps == 3
    store.remove(commit.COMMITS_DIR, recursive=True)
    store.remove("s0", recursive=True)

    # (A test before this one may have deleted a node: use the nodes there are.)
    nodes = kube.ready_nodes(api)
    assert len(nodes) >= 2, "this test needs two nodes"
    first, second = nodes[:2]

    def serving() -> list[Any] | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=shuffle-server"
        ).items
        if len(pods) != len(nodes) or any(p.status.phase != "Running" for p in pods):
            return None
        logs = [core.read_namespaced_pod_log(p.metadata.name, namespace) for p in pods]
        return pods if all("listening on" in log for log in logs) else None

    server_pods = kube.wait_until(serving, timeout=60, what="a listening shuffle server per node")
    node_objects = api.sanitize_for_serialization(core.list_node())["items"]  # as sent
    servers = nodeshuffle.server_urls(node_objects, port)
    assert sorted(servers) == nodes
    assert all(url.endswith(f":{port}/") for url in servers.values())

    run_pods(
        core,
        namespace,
        [task_pod(f"map-{i}", job_dir, "map", i, first, servers) for i in range(maps)],
    )
    first_dir = kube.node_directory(cluster, first) / "hostpath" / "var/lib/mrk8s/shuffle"
    for record in commit.read_stage(store, 0, "map", maps):
        assert record.node == first  # from the downward API
        assert record.data_path.startswith(f"{first_dir}/{job_id}/s0/map-")

    reducers = run_pods(
        core,
        namespace,
        [task_pod(f"reduce-{i}", job_dir, "reduce", i, second, servers) for i in range(2)],
    )
    assert {p.spec.node_name for p in reducers} == {second}
    counts: Counter[str] = Counter()
    staging = FsspecStore(plan.staging_url)
    for index in range(2):
        for key, value in parse_text_output(staging.read_bytes(f"part-{index:05d}").decode()):
            assert key not in counts
            counts[key] = value  # type: ignore[index,assignment]
    assert counts == Counter(text.split())
    assert {r.node for r in commit.read_stage(store, 0, "reduce", 2)} == {second}

    # Every map output came from the first node's server: 3 map outputs x 2 reducers.
    (on_first,) = [p for p in server_pods if p.spec.node_name == first]
    log = core.read_namespaced_pod_log(on_first.metadata.name, namespace)
    served = [line for line in log.splitlines() if f'"GET /{job_id}/s0/map-' in line]
    assert len(served) >= maps * 2 and all('" 206 ' in line for line in served)
    second_dir = kube.node_directory(cluster, second) / "hostpath" / "var/lib/mrk8s/shuffle"
    assert not (second_dir / job_id).exists()  # nothing recomputed on the reducers' node
