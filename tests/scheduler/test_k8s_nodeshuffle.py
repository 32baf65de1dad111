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
