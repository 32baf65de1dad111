"""``scheduler.backends.k8s.nodeshuffle``: the servers' URLs and a task pod's parts.

Pure functions over plain dicts; the pods they make run on the test cluster
in tests/cluster/test_shuffle_server.py.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler.backends.k8s import nodeshuffle
from shuffle import httpfs, nodelocal


def node(name: str, ip: str | None, ready: str = "True") -> dict[str, Any]:
    addresses = [{"type": "Hostname", "address": name}]
    if ip is not None:
        addresses.append({"type": "InternalIP", "address": ip})
    return {
        "metadata": {"name": name},
        "status": {
            "addresses": addresses,
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready},
            ],
        },
    }


def test_server_urls_name_each_ready_node_by_its_internal_ip() -> None:
    nodes = [
        node("a", "10.0.0.5"),
        node("b", "fd00::7"),
        node("gone", "10.0.0.6", ready="Unknown"),  # its map outputs count as lost
        node("no-ip", None),
        {"metadata": {"name": "new"}, "status": {}},
    ]
    assert nodeshuffle.server_urls(nodes) == {
        "a": "http://10.0.0.5:7070/",
        "b": "http://[fd00::7]:7070/",
    }
    assert nodeshuffle.server_urls(nodes[:1], port=9) == {"a": "http://10.0.0.5:9/"}


def test_task_pod_parts_are_what_mrk8s_worker_reads() -> None:
    parts = nodeshuffle.task_pod_parts({"a": "http://10.0.0.5:7070/"})
    env = {e["name"]: e for e in parts["env"]}
    assert env["MRK8S_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env[nodelocal.NODE_DIR_ENV]["value"] == "/var/lib/mrk8s/shuffle"
    assert env[nodelocal.NODE_LOCAL_ENV]["value"] == "1"
    assert httpfs.parse_servers(env[httpfs.SERVERS_ENV]["value"]) == {"a": "http://10.0.0.5:7070/"}
    assert env[httpfs.TOKEN_FILE_ENV]["value"] == "/etc/mrk8s/shuffle-token/token"
    volumes = {v["name"]: v for v in parts["volumes"]}
    assert volumes["node-shuffle"]["hostPath"] == {
        "path": "/var/lib/mrk8s/shuffle",
        "type": "DirectoryOrCreate",
    }
    assert volumes["shuffle-token"]["secret"]["secretName"] == "mrk8s-shuffle-token"
    mounts = {m["name"]: m["mountPath"] for m in parts["volumeMounts"]}
    assert mounts == {
        "node-shuffle": "/var/lib/mrk8s/shuffle",
        "shuffle-token": "/etc/mrk8s/shuffle-token",
    }
    # Without a token: no Secret, no token file.
    bare = nodeshuffle.task_pod_parts({}, token=False)
    assert [v["name"] for v in bare["volumes"]] == ["node-shuffle"]
    assert httpfs.TOKEN_FILE_ENV not in {e["name"] for e in bare["env"]}
    assert (
        json.loads(next(e["value"] for e in bare["env"] if e["name"] == httpfs.SERVERS_ENV)) == {}
    )


def test_pin_to_node_is_a_required_node_affinity_on_the_node_name() -> None:
    affinity = nodeshuffle.pin_to_node("node-2")
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term == {
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]
    }


def test_a_node_local_stage_job_carries_the_parts_and_a_node_groups_pin() -> None:
    from scheduler.backends.k8s import names, render
    from scheduler.stage import StageSpec

    stage = StageSpec(
        name="step 1/1 reduce",
        num_tasks=4,
        entrypoint="mod:fn",
        payload={},
        command=("mrk8s", "worker", "--job", "s3://b/j", "--step", "0", "--stage", "reduce"),
        max_attempts=3,
        job_id="wc",
        step=0,
        kind="reduce",
    )
    settings = render.PodSettings(namespace="ns", image="img", node_local=True)
    servers = {"node-2": "http://10.0.0.2:7070/"}
    job = render.stage_job(stage, [1, 3], settings, node="node-2", servers=servers)
    assert job["metadata"]["name"] == names.stage_job_name("wc", 0, "reduce", "node-2")
    pod = job["spec"]["template"]["spec"]
    assert pod["affinity"] == nodeshuffle.pin_to_node("node-2")
    assert {v["name"] for v in pod["volumes"]} == {"scratch", "node-shuffle", "shuffle-token"}
    # The token file is group-readable; a kubelet gives the Secret's files the pod's fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    (container,) = pod["containers"]
    names_ = [e["name"] for e in container["env"]]
    assert len(names_) == len(set(names_))  # MRK8S_NODE once
    env = {e["name"]: e for e in container["env"]}
    assert httpfs.parse_servers(env[httpfs.SERVERS_ENV]["value"]) == servers
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/scratch",
        "/var/lib/mrk8s/shuffle",
        "/etc/mrk8s/shuffle-token",
    }
    # Object-store mode: none of it.
    plain = render.stage_job(stage, [1, 3], render.PodSettings(namespace="ns", image="img"))
    plain_pod = plain["spec"]["template"]["spec"]
    assert "affinity" not in plain_pod and "fsGroup" not in plain_pod["securityContext"]
    assert [v["name"] for v in plain_pod["volumes"]] == ["scratch"]
