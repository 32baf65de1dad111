"""Declarative mode end to end: gateway -> git -> reconciler -> the test cluster's API server.

The gateway commits each job to a bare repository of the test's; its
reconciler applies what the branch holds to the real control plane of
``tests/cluster/`` with server-side apply and strict field validation. The
``k8s`` job's driver Job then runs on the node agent that runs pods as local
processes, shuffling through the loopback S3 server; the gateway's ``k8s``
backend follows it (the reconciler hands it over), across a SIGKILL and
restart of the gateway, to SUCCEEDED with one driver Job, and its
output, served by ``GET /v1/jobs/ID/output``, is compared with a Counter.
The ``ray`` job's RayJob is validated by the API server against KubeRay
v1.7.0's CRD from ``manifests/ray/crds/`` (installed by
``tests/cluster/test_rayjob.py``'s fixture; no KubeRay operator runs, so it
is accepted and stored, not run). A queue aimed at a namespace that does
not exist shows what a refused manifest does to its job.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.cluster.test_rayjob import rayjob_crd
from tests.gateway.conftest import EXAMPLES, follow, submit, upload, wait_until
from tests.gateway.test_gitops import bare_repository, commits, git
from tests.gateway.test_k8s import k8s_cluster, s3_secret
from tests.manifests.kustomize import installed
from tests.util import make_words, parse_text_output

kubernetes = pytest.importorskip("kubernetes")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

__all__ = ["installed", "rayjob_crd", "s3_secret"]  # fixtures, imported to be used here


@pytest.mark.timeout(120)
def test_a_rayjob_for_a_cluster_without_kuberay_fails_naming_the_crds(
    gateway, tmp_path, api, cluster, installed, s3_bucket, s3_secret
):
    # First in this module: the RayJob CRD of the test below is not installed yet.
    import s3fs

    words = f"{s3_bucket.url}/in/few.txt"
    s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(words, b"a b\n")
    repo = bare_repository(tmp_path)
    gw = gateway(
        storage_options=s3_bucket.storage_options,
        clusters=[k8s_cluster("kube", cluster.kubeconfig, installed, s3_secret, s3_bucket)],
        queues={"reviewed": {"mode": "declarative", "git": {"repository": str(repo)}}},
        default_queue="reviewed",
    )
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        job = submit(c, script=script, inputs=[words], backend="ray")
        events = follow(c, job["id"], timeout=60)
        failed = c.get(f"/v1/jobs/{job['id']}").json()
    assert [e["status"] for e in events if e["event"] == "status"] == ["QUEUED", "FAILED"]
    assert "does not serve one of" in failed["error"] and "ray.io/v1 RayJob" in failed["error"]
    assert "KubeRay's CRDs installed (manifests/ray/crds/)" in failed["error"]
    assert commits(repo) == [job["git_commit"]]  # it was committed; the cluster refused it
    # What was applied before the refusal (its owner and code ConfigMaps) is gone again.
    from kubernetes.client import CoreV1Api

    from scheduler.backends.k8s import names

    def leftovers() -> list[Any]:
        selector = names.job_selector(job["id"])
        return list(
            CoreV1Api(api).list_namespaced_config_map(installed, label_selector=selector).items
        )

    wait_until(lambda: not leftovers(), timeout=60, what="the partly applied job removed")


@pytest.mark.timeout(600)
def test_the_reconciler_applies_jobs_from_git_and_the_k8s_job_is_followed_to_exact_counts(
    gateway, tmp_path, api, cluster, installed, rayjob_crd, s3_bucket, s3_secret
):
    import s3fs
    from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi

    from mrk8s.gateway import render
    from scheduler.backends.k8s import driverjob, names

    core = CoreV1Api(api)
    text = make_words(3000, vocab=200, seed=11)
    words = f"{s3_bucket.url}/in/words.txt"
    s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(words, text.encode())
    repo = bare_repository(tmp_path)
    gw = gateway(
        storage_options=s3_bucket.storage_options,
        clusters=[k8s_cluster("kube", cluster.kubeconfig, installed, s3_secret, s3_bucket)],
        queues={
            "default": {"max_running": 2, "default_workers": 1},
            # Everything but the repository comes from the cluster "kube".
            # Submissions go to main; the reconciler applies branch live, once merged there.
            "reviewed": {
                "mode": "declarative",
                "max_running": 1,
                "git": {
                    "repository": str(repo),
                    "cluster": "kube",
                    "apply_branch": "live",
                    "interval": 1,
                },
            },
            "misaimed": {
                "mode": "declarative",
                "git": {"repository": str(repo), "namespace": "no-such-namespace"},
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
            withdrawn = submit(c, backend="k8s", **common)
            refused = submit(c, backend="k8s", **{**common, "queue": "misaimed"})
            jobs += [k8s_job, ray_job, withdrawn, refused]
            assert k8s_job["id"].startswith("kube-") and refused["id"].startswith("kube-")

            def status(job: dict[str, Any]) -> str:
                return str(c.get(f"/v1/jobs/{job['id']}").json()["status"])

            # The misaimed queue applies main at once: the API server refuses its namespace.
            wait_until(lambda: status(refused) == "FAILED", timeout=60, what="refused job failed")
            failed = c.get(f"/v1/jobs/{refused['id']}").json()
            assert "HTTP 404" in failed["error"] and "no-such-namespace" in failed["error"]
            # The reviewed jobs wait for their merge to live: nothing of them in the cluster.
            time.sleep(3)  # three passes of the reconciler
            assert {status(j) for j in (k8s_job, ray_job, withdrawn)} == {"QUEUED"}
            assert not core.list_namespaced_config_map(
                installed, label_selector=names.job_selector(k8s_job["id"])
            ).items
            # A reviewer removes one job's manifest, then merges main into live.
            clone = tmp_path / "review"
            git(tmp_path, "clone", "--quiet", str(repo), str(clone))
            git(clone, "rm", "--quiet", f"jobs/reviewed/{withdrawn['id']}.yaml")
            ident = ["-c", "user.name=rita", "-c", "user.email=rita@example.com"]
            git(clone, *ident, "commit", "--quiet", "-m", f"withdraw {withdrawn['id']}")
            git(clone, "push", "--quiet", "origin", "main:main", "main:live")

            # The k8s job: applied from git, then followed by the k8s backend's watch.
            wait_until(lambda: status(k8s_job) == "RUNNING", timeout=60, what="k8s job applied")
            driver_name = driverjob.driver_job_name(k8s_job["id"])
            batch = BatchV1Api(api)
            first_uid = batch.read_namespaced_job(driver_name, installed).metadata.uid
            # The queue's cap (max_running: 1) holds: the ray job waits for the k8s one.
            time.sleep(2)
            assert status(ray_job) == "QUEUED"

        # The gateway is killed with the job running; the next one, on the same state,
        # applies nothing again and follows the same driver Job to its end.
        gw.stop(signal.SIGKILL)
        gw.start()
        with gw.client("alice") as c:
            events = follow(c, k8s_job["id"], timeout=480)
            statuses = [e["status"] for e in events if e["event"] == "status"]
            assert statuses[0] == "QUEUED" and statuses[-1] == "SUCCEEDED", events
            done = c.get(f"/v1/jobs/{k8s_job['id']}").json()
            assert done["status"] == "SUCCEEDED", done
            assert done["git_commit"] == k8s_job["git_commit"]
            assert done["launches"] == 1  # handed over once, re-attached after the restart
            assert batch.read_namespaced_job(driver_name, installed).metadata.uid == first_uid
            output = c.get(done["output"])
            assert output.status_code == 200, output.text
            assert dict(parse_text_output(output.text)) == Counter(text.split())

            def status(job: dict[str, Any]) -> str:
                return str(c.get(f"/v1/jobs/{job['id']}").json()["status"])

            # The ray job, once the k8s job ended: its RayJob applied (no operator here runs
            # it, and nobody follows it).
            wait_until(lambda: status(ray_job) == "RUNNING", timeout=60, what="RayJob applied")
            # The withdrawn job never reached the cluster.
            gone = c.get(f"/v1/jobs/{withdrawn['id']}").json()
            assert gone["status"] == "CANCELLED", gone
            assert not core.list_namespaced_config_map(
                installed, label_selector=names.job_selector(withdrawn["id"])
            ).items

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
        assert messages[2].startswith("following ")
        # The reconciler recorded the commits it applied: heads of the branches.
        assert synced and set(synced) <= set(commits(repo))
        with sqlite3.connect(gw.state_dir / "gateway.db") as db:
            why = db.execute(
                "select message from job_events where job_id = ? and status = 'CANCELLED'",
                (withdrawn["id"],),
            ).fetchone()[0]
        assert why.startswith("its manifest was removed from branch live before it was applied")

        # In the cluster: the objects as committed, under the owner the reconciler made.
        for job in (k8s_job, ray_job):
            owner = core.read_namespaced_config_map(names.owner_name(job["id"]), installed)
            code = core.read_namespaced_config_map(driverjob.code_name(job["id"]), installed)
            (ref,) = code.metadata.owner_references
            assert (ref.name, ref.uid) == (owner.metadata.name, owner.metadata.uid)
            assert "mrk8s-gateway" in {m.manager for m in code.metadata.managed_fields}
        driver = batch.read_namespaced_job(driver_name, installed)
        assert driver.metadata.owner_references[0].name == names.owner_name(k8s_job["id"])
        rayjob = CustomObjectsApi(api).get_namespaced_custom_object(
            "ray.io", "v1", installed, "rayjobs", render.rayjob_name(ray_job["id"])
        )
        committed_ray = list(yaml.safe_load_all(ray_job["manifest"]))[-1]
        assert rayjob["spec"]["entrypoint"] == committed_ray["spec"]["entrypoint"]
        assert rayjob["metadata"]["ownerReferences"][0]["name"] == names.owner_name(ray_job["id"])

        # Cancelling the ray job (no backend follows it) deletes what was applied of it.
        with gw.client("alice") as c:
            cancelled = c.delete(f"/v1/jobs/{ray_job['id']}")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"

        def rayjob_gone() -> bool:
            try:
                CustomObjectsApi(api).get_namespaced_custom_object(
                    "ray.io", "v1", installed, "rayjobs", render.rayjob_name(ray_job["id"])
                )
            except kubernetes.client.exceptions.ApiException as exc:
                return exc.status == 404
            return False

        wait_until(rayjob_gone, timeout=60, what="the cancelled job's RayJob deleted")
        with pytest.raises(kubernetes.client.exceptions.ApiException, match="404"):
            core.read_namespaced_config_map(names.owner_name(ray_job["id"]), installed)
    finally:
        for job in jobs:
            with contextlib.suppress(kubernetes.client.exceptions.ApiException):
                core.delete_namespaced_config_map(
                    names.owner_name(job["id"]), installed, propagation_policy="Background"
                )
