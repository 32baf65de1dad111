"""Start and stop the test cluster: etcd, the three control-plane components and the node agent.

The control plane is the real Kubernetes code: the `controlplane` binary built
by `make tests/cluster/bin/controlplane` from the official source modules
(k8s.io/kubernetes v1.37, etcd v3.7), one process per component. Only the
nodes are stood in for, by the node agent that runs pods as local processes
(`tests/cluster/agent.py`).

Security is a cluster's: every connection is TLS with one CA (`pki.py`); etcd
wants a client certificate; the API server authenticates client certificates
and service-account tokens (signed with the cluster's own key, issuer
`https://kubernetes.default.svc.cluster.local`) and authorizes with
`Node,RBAC`; NodeRestriction admission limits each node to its own objects;
the controller manager runs each controller under its own service account.
The API server checks each node's log endpoint against the cluster CA
(`--kubelet-certificate-authority`), and the endpoint checks the API server's
client certificate in turn.

Every listening port is a free port on loopback, picked at start, so two
clusters can run at once. Each process gets its own process group and dies
with the process that started it (`processes.spawn`); `Cluster.stop` stops
the groups. State (certificates, etcd's data, logs, kubeconfigs, the nodes'
directories) lives in one directory given by the caller.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import pki, processes

# Built by `make tests/cluster/bin/controlplane`.
BINARY = Path(__file__).resolve().parent / "bin" / "controlplane"
# The agent runs as `python -m tests.cluster.agent` from here.
REPO = Path(__file__).resolve().parents[2]

# What the controller manager runs: what Jobs, their pods, nodes going away,
# namespaces, service accounts and DaemonSets need, and nothing else (each controller
# costs memory and API traffic).
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "disruption-controller",
    # The shuffle server of node-local mode is a DaemonSet (manifests/node-local/).
    "daemonset-controller",
)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# The first node's address; node i gets 127.0.0.(FIRST_NODE_HOST + i).
FIRST_NODE_HOST = 11


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_ips(count: int) -> dict[str, str]:
    """Node names and their loopback addresses: node-1 at 127.0.0.11, and so on."""
    return {f"node-{i}": f"127.0.0.{FIRST_NODE_HOST + i - 1}" for i in range(1, count + 1)}


def _fetch(url: str, context: ssl.SSLContext) -> bytes | None:
    """The body of a GET that answered 200; None for any other answer or none at all."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        error.close()  # it holds the connection open otherwise
        return None
    except OSError:
        return None


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: pki.Pair, name: str) -> None:
    """A kubeconfig with everything embedded (JSON is YAML), readable only by us."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mrk8s-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": _b64(user.cert),
                    "client-key-data": _b64(user.key),
                },
            }
        ],
        "contexts": [{"name": "mrk8s-test", "context": {"cluster": "mrk8s-test", "user": name}}],
        "current-context": "mrk8s-test",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


@dataclass
class Cluster:
    """A running test cluster, started by `start` and stopped by `stop`.

    `state` holds everything the cluster writes; `kubeconfig` is the admin's
    (`system:masters`); `processes` maps each component to its process.
    """

    state: Path
    nodes: int = 3
    #: The directory the node agent puts first on every container's PATH (None: the
    #: agent's own interpreter's), e.g. a venv's bin with only what the image installs.
    pod_bin: Path | None = None
    server: str = ""
    kubeconfig: Path = field(init=False)
    ca: Path = field(init=False)
    node_ips: dict[str, str] = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.state.resolve()
        self.kubeconfig = self.state / "kubeconfig"
        self.ca = self.state / "pki" / "ca.crt"
        self.node_ips = node_ips(self.nodes)

    def start(self, *, timeout: float = 120.0) -> None:
        """Start every process and return once the cluster runs pods; stop it all on failure."""
        if not BINARY.exists():
            raise FileNotFoundError(
                f"the control-plane binary {BINARY} is missing: build it with "
                "`make tests/cluster/bin/controlplane` (it needs Go and the Go module proxy)"
            )
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        keys = pki.make_pki(self.state / "pki", self.node_ips)
        for name in ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler"):
            self.ports[name] = free_port()
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        write_kubeconfig(
            self.kubeconfig, server=self.server, ca=keys.ca.cert, user=keys.admin, name="admin"
        )
        write_kubeconfig(
            self.state / "controller-manager.kubeconfig",
            server=self.server,
            ca=keys.ca.cert,
            user=keys.controller_manager,
            name="system:kube-controller-manager",
        )
        write_kubeconfig(
            self.state / "scheduler.kubeconfig",
            server=self.server,
            ca=keys.ca.cert,
            user=keys.scheduler,
            name="system:kube-scheduler",
        )
        self._run("etcd", self._etcd_args(keys))
        self._run("kube-apiserver", self._apiserver_args(keys))
        self._wait(deadline, "kube-apiserver", f"{self.server}/readyz", keys.admin)
        self._run("kube-controller-manager", self._controller_manager_args(keys))
        self._run("kube-scheduler", self._scheduler_args(keys))
        self._start_agent(keys)
        self._wait(
            deadline,
            "kube-controller-manager",
            f"https://127.0.0.1:{self.ports['controller-manager']}/healthz",
            None,
        )
        self._wait(
            deadline, "kube-scheduler", f"https://127.0.0.1:{self.ports['scheduler']}/healthz", None
        )
        self._wait_ready(deadline, keys)

    # -- the processes -----------------------------------------------------------------

    def _run(self, component: str, args: list[str], argv0: list[str] | None = None) -> None:
        argv = (argv0 or [str(BINARY), component]) + args
        self.processes[component] = processes.spawn(
            argv, log=self.state / "logs" / f"{component}.log", cwd=REPO
        )

    def _etcd_args(self, keys: pki.Pki) -> list[str]:
        client = f"https://127.0.0.1:{self.ports['etcd-client']}"
        peer = f"https://127.0.0.1:{self.ports['etcd-peer']}"
        tls = keys.etcd_server
        return [
            "--name=etcd",
            f"--data-dir={self.state / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=etcd={peer}",
            f"--cert-file={tls.cert}",
            f"--key-file={tls.key}",
            f"--trusted-ca-file={keys.ca.cert}",
            "--client-cert-auth=true",
            f"--peer-cert-file={tls.cert}",
            f"--peer-key-file={tls.key}",
            f"--peer-trusted-ca-file={keys.ca.cert}",
            "--peer-client-cert-auth=true",
            # A test cluster's data is thrown away: no fsync on every write.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, keys: pki.Pki) -> list[str]:
        return [
            f"--etcd-servers=https://127.0.0.1:{self.ports['etcd-client']}",
            f"--etcd-cafile={keys.ca.cert}",
            f"--etcd-certfile={keys.apiserver_etcd_client.cert}",
            f"--etcd-keyfile={keys.apiserver_etcd_client.key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service's endpoints would have to be a non-loopback
            # address, and nothing could route them here: none are kept.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={keys.apiserver.cert}",
            f"--tls-private-key-file={keys.apiserver.key}",
            f"--client-ca-file={keys.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={keys.service_account_pub}",
            f"--service-account-signing-key-file={keys.service_account_key}",
            # Service IPs are API objects only here: nothing routes them.
            "--service-cluster-ip-range=10.96.0.0/16",
            # The nodes' log endpoints are checked against the cluster CA, and the
            # API server shows them its own client certificate.
            f"--kubelet-certificate-authority={keys.ca.cert}",
            f"--kubelet-client-certificate={keys.apiserver_kubelet_client.cert}",
            f"--kubelet-client-key={keys.apiserver_kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        ]

    def _component_args(self, port: str, kubeconfig: Path, serving: pki.Pair) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--client-ca-file={self.ca}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[port]}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            "--leader-elect=false",
        ]

    def _controller_manager_args(self, keys: pki.Pki) -> list[str]:
        return [
            *self._component_args(
                "controller-manager",
                self.state / "controller-manager.kubeconfig",
                keys.controller_manager_serving,
            ),
            f"--controllers={','.join(CONTROLLERS)}",
            # Each controller talks to the API server as its own service account,
            # with tokens the API server issues and checks.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={keys.service_account_key}",
            f"--root-ca-file={keys.ca.cert}",
        ]

    def _scheduler_args(self, keys: pki.Pki) -> list[str]:
        return self._component_args(
            "scheduler", self.state / "scheduler.kubeconfig", keys.scheduler_serving
        )

    def _start_agent(self, keys: pki.Pki) -> None:
        config = {
            "server": self.server,
            "ca": str(keys.ca.cert),
            "apiserver_client_ca": str(keys.ca.cert),
            "state": str(self.state / "nodes"),
            "pod_bin": str(self.pod_bin) if self.pod_bin else None,
            "nodes": [
                {
                    "name": name,
                    "ip": ip,
                    "client_cert": str(keys.nodes[name].client.cert),
                    "client_key": str(keys.nodes[name].client.key),
                    "serving_cert": str(keys.nodes[name].serving.cert),
                    "serving_key": str(keys.nodes[name].serving.key),
                }
                for name, ip in self.node_ips.items()
            ],
        }
        path = self.state / "agent.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        self._run("agent", [str(path)], argv0=[sys.executable, "-m", "tests.cluster.agent"])

    # -- readiness ----------------------------------------------------------------------

    def _check_alive(self) -> None:
        for component, process in self.processes.items():
            if process.poll() is not None:
                log = self.state / "logs" / f"{component}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise processes.ProcessDied(
                    f"{component} exited with {process.returncode} while the cluster started; "
                    f"the end of {log}:\n{tail}"
                )

    def _ssl_context(self, client: pki.Pair | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def _wait(self, deadline: float, what: str, url: str, client: pki.Pair | None) -> None:
        context = self._ssl_context(client)

        def healthy() -> bool:
            self._check_alive()
            return _fetch(url, context) is not None

        processes.wait_for(
            healthy, timeout=max(deadline - time.monotonic(), 1), what=f"{what} at {url}"
        )

    def _wait_ready(self, deadline: float, keys: pki.Pki) -> None:
        """Every node Ready; the default namespace's service account and CA bundle made."""
        context = self._ssl_context(keys.admin)

        def ready() -> bool:
            self._check_alive()
            nodes = json.loads(_fetch(self.server + "/api/v1/nodes", context) or "{}")
            default = self.server + "/api/v1/namespaces/default"
            for what in ("/serviceaccounts/default", "/configmaps/kube-root-ca.crt"):
                if _fetch(default + what, context) is None:
                    return False
            nodes = nodes.get("items", [])
            ready_nodes = {
                n["metadata"]["name"]
                for n in nodes
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n["status"].get("conditions", [])
                )
            }
            return ready_nodes == set(self.node_ips)

        processes.wait_for(
            ready,
            timeout=max(deadline - time.monotonic(), 1),
            what="every node Ready, the default service account and kube-root-ca.crt",
        )

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the agent first (it finishes its pods), then the control plane, newest first."""
        for component in reversed(list(self.processes)):
            processes.stop(self.processes[component], grace=10.0)
        self.processes.clear()

    def pids(self) -> dict[str, int]:
        return {component: p.pid for component, p in self.processes.items()}
