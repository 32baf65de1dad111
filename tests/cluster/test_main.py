"""`make cluster` and `make cluster-down` (python -m tests.cluster up/down) end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes
import psutil
import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cluster", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.timeout(180)
def test_up_runs_a_cluster_in_the_background_and_down_removes_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _run("up", "--state", str(state), "--nodes", "2")
    kubeconfig = state / "kubeconfig"
    assert f"kubeconfig (admin): {kubeconfig}" in up.stdout
    assert "memory of the 4 control-plane processes + the node agent" in up.stdout
    pids = json.loads((state / "supervisor.json").read_text())["pids"]
    try:
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        try:
            nodes = kubernetes.client.CoreV1Api(client).list_node().items
        finally:
            client.close()
        assert sorted(n.metadata.name for n in nodes) == ["node-1", "node-2"]
        again = _run("up", "--state", str(state))
        assert "already runs" in again.stdout
    finally:
        down = _run("down", "--state", str(state))
    assert "cluster stopped" in down.stdout
    assert not state.exists()
    assert [pid for pid in pids.values() if psutil.pid_exists(pid)] == []
