"""The node agent's own rules, on their own: $(VAR) expansion and volume paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.pods import _translator, expand, field_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-2"),
        ("$(MISSING)", "$(MISSING)"),  # unknown names stay as written
        ("$$(A)", "$(A)"),  # $$ escapes
        ("$$", "$"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),  # no closing parenthesis: literal
        ("end$", "end$"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_mount_paths_are_replaced_as_whole_path_prefixes(tmp_path: Path) -> None:
    container = {
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "deep", "mountPath": "/data/deep/"},
        ]
    }
    translate = _translator(container, {"data": tmp_path / "d", "deep": tmp_path / "x"})
    assert translate("/data") == str(tmp_path / "d")
    assert translate("--out=/data/a.txt") == f"--out={tmp_path / 'd'}/a.txt"
    assert translate("/data/deep/b") == f"{tmp_path / 'x'}/b"
    assert translate("/database /mydata /data2") == "/database /mydata /data2"


def test_field_refs_are_the_downward_apis() -> None:
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u",
            "labels": {"app": "x"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "3"},
        },
        "spec": {"nodeName": "node-1", "serviceAccountName": "default"},
    }
    path = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert field_value(pod, path, "127.0.0.11") == "3"
    assert field_value(pod, "metadata.labels['app']", "127.0.0.11") == "x"
    assert field_value(pod, "status.podIP", "127.0.0.11") == "127.0.0.11"
    assert field_value(pod, "spec.nodeName", "127.0.0.11") == "node-1"


def test_containers_run_with_the_configured_bin_directory_first_on_path(tmp_path: Path) -> None:
    """pod_bin in the agent's config (a venv with only the image's packages, say)."""
    import os
    import sys

    from tests.cluster.pods import Node, PodRun

    pod = {"metadata": {"namespace": "ns", "name": "p", "uid": "u"}, "spec": {}}
    common = {"name": "n", "ip": "10.0.0.1", "directory": tmp_path, "api": None}
    node = Node(apiserver_host="127.0.0.1", apiserver_port=6443, **common)
    lean = Node(
        apiserver_host="127.0.0.1", apiserver_port=6443, bin=tmp_path / "venv" / "bin", **common
    )
    default = PodRun(pod, node)._environment({"name": "c"})["PATH"].split(os.pathsep)
    chosen = PodRun(pod, lean)._environment({"name": "c"})["PATH"].split(os.pathsep)
    assert default[0] == str(Path(sys.executable).parent)
    assert chosen[0] == str(tmp_path / "venv" / "bin")
    assert chosen[1:] == default[1:]
