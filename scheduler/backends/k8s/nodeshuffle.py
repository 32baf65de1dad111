"""Node-local shuffle on Kubernetes: what a task pod needs, and the shuffle servers' URLs.

In node-local mode a map task writes its output to its node's hostPath
directory :data:`HOST_DIR` and records its node (``spec.nodeName``, from the
downward API); a reducer reads its own node's map outputs from that
directory and other nodes' from their shuffle servers (the DaemonSet
:data:`SERVER_NAME` of ``manifests/``, ``mrk8s shuffle-server``), with the
token of the Secret :data:`TOKEN_SECRET` mounted as a file. This module
turns that into pod-spec pieces (:func:`task_pod_parts`) and the servers'
map from the cluster's Node objects (:func:`server_urls`); the executor puts
them into the stage Jobs it renders. Plain dicts in, plain dicts out: no
API calls here.

The environment it sets is what ``mrk8s worker`` reads:
``$MRK8S_NODE`` (:func:`mrk8s.tasks.process.node_name`),
``$MRK8S_NODE_SHUFFLE_DIR`` and ``$MRK8S_NODE_LOCAL_SHUFFLE``
(:mod:`shuffle.nodelocal`), ``$MRK8S_SHUFFLE_SERVERS`` and
``$MRK8S_SHUFFLE_TOKEN_FILE`` (:mod:`shuffle.httpfs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from shuffle import httpfs, nodelocal

#: The node's directory for map outputs, the same path in the server and task pods.
HOST_DIR = "/var/lib/mrk8s/shuffle"
#: The DaemonSet serving it, and its container port (named ``shuffle``).
SERVER_NAME = "mrk8s-shuffle-server"
SERVER_PORT = 7070
#: The Secret holding the servers' bearer token (key ``token``), and where pods mount it.
TOKEN_SECRET = "mrk8s-shuffle-token"
TOKEN_KEY = "token"
TOKEN_DIR = "/etc/mrk8s/shuffle-token"

#: The labels of the server's pods (manifests/node-local/shuffle-server.yaml).
SERVER_SELECTOR = "app.kubernetes.io/name=mrk8s,app.kubernetes.io/component=shuffle-server"

#: The volume names the parts below add to a pod.
SHUFFLE_VOLUME = "node-shuffle"
TOKEN_VOLUME = "shuffle-token"


def server_urls(nodes: Iterable[Mapping[str, Any]], port: int = SERVER_PORT) -> dict[str, str]:
    """``{node name: http://<InternalIP>:port/}`` for the Ready nodes among ``nodes``.

    ``nodes`` are Node objects as the API returns them (dicts). A node that
    is not Ready or has no InternalIP is left out: its map outputs count as
    lost, and the reducer that needs them recomputes them.
    """
    urls: dict[str, str] = {}
    for node in nodes:
        status = node.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        ips = [a["address"] for a in status.get("addresses") or [] if a["type"] == "InternalIP"]
        if ready and ips:
            host = f"[{ips[0]}]" if ":" in ips[0] else ips[0]
            urls[node["metadata"]["name"]] = f"http://{host}:{port}/"
    return urls


def server_url(pod: Mapping[str, Any]) -> str | None:
    """The base URL of a running shuffle-server pod (a dict as the API sends it), else None.

    Its node's address (``status.hostIP``, the server listens on the node's
    address through its hostPort) and its container port named ``shuffle``.
    """
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    if status.get("phase") != "Running" or not node or not status.get("hostIP"):
        return None
    port = SERVER_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == "shuffle":
                port = int(p["containerPort"])
    host = status["hostIP"]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def task_pod_parts(servers: Mapping[str, str], *, token: bool = True) -> dict[str, Any]:
    """The volumes, volume mounts and environment a task pod needs in node-local mode.

    Returns ``{"volumes": [...], "volumeMounts": [...], "env": [...]}``:
    the node's hostPath directory (created if missing), the token Secret
    (when ``token``) and the variables ``mrk8s worker`` reads.
    """
    volumes: list[dict[str, Any]] = [
        {"name": SHUFFLE_VOLUME, "hostPath": {"path": HOST_DIR, "type": "DirectoryOrCreate"}}
    ]
    mounts: list[dict[str, Any]] = [{"name": SHUFFLE_VOLUME, "mountPath": HOST_DIR}]
    env: list[dict[str, Any]] = [
        {"name": "MRK8S_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": nodelocal.NODE_DIR_ENV, "value": HOST_DIR},
        {"name": nodelocal.NODE_LOCAL_ENV, "value": "1"},
        {"name": httpfs.SERVERS_ENV, "value": json.dumps(dict(servers), sort_keys=True)},
    ]
    if token:
        volumes.append(
            {
                "name": TOKEN_VOLUME,
                "secret": {
                    "secretName": TOKEN_SECRET,
                    "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
        env.append({"name": httpfs.TOKEN_FILE_ENV, "value": f"{TOKEN_DIR}/{TOKEN_KEY}"})
    return {"volumes": volumes, "volumeMounts": mounts, "env": env}


def pin_to_node(node: str) -> dict[str, Any]:
    """The ``affinity`` that keeps a pod on ``node`` (a reducer placed where its data is)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }
