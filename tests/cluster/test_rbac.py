"""Security as a cluster has it: service-account tokens issued and checked, RBAC enforced.

mrk8s will run as a service account, never with the tests' admin
certificate. Here a service account is bound to a Role that allows Jobs and
pods in its namespace only; the real API server (authorizer Node,RBAC) lets
it create a Job and refuses it Secrets and other namespaces, and refuses a
token it did not sign.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster import kube
from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster


def _client_with_token(cluster: Cluster, token: str) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.ca)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(configuration)


@pytest.mark.timeout(90)
def test_a_service_account_gets_what_its_role_allows_and_403_for_the_rest(
    api: Any, cluster: Cluster, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "mrk8s"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "mrk8s-jobs"},
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "resources": ["jobs"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "mrk8s-jobs"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "mrk8s-jobs",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "mrk8s", "namespace": namespace}],
        },
    )
    issued = core.create_namespaced_service_account_token(
        "mrk8s", namespace, {"spec": {"expirationSeconds": 600}}
    )
    sa = _client_with_token(cluster, issued.status.token)
    try:
        batch = kubernetes.client.BatchV1Api(sa)
        sa_core = kubernetes.client.CoreV1Api(sa)
        body = kube.python_job("allowed", "print('hello')", completions=1)
        created = batch.create_namespaced_job(namespace, body)
        assert created.metadata.name == "allowed"
        assert [p.metadata.namespace for p in sa_core.list_namespaced_pod(namespace).items] in (
            [],
            [namespace],
        )

        with pytest.raises(ApiException) as secrets:
            sa_core.list_namespaced_secret(namespace)
        assert secrets.value.status == 403
        assert f"system:serviceaccount:{namespace}:mrk8s" in secrets.value.body

        with pytest.raises(ApiException) as elsewhere:
            batch.list_namespaced_job("default")
        assert elsewhere.value.status == 403
    finally:
        sa.close()

    # A token the cluster did not sign is not a user at all.
    header, payload, signature = issued.status.token.split(".")
    forged = _client_with_token(cluster, f"{header}.{payload}.{signature[:-4]}AAAA")
    try:
        with pytest.raises(ApiException) as unknown:
            kubernetes.client.BatchV1Api(forged).list_namespaced_job(namespace)
        assert unknown.value.status == 401
    finally:
        forged.close()
