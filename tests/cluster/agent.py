"""The node agent that runs pods as local processes: the kubelet of the test cluster's nodes.

It is the one stand-in of the test cluster; the control plane it talks to is
the real Kubernetes code (`controlplane.py`). For each node it is given, it

- registers the Node (Ready, capacity and allocatable, the labels a kubelet
  sets, its own loopback address 127.0.0.x as InternalIP, which is also the
  IP of its pods) with the node's own client certificate
  (`system:node:NAME`, so the Node authorizer and NodeRestriction apply);
- renews the node's Lease every 10 s (and its Ready condition every 60 s),
  so the node lifecycle and pod GC controllers can run; like a kubelet it does
  not register a deleted Node again;
- lists the pods bound to the node, then watches from the list's
  resourceVersion with bookmarks, and lists again on 410 Gone (what it does
  per event is idempotent);
- runs each pod (`pods.PodRun`): the image is not pulled, the pod's command
  runs with this machine's Python environment as a local process group;
- serves the kubelet's log endpoint on the node's address (`logserver.py`).

Run as `python -m tests.cluster.agent CONFIG.json` (controlplane.py writes
the config). SIGTERM stops it: every pod's process group is killed first.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.cluster import logserver, processes
from tests.cluster.pods import Node, Pod, PodRun

logger = logging.getLogger("tests.cluster.agent")

LEASE_SECONDS = 40  # a kubelet's default nodeLeaseDurationSeconds
RENEW_EVERY = 10.0  # a kubelet renews at a quarter of the lease's duration
STATUS_EVERY = 60.0
# Each node advertises this much: enough for a test's pods to be placed side by side,
# not what this machine has (the pods share its 2 cores).
CAPACITY = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
WATCH_SECONDS = 300  # the server ends a watch after this; we watch again from the last version


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """One node: its registration, Lease, pod watch, pods and log endpoint."""

    def __init__(self, config: dict[str, Any], node: dict[str, Any]) -> None:
        self.name: str = node["name"]
        self.ip: str = node["ip"]
        self.node_config = node
        self.config = config
        configuration = kubernetes.client.Configuration()
        configuration.host = config["server"]
        configuration.ssl_ca_cert = config["ca"]
        configuration.cert_file = node["client_cert"]
        configuration.key_file = node["client_key"]
        configuration.connection_pool_maxsize = 32
        self.client = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.leases = kubernetes.client.CoordinationV1Api(self.client)
        self.directory = Path(config["state"]) / self.name
        self.directory.mkdir(parents=True, exist_ok=True)
        server = urllib.parse.urlsplit(config["server"])
        self.node = Node(
            name=self.name,
            ip=self.ip,
            directory=self.directory,
            apiserver_host=server.hostname or "127.0.0.1",
            apiserver_port=server.port or 443,
            api=self.core,
            **({"bin": Path(config["pod_bin"])} if config.get("pod_bin") else {}),
        )
        self.runs: dict[str, PodRun] = {}  # by uid
        self.by_name: dict[tuple[str, str], PodRun] = {}  # the newest run of (namespace, name)
        self.lock = threading.Lock()
        self.deleted = threading.Event()  # our Node object was deleted
        self.port = 0

    # -- the Node and its Lease ---------------------------------------------------------

    def start(self, version: str) -> None:
        self.port, _ = logserver.serve(
            node=self.name,
            ip=self.ip,
            cert=Path(self.node_config["serving_cert"]),
            key=Path(self.node_config["serving_key"]),
            client_ca=Path(self.config["apiserver_client_ca"]),
            lookup=self.lookup,
        )
        self._register(version)
        threading.Thread(target=self._heartbeat, name=f"lease-{self.name}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True).start()

    def _node_status(self) -> dict[str, Any]:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self.started,
            }

        return {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no pressure"),
                condition(
                    "Ready", "True", "KubeletReady", "the node agent is posting ready status"
                ),
            ]
        }

    def _register(self, version: str) -> None:
        self.started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                },
            },
            "status": {
                "capacity": CAPACITY,
                "allocatable": CAPACITY,
                "addresses": [
                    {"type": "InternalIP", "address": self.ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "nodeInfo": {
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": platform.release(),
                    "osImage": "the node agent that runs pods as local processes",
                    "containerRuntimeVersion": "local-processes://0",
                    "kubeletVersion": version,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
                **self._node_status(),
            },
        }
        try:
            created = self.core.create_node(body, _preload_content=False)
            uid = json.loads(created.data)["metadata"]["uid"]
        except ApiException as error:
            if error.status != 409:
                raise
            existing = json.loads(self.core.read_node(self.name, _preload_content=False).data)
            uid = existing["metadata"]["uid"]
        # Status as the kubelet writes it, through nodes/status (create may drop it).
        self.core.patch_node_status(self.name, {"status": body["status"]}, _preload_content=False)
        lease = {
            "metadata": {
                "name": self.name,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": uid}
                ],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now(),
            },
        }
        try:
            self.leases.create_namespaced_lease("kube-node-lease", lease, _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise
        logger.info("node %s registered at %s, logs on port %d", self.name, self.ip, self.port)

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.deleted.wait(RENEW_EVERY):
            try:
                self.leases.patch_namespaced_lease(
                    self.name,
                    "kube-node-lease",
                    {"spec": {"renewTime": micro_now()}},
                    _preload_content=False,
                )
                if time.monotonic() - last_status >= STATUS_EVERY:
                    self.core.patch_node_status(
                        self.name, {"status": self._node_status()}, _preload_content=False
                    )
                    last_status = time.monotonic()
            except ApiException as error:
                if error.status == 404:
                    logger.info("node %s was deleted: no more heartbeats", self.name)
                    self.deleted.set()
                else:
                    logger.warning("node %s: heartbeat failed: %s", self.name, error.status)
            except Exception as error:
                logger.warning("node %s: heartbeat failed: %r", self.name, error)

    # -- pods ---------------------------------------------------------------------------

    def _watch(self) -> None:
        """List, then watch from the list's resourceVersion; list again on 410 Gone."""
        selector = f"spec.nodeName={self.name}"
        version = ""
        while True:
            try:
                if not version:
                    listed = json.loads(
                        self.core.list_pod_for_all_namespaces(
                            field_selector=selector, _preload_content=False
                        ).data
                    )
                    version = listed["metadata"]["resourceVersion"]
                    seen = set()
                    for pod in listed["items"]:
                        seen.add(pod["metadata"]["uid"])
                        self.handle("ADDED", pod)
                    with self.lock:
                        vanished = [run for uid, run in self.runs.items() if uid not in seen]
                    for run in vanished:
                        self.handle("DELETED", run.pod)
                response = self.core.list_pod_for_all_namespaces(
                    field_selector=selector,
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _preload_content=False,
                )
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            logger.info("node %s: watch expired (410): listing again", self.name)
                            version = ""
                            break
                        raise RuntimeError(f"watch error: {obj}")
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self.handle(kind, obj)
            except ApiException as error:
                if error.status == 410:
                    version = ""
                logger.warning(
                    "node %s: pod watch failed (%s); again in 1 s", self.name, error.status
                )
                time.sleep(1)
            except Exception as error:
                logger.warning("node %s: pod watch failed (%r); again in 1 s", self.name, error)
                time.sleep(1)

    def handle(self, kind: str, pod: Pod) -> None:
        """Bring what runs here in line with one event about a pod (idempotent)."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            run = self.runs.get(uid)
            if kind == "DELETED":
                if run is not None:
                    run.kill(gone=True)
                    del self.runs[uid]
                return
            if run is not None:
                run.pod = pod if not run.finished.is_set() else run.pod
                if pod["metadata"].get("deletionTimestamp"):
                    run.kill()
                return
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            run = PodRun(pod, self.node)
            self.runs[uid] = run
            self.by_name[(run.namespace, run.name)] = run
            if pod["metadata"].get("deletionTimestamp"):
                run.kill()
        run.start()

    def lookup(self, namespace: str, pod: str, container: str):  # type: ignore[no-untyped-def]
        run = self.by_name.get((namespace, pod))
        if run is None:
            return None
        return run.log_path(container), lambda: run.is_container_running(container)

    def stop(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            for process in list(run.running.values()):
                processes.kill_group(process.pid)


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    config = json.loads(Path(argv[0]).read_text())
    agents = [NodeAgent(config, node) for node in config["nodes"]]
    version = json.loads(
        kubernetes.client.VersionApi(agents[0].client).get_code(_preload_content=False).data
    )["gitVersion"]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    for agent in agents:
        agent.start(version)
    logger.info("the node agent runs %d nodes (pid %d)", len(agents), os.getpid())
    stopping.wait()
    for agent in agents:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
