"""The k8s backend's watch, in-process against the real test cluster: reconnects are counted,
and a driver Job it has not seen yet is not taken for one that is gone."""

from __future__ import annotations

import pytest

from mrk8s.gateway.config import Cluster
from tests.cluster.kube import wait_until
from tests.manifests.kustomize import installed

kubernetes = pytest.importorskip("kubernetes")

__all__ = ["installed"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_watches_that_the_server_ends_are_made_again_and_counted(cluster, installed):
    from mrk8s.gateway.backends.k8s import K8sBackend

    where = Cluster(
        name="kube",
        kind="k8s",
        kubeconfig=str(cluster.kubeconfig),
        namespace=installed,
        storage="s3://not-used/here",
    )
    # The server ends each watch after a second: the backend watches again from the last
    # resourceVersion, and /metrics counts each time.
    backend = K8sBackend(where, watch_seconds=1)
    try:
        job = {"id": "kube-watch-test", "job_dir": "unused", "log_path": "unused"}
        handle = backend.attach(job, installed, "mrk8s-kube-watch-test-driver")
        assert (handle.cluster, handle.namespace) == ("kube", installed)
        # Attached but not created yet: still running as far as anyone can tell.
        assert backend.poll(job, handle) is None
        wait_until(lambda: backend.watch_reconnects() >= 4, timeout=60, what="4 reconnects")
        assert backend.poll(job, handle) is None
    finally:
        backend.close()
