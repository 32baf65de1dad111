"""The ``mrk8s`` namespace of ``manifests/`` enforces Pod Security "restricted", on the real
API server's PodSecurity admission.

A pod that breaks the level is refused (403, naming each rule it breaks); the
same pod is admitted in a namespace without the label, so it is the label that
refuses it; a pod dressed as mrk8s dresses its pods is admitted. Pods are
created with ``dryRun=All``: admission runs in full, nothing is stored.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from scheduler.backends.k8s import driverjob

pytestmark = pytest.mark.cluster


def _pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "mrk8s:0.1.0",
                    "command": ["mrk8s", "--help"],
                    **container,
                }
            ],
        },
    }


def _create(api: Any, namespace: str, body: dict[str, Any]) -> None:
    kubernetes.client.CoreV1Api(api).create_namespaced_pod(namespace, body, dry_run="All")


def _refusal(api: Any, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        _create(api, namespace, body)
    assert refused.value.status == 403, refused.value.body
    return str(json.loads(refused.value.body)["message"])


def _restricted() -> dict[str, Any]:
    pod = _pod(securityContext=driverjob.container_security_context())
    pod["spec"]["securityContext"] = driverjob.pod_security_context()
    return pod


@pytest.mark.timeout(60)
def test_a_pod_that_breaks_restricted_is_refused_and_one_that_meets_it_is_admitted(
    api: Any, installed: str, namespace: str
) -> None:
    plain = _pod()

    message = _refusal(api, installed, plain)

    assert 'violates PodSecurity "restricted:latest"' in message
    for rule in (
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "seccompProfile",
    ):
        assert rule in message, message
    # The same pod where nothing is enforced: admitted, so the label is what refused it.
    _create(api, namespace, plain)
    # Dressed as mrk8s's pods are: admitted.
    _create(api, installed, _restricted())


@pytest.mark.timeout(60)
def test_one_missing_setting_or_a_host_path_is_enough_to_be_refused(
    api: Any, installed: str
) -> None:
    root = _restricted()
    root["spec"]["securityContext"]["runAsUser"] = 0
    assert "runAsUser=0" in _refusal(api, installed, root)

    escalating = _restricted()
    escalating["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert "allowPrivilegeEscalation != false" in _refusal(api, installed, escalating)

    host = _restricted()
    host["spec"]["volumes"] = [
        {
            "name": "shuffle",
            "hostPath": {"path": "/var/lib/mrk8s/shuffle", "type": "DirectoryOrCreate"},
        }
    ]
    assert 'volume "shuffle" uses restricted volume type "hostPath"' in _refusal(
        api, installed, host
    )
