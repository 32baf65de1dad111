"""The test cluster for the tests: one per session, a namespace per test (a pytest plugin).

A plugin, named by tests/conftest.py, so that tests outside tests/cluster/
(tests/manifests/, the k8s backend's and commands' tests) share the one
session cluster.

`cluster` starts the real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, built by `make test`) and the node
agent that runs pods as local processes, for three nodes, in a temporary
directory, once a test asks for it, and stops it all at the end of the
session.
The tests talk to it as its admin (`system:masters`, a client certificate):
the service accounts that mrk8s will run as are separate and get only what
RBAC grants them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster.controlplane import BINARY, Cluster
from tests.cluster.kube import wait_until


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not BINARY.exists():
        pytest.fail(
            f"the control plane is not built ({BINARY} is missing): run `make test`, or "
            "`make tests/cluster/bin/controlplane` first",
            pytrace=False,
        )
    running = Cluster(tmp_path_factory.mktemp("cluster"), nodes=3)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> Iterator[Any]:
    """An ApiClient with the admin's credentials."""
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with what is in it) afterwards."""
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
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
