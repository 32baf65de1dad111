"""Declarative mode end to end: gateway -> git -> reconciler -> the test cluster's API server.

The gateway commits each job to a bare repository of the test's; its
reconciler applies what the branch holds to the real control plane of
``tests/cluster/`` with server-side apply and strict field validation. The
``k8s`` job's driver Job then runs on the node agent that runs pods as local
processes, shuffling through the loopback S3 server, and its output is
compared with a Counter. The ``ray`` job's RayJob is validated by the API
server against KubeRay v1.7.0's CRD from ``manifests/ray/crds/`` (installed
by ``tests/cluster/test_rayjob.py``'s fixture; no KubeRay operator runs, so
it is accepted and stored, not run). A queue aimed at a namespace that does
not exist shows what a refused manifest does to its job.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.cluster import kube
from tests.cluster.test_rayjob import rayjob_crd
from tests.gateway.conftest import EXAMPLES, submit, upload, wait_until
from tests.gateway.test_gitops import bare_repository, commits
from tests.manifests.kustomize import installed
from tests.s3 import S3Bucket
from tests.util import make_words

kubernetes = pytest.importorskip("kubernetes")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

__all__ = ["installed", "rayjob_crd"]  # fixtures, imported to be used here


def _git_settings(repo: Any, s3_bucket: S3Bucket, cluster: Any, **extra: Any) -> dict[str, Any]:
    return {
        "repository": str(repo),
        "output": f"{s3_bucket.url}/out",
        "shuffle_dir": f"{s3_bucket.url}/shuffle",
        "image": "mrk8s-test:local",
        # The pods get the endpoint only; the credentials come from the Secret.
        "storage_options": {"client_kwargs": {"endpoint_url": s3_bucket.endpoint}},
        "kubeconfig": str(cluster.kubeconfig),
        "interval": 1,
        **extra,
    }


@pytest.mark.timeout(600)
def test_the_reconciler_applies_jobs_from_git_and_the_k8s_job_runs_to_exact_counts(
    gateway, tmp_path, api, cluster, installed, rayjob_crd, s3_bucket
):
    import s3fs
    from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi

    from mrk8s.gateway import render
    from scheduler.backends.k8s import driverjob, names

    core = CoreV1Api(api)
    secret = f"s3-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_secret(
        installed,
        {
            "metadata": {"name": secret},
            "stringData": {
                "AWS_ACCESS_KEY_ID": s3_bucket.storage_options["key"],
                "AWS_SECRET_ACCESS_KEY": s3_bucket.storage_options["secret"],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    text = make_words(3000, vocab=200, seed=11)
    words = f"{s3_bucket.url}/in/words.txt"
    fs.pipe(words, text.encode())
    repo = bare_repository(tmp_path)
    gw = gateway(
        storage_options=s3_bucket.storage_options,
        queues={
            "default": {"max_running": 2, "default_workers": 1},
            "reviewed": {
                "mode": "declarative",
                "git": _git_settings(
                    repo, s3_bucket, cluster, namespace=installed, env_from_secret=[secret]
                ),
            },
            "misaimed": {
                "mode": "declarative",
                "git": _git_settings(repo, s3_bucket, cluster, namespace="no-such-namespace"),
            },
        },
    )
    jobs: list[dict[str, Any]] = []
    try:
        with gw.client("alice") as c:
            script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
            common = {"script": script, "inputs": [words], "reducers": 2, "queue": "reviewed"}
            k8s_job = submit(c, backend="k8s", resources={"workers": 2}, **common)
            ray_job = submit(c, backend="ray", **common)
            refused = submit(c, backend="k8s", **{**common, "queue": "misaimed"})
            jobs += [k8s_job, ray_job]

            def status(job: dict[str, Any]) -> str:
                return str(c.get(f"/v1/jobs/{job['id']}").json()["status"])

            wait_until(
                lambda: status(k8s_job) == status(ray_job) == "RUNNING",
                timeout=120,
                what="both jobs applied from git",
            )
            wait_until(lambda: status(refused) == "FAILED", timeout=60, what="refused job failed")
            failed = c.get(f"/v1/jobs/{refused['id']}").json()
            assert "HTTP 404" in failed["error"] and "no-such-namespace" in failed["error"]
        with sqlite3.connect(gw.state_dir / "gateway.db") as db:
            messages = [
                r[0]
                for r in db.execute(
                    "select message from job_events where job_id = ? order by seq",
                    (k8s_job["id"],),
                )
            ]
            synced = [r[0] for r in db.execute("select `commit` from git_syncs")]
        assert messages[0] == "submitted"
        assert messages[1].startswith("applied from git commit ")
        assert f"the job's own commit {k8s_job['git_commit'][:12]}" in messages[1]

        # In the cluster: each object as committed, under the owner the reconciler made.
        for job in (k8s_job, ray_job):
            owner = core.read_namespaced_config_map(names.owner_name(job["id"]), installed)
            code = core.read_namespaced_config_map(driverjob.code_name(job["id"]), installed)
            (ref,) = code.metadata.owner_references
            assert (ref.name, ref.uid) == (owner.metadata.name, owner.metadata.uid)
            managers = {m.manager for m in code.metadata.managed_fields}
            assert "mrk8s-gateway" in managers
        driver = BatchV1Api(api).read_namespaced_job(
            driverjob.driver_job_name(k8s_job["id"]), installed
        )
        assert driver.metadata.owner_references[0].name == names.owner_name(k8s_job["id"])
        rayjob = CustomObjectsApi(api).get_namespaced_custom_object(
            "ray.io", "v1", installed, "rayjobs", render.rayjob_name(ray_job["id"])
        )
        committed_ray = list(yaml.safe_load_all(ray_job["manifest"]))[-1]
        assert rayjob["spec"]["entrypoint"] == committed_ray["spec"]["entrypoint"]
        assert rayjob["metadata"]["ownerReferences"][0]["name"] == names.owner_name(ray_job["id"])

        # The reconciler recorded the commits it applied: the branch's heads.
        assert synced and synced[-1] in commits(repo)

        # The driver runs the job on the cluster; its output is exact.
        finished = kube.wait_finished(
            api, installed, driverjob.driver_job_name(k8s_job["id"]), timeout=420
        )
        assert kube.condition(finished, "Complete"), finished.status
        counts: Counter[str] = Counter()
        for path in fs.glob(f"{s3_bucket.url}/out/{k8s_job['id']}/part-*"):
            for line in fs.cat(path).decode().splitlines():
                key, value = line.split("\t")
                counts[json.loads(key)] += json.loads(value)
        assert counts == Counter(text.split())
    finally:
        for job in jobs:
            with contextlib.suppress(kubernetes.client.exceptions.ApiException):
                core.delete_namespaced_config_map(
                    names.owner_name(job["id"]), installed, propagation_policy="Background"
                )
        core.delete_namespaced_secret(secret, installed)
