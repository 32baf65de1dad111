"""``manifests/ray/rayjob.yaml`` on the test cluster's real API server, with KubeRay's CRD.

The RayJob CRD of KubeRay v1.7.0 (``manifests/ray/crds/``, unchanged) is
installed into the cluster, so it is kube-apiserver itself that validates
RayJobs against KubeRay's OpenAPI schema: it accepts the manifest (created
with strict field validation and read back with every field as written),
refuses a copy with misspelled fields under ``spec`` (400, strict decoding
names each unknown field) and a copy with values of the wrong type (422,
naming each field and the type the schema wants). No KubeRay operator runs:
this checks the manifest, not a Ray cluster started from it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster import kube

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "ray" / "rayjob.yaml"
CRD = REPO / "manifests" / "ray" / "crds" / "ray.io_rayjobs.yaml"
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"


def _established(extensions: Any, name: str) -> bool:
    # Raw JSON: the CRD's schema is large, and only its status matters here.
    response = extensions.read_custom_resource_definition(name, _preload_content=False)
    conditions = json.loads(response.data).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def rayjob_crd(api: Any) -> Iterator[str]:
    """KubeRay's RayJob CRD, installed and Established; removed after this module."""
    # 1.4 MB of YAML: libyaml where PyYAML has it.
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    name = crd["metadata"]["name"]
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(crd, _preload_content=False)
    try:
        kube.wait_until(
            lambda: _established(extensions, name), timeout=60, what=f"CRD {name} Established"
        )
        yield name
    finally:
        extensions.delete_custom_resource_definition(name)


@pytest.fixture
def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(MANIFEST.read_text()))


def _create(api: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return dict(created)


def _refusal(api: Any, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    """The HTTP status and message with which the API server refuses ``body``."""
    with pytest.raises(ApiException) as refused:
        _create(api, namespace, body)
    return refused.value.status, json.loads(refused.value.body)["message"]


def _differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Paths where ``actual`` lacks or changes a value of ``expected`` (additions allowed:
    the API server adds metadata and the schema's defaults)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            d
            for key in expected
            for d in _differences(expected[key], actual.get(key), f"{where}.{key}")
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in _differences(e, a, f"{where}[{i}]")
        ]
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


@pytest.mark.timeout(120)
def test_the_api_server_accepts_the_rayjob_manifest_and_keeps_its_fields(
    api: Any, rayjob_crd: str, namespace: str, manifest: dict[str, Any]
) -> None:
    _create(api, namespace, manifest)

    stored = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest["metadata"]["name"]
    )

    assert stored["metadata"]["namespace"] == namespace
    assert stored["metadata"]["uid"]
    assert _differences(manifest, stored) == []
    # The comparison can fail: the stored object is the server's, not the manifest.
    assert _differences(manifest, {**stored, "spec": {**stored["spec"], "backoffLimit": 3}}) == [
        ".spec.backoffLimit: 2 != 3"
    ]


@pytest.mark.timeout(120)
def test_misspelled_fields_are_refused_with_strict_field_validation(
    api: Any, rayjob_crd: str, namespace: str, manifest: dict[str, Any]
) -> None:
    bad = copy.deepcopy(manifest)
    bad["spec"]["entrypont"] = bad["spec"].pop("entrypoint")
    worker = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    worker["replica"] = worker.pop("replicas")

    status, message = _refusal(api, namespace, bad)

    assert status == 400, message
    assert "strict decoding error" in message
    assert 'unknown field "spec.entrypont"' in message
    assert 'unknown field "spec.rayClusterSpec.workerGroupSpecs[0].replica"' in message
    # Nothing was stored.
    listed = kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    assert listed["items"] == []


@pytest.mark.timeout(120)
def test_wrong_types_are_refused_naming_the_fields(
    api: Any, rayjob_crd: str, namespace: str, manifest: dict[str, Any]
) -> None:
    bad = copy.deepcopy(manifest)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "three"
    bad["spec"]["shutdownAfterJobFinishes"] = "yes"

    status, message = _refusal(api, namespace, bad)

    assert status == 422, message
    assert "spec.rayClusterSpec.workerGroupSpecs[0].replicas" in message
    assert "must be of type integer" in message
    assert "spec.shutdownAfterJobFinishes" in message
    assert "must be of type boolean" in message
