"""Every object in ``manifests/`` validates strictly against the official schemas, and says
what the shared conventions say.

Strict validation (``kubernetes-validate``, ``strict=True``) refuses any
field the schema of that Kubernetes version does not have, so a misspelled
field or one too new for the oldest supported version fails here. Both
kustomizations are rendered by the real kustomize (``kustomize.py``), so what
is validated is what ``kubectl apply -k`` sends. That the cluster accepts it
is ``test_apply.py``'s part.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.manifests import kustomize
from tests.manifests.kustomize import MANIFESTS, NEWEST, OLDEST, by_kind

MODES = {"object-store": Path("."), "node-local": Path("node-local")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    copy_ = kustomize.with_token(tmp_path_factory.mktemp("manifests"))
    return {mode: kustomize.build(copy_ / sub) for mode, sub in MODES.items()}


def _errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    return errors


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_rendered_object_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], mode: str, version: str
) -> None:
    objects = rendered[mode]
    assert len(objects) >= 6
    assert _errors(objects, version) == []


def _yaml_files() -> list[Path]:
    """Every manifest file of manifests/ (KubeRay's RayJob is checked by its CRD instead:
    tests/cluster/test_rayjob.py)."""
    return sorted(
        p
        for p in MANIFESTS.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "ray" not in p.relative_to(MANIFESTS).parts
    )


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_manifest_file_validates_strictly_and_is_in_a_kustomization(version: str) -> None:
    files = _yaml_files()
    assert {p.name for p in files} >= {"namespace.yaml", "role-driver.yaml", "shuffle-server.yaml"}
    listed = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            listed.add((kustomization.parent / resource).resolve())
    for path in files:
        assert path.resolve() in listed, f"{path} is in no kustomization"
        objects = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert _errors(objects, version) == [], path


def test_strict_validation_refuses_a_misspelled_field_and_a_too_new_one(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    daemonset = by_kind(rendered["node-local"], "DaemonSet", "mrk8s-shuffle-server")
    bad = copy.deepcopy(daemonset)
    bad["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["typ"] = "Directory"
    assert _errors([bad], NEWEST) == [
        "DaemonSet/mrk8s-shuffle-server: Additional properties are not allowed "
        "('typ' was unexpected)"
    ]
    # A field newer than the oldest supported version is refused for that version only.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x"},
        "spec": {
            "managedBy": "kueue.x-k8s.io/multikueue",  # Job field of 1.30
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    assert _errors([job], NEWEST) == []
    assert "'managedBy' was unexpected" in _errors([job], OLDEST)[0]


def test_the_shared_names_and_pod_security_levels(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    store, local = rendered["object-store"], rendered["node-local"]
    labels = by_kind(store, "Namespace", "mrk8s")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    local_labels = by_kind(local, "Namespace", "mrk8s")["metadata"]["labels"]
    # hostPath volumes are refused at "baseline" already: node-local mode needs privileged.
    assert local_labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert local_labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert local_labels["pod-security.kubernetes.io/audit"] == "restricted"

    by_kind(store, "ServiceAccount", "mrk8s-driver")
    worker = by_kind(store, "ServiceAccount", "mrk8s-worker")
    assert worker["automountServiceAccountToken"] is False
    priority = by_kind(store, "PriorityClass", "mrk8s")
    assert priority["preemptionPolicy"] == "Never"
    assert priority.get("globalDefault") is False
    for obj in local:
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "mrk8s", obj["kind"]
        if obj["kind"] not in ("Namespace", "PriorityClass"):
            assert obj["metadata"]["namespace"] == "mrk8s", obj["kind"]

    secret = by_kind(local, "Secret", "mrk8s-shuffle-token")
    assert list(secret["data"]) == ["token"]
    assert "mrk8s-shuffle-token" not in {o["metadata"]["name"] for o in store}

    pod = by_kind(local, "DaemonSet", "mrk8s-shuffle-server")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mrk8s-worker"
    assert pod["automountServiceAccountToken"] is False
    (server,) = pod["containers"]
    assert server["ports"] == [
        {"name": "shuffle", "containerPort": 7070, "hostPort": 7070, "protocol": "TCP"}
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert volumes["shuffle"]["hostPath"] == {
        "path": "/var/lib/mrk8s/shuffle",
        "type": "DirectoryOrCreate",
    }
    assert mounts["shuffle"]["mountPath"] == "/var/lib/mrk8s/shuffle"
    assert volumes["token"]["secret"]["secretName"] == "mrk8s-shuffle-token"
    token_file = server["args"][server["args"].index("--token-file") + 1]
    assert token_file == mounts["token"]["mountPath"] + "/token"
    assert server["args"][:3] == ["shuffle-server", "--root", "/var/lib/mrk8s/shuffle"]
    assert server["args"][server["args"].index("--port") + 1] == "7070"


def test_the_driver_role_grants_exactly_what_the_driver_does_in_its_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    kinds = {o["kind"] for o in rendered["node-local"]}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "nothing cluster-wide"
    role = by_kind(rendered["object-store"], "Role", "mrk8s-driver")
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "configmaps"): ["create", "get"],
        ("batch", "jobs"): ["create", "delete", "get", "list", "watch"],
        ("", "pods"): ["list", "watch"],
        ("", "pods/log"): ["get"],
        ("", "events"): ["list"],
    }
    binding = by_kind(rendered["object-store"], "RoleBinding", "mrk8s-driver")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "mrk8s-driver",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mrk8s-driver", "namespace": "mrk8s"}
    ]
