"""Fixtures for the Kubernetes backend's tests on the real test cluster.

Each test gets a namespace (the ``namespace`` fixture of the cluster
plugin) that enforces Pod Security "restricted", as manifests/'s does, with
what the executor expects in it: the ``mrk8s-worker`` ServiceAccount and a
Secret holding the S3 credentials (given to the pods with
``--env-from-secret``, the way a user would), plus the cluster-wide
non-preempting PriorityClass ``mrk8s``. Storage is the suite's loopback S3
server (moto in server mode): the pods are local processes of the node agent
that runs pods as local processes, so they reach it on loopback. The
``image`` is not pulled: the pods run this machine's Python environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client.exceptions import ApiException  # noqa: E402

from mrk8s.engine.settings import RunSettings  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from scheduler.backends.k8s.render import PodSettings  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.s3 import S3Bucket  # noqa: E402

#: Not pulled by the node agent; any name will do.
IMAGE = "mrk8s-test:local"
SECRET = "s3-credentials"


@dataclass(frozen=True)
class Space:
    """A namespace ready for mrk8s jobs, and how to reach it and its storage."""

    namespace: str
    kubeconfig: str
    bucket: S3Bucket
    api: Any

    @property
    def public_options(self) -> dict[str, Any]:
        """The storage options without credentials (what a pod's command may carry)."""
        return {"client_kwargs": {"endpoint_url": self.bucket.endpoint}}

    def cli_args(self, *, shuffle: str = "shuffle") -> list[str]:
        """The ``mrk8s run`` options of a job in this namespace."""
        return [
            "--backend", "k8s", "--kubeconfig", self.kubeconfig, "--namespace", self.namespace,
            "--image", IMAGE, "--env-from-secret", SECRET,
            "--shuffle-dir", f"{self.bucket.url}/{shuffle}",
            "--storage-options", json.dumps(self.public_options),
        ]  # fmt: skip

    def run_settings(
        self, script: str | Path, inputs: Sequence[str], **options: Any
    ) -> RunSettings:
        """A ``--backend k8s`` job of ``script`` whose shuffle and output are in the bucket."""
        return RunSettings(
            script=str(script),
            inputs=tuple(inputs),
            output=f"{self.bucket.url}/out",
            backend="k8s",
            shuffle_dir=f"{self.bucket.url}/shuffle",
            storage_options=self.bucket.storage_options,
            **options,
        )

    def upload(self, local: Path, name: str) -> str:
        """Put a local file (or directory) into the bucket; its URL."""
        import s3fs

        fs = s3fs.S3FileSystem(**self.bucket.storage_options)
        url = f"{self.bucket.url}/{name}"
        fs.put(str(local), url, recursive=local.is_dir())
        return url


@pytest.fixture(scope="session")
def priority_class(api: Any) -> str:
    scheduling = kubernetes.client.SchedulingV1Api(api)
    # manifests/'s own (its value may not change once created: tests/manifests applies it too).
    body = yaml.safe_load((REPO / "manifests" / "base" / "priorityclass.yaml").read_text())
    try:
        scheduling.create_priority_class(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return "mrk8s"


@pytest.fixture
def space(
    cluster: Any, api: Any, namespace: str, priority_class: str, s3_bucket: S3Bucket
) -> Space:
    core = kubernetes.client.CoreV1Api(api)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "mrk8s-worker"}, "automountServiceAccountToken": False}
    )
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": SECRET},
            "stringData": {
                "AWS_ACCESS_KEY_ID": s3_bucket.storage_options["key"],
                "AWS_SECRET_ACCESS_KEY": s3_bucket.storage_options["secret"],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    return Space(namespace, str(cluster.kubeconfig), s3_bucket, api)


def executor_in(space: Space, **settings: Any) -> Iterator[KubernetesExecutor]:
    """An executor for the tests' pods in ``space`` (``settings`` override PodSettings')."""
    pods = PodSettings(
        namespace=space.namespace,
        image=IMAGE,
        memory=512 << 20,
        ttl_seconds=600,
        env_secrets=(SECRET,),
        **settings,
    )
    with KubernetesExecutor(pods, kubeconfig=space.kubeconfig) as ex:
        yield ex


@pytest.fixture
def executor(space: Space) -> Iterator[KubernetesExecutor]:
    yield from executor_in(space)
