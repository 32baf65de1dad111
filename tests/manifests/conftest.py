"""``installed``: manifests/ applied to the session's test cluster with ``kubectl apply -k``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.controlplane import Cluster
from tests.manifests import kustomize


def apply(cluster: Cluster, directory: Path) -> str:
    """``kubectl apply -k directory`` as the cluster's admin, with strict server-side field
    validation (unknown or duplicate fields refused by the API server); its stdout."""
    return kustomize.kubectl(
        "apply", "-k", str(directory), "--kubeconfig", str(cluster.kubeconfig), "--validate=strict"
    ).stdout


@pytest.fixture
def installed(cluster: Cluster) -> str:
    """manifests/ (object-store mode) applied as written; idempotent, so each test that
    needs it gets it as written even after another applied node-local/. The namespace."""
    apply(cluster, kustomize.MANIFESTS)
    return "mrk8s"
