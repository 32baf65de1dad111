"""The shuffle server's DaemonSet for tests on the test cluster.

Rendered here with the names of ``manifests/node-local/shuffle-server.yaml``
(``scheduler.backends.k8s.nodeshuffle``) but on a port of the test's choosing:
the test clusters of other sessions on this machine give their nodes the same
loopback addresses, so 7070 may be taken. The image is not pulled: the node
agent that runs pods as local processes runs ``python -m mrk8s.cli`` with
this machine's Python.
"""

from __future__ import annotations

import sys
from typing import Any

from scheduler.backends.k8s import nodeshuffle

IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}"  # not pulled


def server_daemonset(port: int) -> dict[str, Any]:
    """The shuffle server's DaemonSet, serving on ``port`` of each node's address."""
    labels = {"app.kubernetes.io/name": "mrk8s", "app.kubernetes.io/component": "shuffle-server"}
    return {
        "metadata": {"name": nodeshuffle.SERVER_NAME, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "shuffle-server",
                            "image": IMAGE,
                            "command": ["python", "-m", "mrk8s.cli"],
                            "args": [
                                "shuffle-server",
                                "--root",
                                nodeshuffle.HOST_DIR,
                                "--host",
                                "$(POD_IP)",
                                "--port",
                                str(port),
                                "--token-file",
                                f"{nodeshuffle.TOKEN_DIR}/{nodeshuffle.TOKEN_KEY}",
                                "-v",
                            ],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                            "ports": [{"name": "shuffle", "containerPort": port}],
                            "volumeMounts": [
                                {
                                    "name": "shuffle",
                                    "mountPath": nodeshuffle.HOST_DIR,
                                    "readOnly": True,
                                },
                                {"name": "token", "mountPath": nodeshuffle.TOKEN_DIR},
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "shuffle",
                            "hostPath": {"path": nodeshuffle.HOST_DIR, "type": "DirectoryOrCreate"},
                        },
                        {
                            "name": "token",
                            "secret": {
                                "secretName": nodeshuffle.TOKEN_SECRET,
                                "defaultMode": 0o400,
                            },
                        },
                    ],
                },
            },
        },
    }
