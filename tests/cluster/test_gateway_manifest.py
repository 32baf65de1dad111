"""``manifests/gateway/gateway.yaml`` on the test cluster's real API server.

Every object is created with strict field validation as a server-side dry
run (admission and validation run, nothing is stored), so the API server
itself says the manifest is well-formed for this Kubernetes version; a copy
with a misspelled field is refused, which shows the check can fail.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "gateway" / "gateway.yaml"


def _create(api: Any, namespace: str, obj: dict[str, Any]) -> Any:
    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    apps = kubernetes.client.AppsV1Api(api)
    create = {
        "ServiceAccount": core.create_namespaced_service_account,
        "ConfigMap": core.create_namespaced_config_map,
        "PersistentVolumeClaim": core.create_namespaced_persistent_volume_claim,
        "Service": core.create_namespaced_service,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
        "Deployment": apps.create_namespaced_deployment,
    }[obj["kind"]]
    return create(namespace, obj, dry_run="All", field_validation="Strict")


def test_the_api_server_accepts_every_object(api, namespace):
    objects = list(yaml.safe_load_all(MANIFEST.read_text()))
    created = [_create(api, namespace, obj) for obj in objects]
    assert [c.metadata.name for c in created] == [o["metadata"]["name"] for o in objects]


def test_a_misspelled_field_is_refused(api, namespace):
    (deployment,) = [
        o for o in yaml.safe_load_all(MANIFEST.read_text()) if o["kind"] == "Deployment"
    ]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ApiException) as refused:
        _create(api, namespace, bad)
    assert refused.value.status == 400
    assert "readinessProbes" in refused.value.body
