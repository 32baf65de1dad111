"""The test cluster for any test: one per session, a namespace per test (a pytest plugin).

Named in ``tests/conftest.py``'s ``pytest_plugins``, so every test directory
(``tests/cluster/``, ``tests/scheduler/k8s/``, ...) can ask for ``cluster``,
``api`` and ``namespace``. `cluster` starts the real control plane (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, built by `make
test`) and the node agent that runs pods as local processes, for three
nodes, in a temporary directory, once a test asks for it, and stops it all
at the end of the session. ``second_cluster`` is another one (one node, its
own directory and ports) for the tests that need two. The tests talk to it as its admin
(`system:masters`, a client certificate): the service accounts that mrk8s
will run as are separate and get only what RBAC grants them.

The ``kubernetes`` client is imported only when a fixture runs, so loading
this plugin costs nothing to tests that never use the cluster.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def _running(tmp_path_factory: pytest.TempPathFactory, stem: str, nodes: int) -> Iterator[Any]:
    pytest.importorskip("kubernetes")
    from tests.cluster.controlplane import BINARY, Cluster

    if not BINARY.exists():
        pytest.fail(
            f"the control plane is not built ({BINARY} is missing): run `make test`, or "
            "`make tests/cluster/bin/controlplane` first",
            pytrace=False,
        )
    running = Cluster(tmp_path_factory.mktemp(stem), nodes=nodes)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _running(tmp_path_factory, "cluster", nodes=3)


@pytest.fixture(scope="session")
def second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Another test cluster, of one node, with its own state directory and ports: for tests
    across two clusters (the gateway's routing). Started only by the tests that ask for it."""
    yield from _running(tmp_path_factory, "cluster2", nodes=1)


@pytest.fixture(scope="session")
def api(cluster: Any) -> Iterator[Any]:
    """An ApiClient with the admin's credentials."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with what is in it) afterwards."""
    import kubernetes

    from tests.cluster.kube import wait_until

    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    wait_until(
        lambda: _has_default_account(core, name), timeout=30, what="the default service account"
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _has_default_account(core: Any, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
