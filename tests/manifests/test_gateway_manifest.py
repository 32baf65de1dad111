"""``manifests/gateway/gateway.yaml`` agrees with the gateway it runs, checked offline.

The container's command parses with ``mrk8s gateway``'s own parser, its
config file is the ConfigMap's key at the path it is mounted at and is a
valid gateway config whose state directory is the volume's mount, the
port, probes and Service line up, and the RoleBinding names the
Deployment's ServiceAccount. What the API server says of the objects is
checked on the test cluster (``tests/cluster/test_gateway_manifest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent.parent
MANIFEST = REPO / "manifests" / "gateway" / "gateway.yaml"


@pytest.fixture
def objects() -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in yaml.safe_load_all(MANIFEST.read_text())}


def test_it_holds_the_service_and_what_it_needs(objects):
    assert sorted(objects) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


def test_the_command_config_state_and_ports_agree(objects):
    from mrk8s.gateway import cli, config

    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one writer per SQLite file
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["mrk8s", "gateway", "serve"]
    args = cli.parser().parse_args(container["command"][2:])
    assert args.host == "0.0.0.0"

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, _, key = args.config.rpartition("/")
    assert mounts["config"] == config_dir
    assert volumes["config"]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    text = objects["ConfigMap"]["data"][key]
    gateway_config = config.from_mapping(yaml.safe_load(text), environ={})
    assert str(gateway_config.state_dir) == mounts["state"]
    claim = objects["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim

    (port,) = container["ports"]
    assert port["containerPort"] == args.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    (service_port,) = objects["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"] == labels
    (token,) = container["env"]
    assert token["name"] == "MRK8S_GATEWAY_TOKEN"


def test_the_role_is_bound_to_the_deployments_account(objects):
    account = objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert objects["ServiceAccount"]["metadata"]["name"] == account
    binding = objects["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    assert binding["roleRef"]["name"] == objects["Role"]["metadata"]["name"]
