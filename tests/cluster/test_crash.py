"""A crashed test run leaves nothing running.

A second cluster (so two run at once, on their own free ports) is started by
a child Python process, which is then killed with SIGKILL, as a crashed
pytest would be: every control-plane process, the node agent and the pod it
was running must be gone within seconds, with nobody left to stop them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import psutil
import pytest

from tests.cluster import kube
from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster

STARTER = """
import json, sys, time
from pathlib import Path
from tests.cluster.controlplane import Cluster
cluster = Cluster(Path(sys.argv[1]), nodes=1)
cluster.start()
print(json.dumps({"pids": cluster.pids(), "kubeconfig": str(cluster.kubeconfig)}), flush=True)
time.sleep(600)
"""


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(150)
def test_killing_the_starter_with_sigkill_leaves_nothing_running(
    cluster: Cluster, tmp_path: Path
) -> None:
    repo = Path(__file__).resolve().parents[2]
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / "second")],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = json.loads(starter.stdout.readline())  # type: ignore[union-attr]
        pids: dict[str, int] = started["pids"]
        client = kubernetes.config.new_client_from_config(config_file=started["kubeconfig"])
        try:
            assert kubernetes.client.VersionApi(client).get_code().git_version.startswith("v1.37.")
            core = kubernetes.client.CoreV1Api(client)
            core.create_namespaced_pod(
                "default",
                {
                    "metadata": {"name": "sleeper"},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": "python",
                                "command": ["python", "-c", "import time; time.sleep(600)"],
                            }
                        ],
                    },
                },
            )

            def pod_pid() -> Any:
                pod = core.read_namespaced_pod("sleeper", "default")
                if pod.status.phase != "Running":
                    return None
                return int(pod.status.container_statuses[0].container_id.split("://")[1])

            pids["pod"] = kube.wait_until(pod_pid, timeout=60, what="the sleeper pod to run")
        finally:
            client.close()
        assert not any(_dead(pid) for pid in pids.values())
        assert pids["kube-apiserver"] not in cluster.pids().values()  # a cluster of its own

        starter.send_signal(signal.SIGKILL)
        starter.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(_dead(p) for p in pids.values()):
            time.sleep(0.2)
        assert {name: pid for name, pid in pids.items() if not _dead(pid)} == {}
    finally:
        starter.kill()
        starter.wait()
        starter.stdout.close()  # type: ignore[union-attr]
