"""The gateway's ``k8s`` backend on the real test cluster, driven over HTTP.

The service runs as a subprocess on loopback with a config whose clusters
are test clusters of ``tests/cluster/`` (the real control plane, and the node
agent that runs pods as local processes); the jobs' shuffle, inputs and
output go to the loopback S3 server, the pods get its credentials from a
Secret. Every check of the cluster's state goes through its API.
"""

from __future__ import annotations

import itertools
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import EXAMPLES, JOBS, follow, submit, upload, wait_until
from tests.manifests.kustomize import installed
from tests.s3 import S3Bucket
from tests.util import LOUD_WORDCOUNT, make_words, parse_text_output

kubernetes = pytest.importorskip("kubernetes")

__all__ = ["installed"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def s3_secret(api: Any, installed: str, s3_bucket: S3Bucket) -> Iterator[str]:
    """A Secret in the namespace of manifests/ with the S3 server's credentials, for the pods."""
    core = kubernetes.client.CoreV1Api(api)
    name = f"s3-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_secret(
        installed,
        {
            "metadata": {"name": name},
            "stringData": {
                "AWS_ACCESS_KEY_ID": s3_bucket.storage_options["key"],
                "AWS_SECRET_ACCESS_KEY": s3_bucket.storage_options["secret"],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    try:
        yield name
    finally:
        core.delete_namespaced_secret(name, installed)


#: A word count that a test holds mid-job: the map task that meets the word ``gate`` waits
#: until the object ``--gate URL`` exists (on the S3 server at ``--endpoint``). An object, not
#: a file: the pods' /tmp is their own (the node agent maps it to the pod's emptyDir).
GATED = """\
import time

import fsspec

from mrk8s import MapReduce


class GatedWordCount(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--gate", required=True)
        parser.add_argument("--endpoint", required=True)

    def mapper(self, _, line):
        words = line.split()
        if "gate" in words:
            fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": self.options.endpoint})
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                fs.invalidate_cache()
                if fs.exists(self.options.gate):
                    break
                time.sleep(0.2)
        for word in words:
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


def k8s_cluster(
    name: str, kubeconfig: Path, namespace: str, secret: str, bucket: S3Bucket, weight: float = 1
) -> dict[str, Any]:
    """A ``clusters:`` entry of the gateway's config for a test cluster."""
    return {
        "name": name,
        "kind": "k8s",
        "weight": weight,
        "kubeconfig": str(kubeconfig),
        "namespace": namespace,
        "image": "mrk8s-test:local",
        "storage": f"{bucket.url}/{name}",
        "storage_options": bucket.storage_options,
        # No credentials on the pods' command line: they get them from the Secret.
        "job_storage_options": {"client_kwargs": {"endpoint_url": bucket.endpoint}},
        "env_from_secret": [secret],
    }


@pytest.fixture
def k8s_gateway(gateway, cluster, installed, s3_secret, s3_bucket) -> Any:
    """``k8s_gateway(**config)``: a gateway whose one cluster, ``kube``, is the test cluster."""

    def make(**config: Any) -> Any:
        entry = k8s_cluster("kube", cluster.kubeconfig, installed, s3_secret, s3_bucket)
        return gateway(clusters=[entry], **config)

    return make


def _pods(api: Any, namespace: str, job_id: str) -> list[Any]:
    from scheduler.backends.k8s import names

    return (
        kubernetes.client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=names.job_selector(job_id))
        .items
    )


def _log(api: Any, namespace: str, pod: Any) -> str:
    """A pod's log so far ('' before its container starts). With one worker a pod runs
    every task of its stage (--tasks-per-pod), so a task's end is a line, not a pod's."""
    try:
        return str(kubernetes.client.CoreV1Api(api).read_namespaced_pod_log(
            pod.metadata.name, namespace))  # fmt: skip
    except kubernetes.client.exceptions.ApiException:
        return ""


def _stage_pods(api: Any, namespace: str, job_id: str, stage: str) -> list[Any]:
    from scheduler.backends.k8s import names

    return [
        p
        for p in _pods(api, namespace, job_id)
        if (p.metadata.labels or {}).get(names.STAGE_LABEL) == stage
    ]


def test_a_k8s_job_succeeds_with_exact_counts_and_its_logs_outlive_its_pods(
    k8s_gateway, api, installed
):
    from scheduler.backends.k8s import names

    gw = k8s_gateway()
    text = make_words(4000, vocab=300, seed=11)
    with gw.client("alice") as c:
        script = upload(c, "loud.py", LOUD_WORDCOUNT)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=2, backend="k8s",
                     resources={"workers": 2})  # fmt: skip
        assert job["status"] in ("QUEUED", "RUNNING") and job["cluster"] == "kube"
        assert job["id"].startswith("kube-")

        events = follow(c, job["id"], timeout=420)
        statuses = [e["status"] for e in events if e["event"] == "status"]
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert statuses == ["QUEUED", "RUNNING", "SUCCEEDED"], (done, gw.service_log()[-3000:])
        assert done["exit_code"] == 0 and done["launches"] == 1
        assert {(p["stage"], p["committed"] == p["tasks"]) for p in done["progress"]} == {
            ("map", True),
            ("reduce", True),
        }
        # Timings of the driver's summary.json, read from the object store.
        assert set(done["timings"]) - {"queued_seconds", "run_seconds"}, done["timings"]
        output = c.get(done["output"])
        assert output.status_code == 200, output.text
        assert dict(parse_text_output(output.text)) == Counter(text.split())

        # Delete every object of the job through the API; the pods are gone...
        kubernetes.client.CoreV1Api(api).delete_namespaced_config_map(
            names.owner_name(job["id"]), installed, propagation_policy="Background"
        )
        wait_until(lambda: not _pods(api, installed, job["id"]), 120, "the job's pods to go")

        # ...and the gateway still serves the driver's and every task's log.
        logs = c.get(f"/v1/jobs/{job['id']}/logs")
        assert logs.status_code == 200
        assert f"launch 1 of job {job['id']} on cluster kube" in logs.text
        headers = [line for line in logs.text.splitlines() if line.startswith("==> pod ")]
        assert any("(driver, Succeeded)" in h for h in headers), headers
        assert any("step 1 map task 0" in h for h in headers), headers
        assert any("step 1 reduce task 1" in h for h in headers), headers
        assert "output written to" in logs.text
        mapped = [x for x in logs.text.splitlines() if x.startswith("mapped a line of ")]
        assert len(mapped) == len(text.splitlines())


def test_a_k8s_job_whose_mapper_raises_fails_with_the_users_traceback(k8s_gateway):
    gw = k8s_gateway()
    with gw.client("alice") as c:
        script = upload(c, "failing.py", (JOBS / "failing.py").read_bytes())
        data = upload(c, "words.txt", "a b c\nboom here\n")
        job = submit(c, script=script, inputs=[data], reducers=1, backend="k8s")
        events = follow(c, job["id"], timeout=420)
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert [e["status"] for e in events if e["event"] == "status"][-1] == "FAILED", done
        assert done["exit_code"] == 2  # a user error: the driver pod's exit status
        assert "this line is bad: 'boom here'" in done["error"], done["error"]
        assert c.get(f"/v1/jobs/{job['id']}/output").status_code == 409


def test_cancelling_a_running_k8s_job_deletes_its_pods(k8s_gateway, api, installed, s3_bucket):
    gw = k8s_gateway()
    gate = f"{s3_bucket.url}/never-opened"
    text = make_words(3000, vocab=100, seed=3) + "gate\n"
    with gw.client("alice") as c:
        script = upload(c, "gated.py", GATED)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=2, backend="k8s",
                     args=["--gate", gate, "--endpoint", s3_bucket.endpoint])  # fmt: skip
        wait_until(
            lambda: any(
                p.status.phase == "Running" for p in _stage_pods(api, installed, job["id"], "map")
            ),
            240,
            "a map pod to run",
        )
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "RUNNING"

        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "CANCELLED"
        # Gone when DELETE answers, as the API server says.
        assert _pods(api, installed, job["id"]) == []
        jobs = (
            kubernetes.client.BatchV1Api(api)
            .list_namespaced_job(installed, label_selector=f"mrk8s.io/job-id={job['id']}")
            .items
        )
        assert [j.metadata.name for j in jobs if not j.metadata.deletion_timestamp] == []
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 409
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "CANCELLED"


def test_a_k8s_job_survives_a_gateway_restart_and_is_reported_once(
    k8s_gateway, api, installed, s3_bucket
):
    import s3fs

    gw = k8s_gateway()
    gate = f"{s3_bucket.url}/gate"
    text = make_words(3000, vocab=100, seed=4) + "gate\n"
    with gw.client("alice") as c:
        script = upload(c, "gated.py", GATED)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=2, backend="k8s",
                     args=["--gate", gate, "--endpoint", s3_bucket.endpoint])  # fmt: skip
        wait_until(
            lambda: any(
                p.status.phase == "Running" for p in _stage_pods(api, installed, job["id"], "map")
            ),
            240,
            "a map pod to run",
        )
    gw.stop(signal.SIGKILL)
    gw.start()
    s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(gate, b"open")
    with gw.client("alice") as c:
        events = follow(c, job["id"], timeout=420)
        done = c.get(f"/v1/jobs/{job['id']}").json()
        statuses = [e["status"] for e in events if e["event"] == "status"]
        assert statuses.count("SUCCEEDED") == 1 and statuses[-1] == "SUCCEEDED", done
        assert done["launches"] == 1  # re-attached, never submitted again
        assert any("re-attached" in e["message"] for e in events), events
        output = c.get(done["output"])
        assert dict(parse_text_output(output.text)) == Counter(text.split())
        drivers = _stage_pods(api, installed, job["id"], "driver")
        assert len(drivers) == 1  # one driver pod ever: the job was not submitted twice
        metrics = c.get("/metrics").text
        assert "mrk8s_gateway_job_reattaches_total 1.0" in metrics
        assert 'mrk8s_gateway_watch_reconnects_total{cluster="kube"}' in metrics


def test_a_k8s_job_whose_driver_job_vanished_is_resumed_and_skips_its_committed_tasks(
    k8s_gateway, api, installed, s3_bucket
):
    import s3fs

    from scheduler.backends.k8s import driverjob

    gw = k8s_gateway()
    gate = f"{s3_bucket.url}/gate"
    text = make_words(3000, vocab=100, seed=5) + "gate\n"
    with gw.client("alice") as c:
        script = upload(c, "gated.py", GATED)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=2, backend="k8s",
                     args=["--gate", gate, "--endpoint", s3_bucket.endpoint])  # fmt: skip
        wait_until(
            lambda: any(
                '"records_out"' in _log(api, installed, p)  # the worker's line per task done
                for p in _stage_pods(api, installed, job["id"], "map")
            ),
            240,
            "a map task to be done while the gated one waits",
        )
        # The driver Job goes (as if someone deleted it): the job is submitted again.
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(
            driverjob.driver_job_name(job["id"]), installed, propagation_policy="Background"
        )
        wait_until(
            lambda: c.get(f"/v1/jobs/{job['id']}").json()["launches"] == 2, 240, "a second launch"
        )
        s3fs.S3FileSystem(**s3_bucket.storage_options).pipe(gate, b"open")
        events = follow(c, job["id"], timeout=420)
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert [e["status"] for e in events if e["event"] == "status"][-1] == "SUCCEEDED", done
        assert done["launches"] == 2
        assert any("resuming it (launch 2)" in e["message"] for e in events), events
        output = c.get(done["output"])
        assert dict(parse_text_output(output.text)) == Counter(text.split())
        # Each map task succeeded once: the ones the first driver saw done were skipped.
        logs = c.get(f"/v1/jobs/{job['id']}/logs").text
        assert f"launch 2 of job {job['id']}" in logs
        succeeded = Counter(re.findall(r"\(step 1 map task (\d+), Succeeded\)", logs))
        assert succeeded and set(succeeded.values()) == {1}, succeeded


def test_an_unknown_cluster_kind_in_the_queue_is_refused(k8s_gateway):
    gw = k8s_gateway(queues={"default": {"clusters": ["kube"]}})
    with gw.client("alice") as c:
        script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
        data = upload(c, "words.txt", "a b\n")
        r = c.post("/v1/jobs", json={"script": script, "inputs": [data], "backend": "local"})
        assert r.status_code == 422
        (problem,) = r.json()["detail"]
        assert "no cluster of kind 'local' serves queue 'default'" in problem["msg"]


def _intervals(client: Any, job_id: str) -> tuple[float, float]:
    """When the job became RUNNING and when it ended, from its status history."""
    events = follow(client, job_id, timeout=420)
    when = {e["status"]: e["at"] for e in events if e["event"] == "status"}
    from datetime import datetime

    return (
        datetime.fromisoformat(when["RUNNING"]).timestamp(),
        datetime.fromisoformat(when["SUCCEEDED"]).timestamp(),
    )


@pytest.mark.timeout(900)
def test_jobs_are_routed_across_two_clusters_by_weight_under_one_queue_cap(
    gateway, cluster, second_cluster, installed, api, s3_secret, s3_bucket
):
    import random

    from mrk8s.gateway import config as gateway_config
    from mrk8s.gateway import routing
    from scheduler.backends.k8s import driverjob
    from tests.manifests.kustomize import MANIFESTS, apply

    apply(second_cluster, MANIFESTS)
    api2 = kubernetes.config.new_client_from_config(config_file=str(second_cluster.kubeconfig))
    core2 = kubernetes.client.CoreV1Api(api2)
    core2.create_namespaced_secret(
        installed,
        {
            "metadata": {"name": s3_secret},
            "stringData": {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    clusters = [
        k8s_cluster("one", cluster.kubeconfig, installed, s3_secret, s3_bucket, weight=3),
        k8s_cluster("two", second_cluster.kubeconfig, installed, s3_secret, s3_bucket, weight=1),
    ]
    queues = {"default": {"max_running": 1, "default_workers": 1}}
    n = 2
    # The first seed whose first n draws use both clusters (the draws are the routing's own).
    parsed = gateway_config.from_mapping({"clusters": clusters, "queues": queues}, environ={})
    for seed in range(100):
        rng = random.Random(seed)
        expected = [routing.choose(parsed, parsed.queue("default"), "k8s", rng) for _ in range(n)]
        if set(expected) == {"one", "two"}:
            break
    gw = gateway(clusters=clusters, queues=queues, routing={"seed": seed})
    texts = [make_words(1500, vocab=80, seed=20 + i) for i in range(n)]
    try:
        with gw.client("alice") as c:
            script = upload(c, "wordcount.py", (EXAMPLES / "wordcount.py").read_bytes())
            jobs = []
            for text in texts:
                data = upload(c, "words.txt", text)
                jobs.append(submit(c, script=script, inputs=[data], reducers=2, backend="k8s"))
            assert [j["cluster"] for j in jobs] == expected
            assert all(j["id"].startswith(f"{j['cluster']}-") for j in jobs)

            spans = [_intervals(c, j["id"]) for j in jobs]
            for job, text in zip(jobs, texts, strict=True):
                output = c.get(f"/v1/jobs/{job['id']}/output")
                assert dict(parse_text_output(output.text)) == Counter(text.split())
            # The queue's cap of 1 held across both clusters: no two jobs ran at once.
            spans.sort()
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans

        # Each driver ran on the cluster its job id names, and only there.
        for job in jobs:
            name = driverjob.driver_job_name(job["id"])
            on_one = (
                kubernetes.client.BatchV1Api(api)
                .list_namespaced_job(installed, field_selector=f"metadata.name={name}")
                .items
            )
            on_two = (
                kubernetes.client.BatchV1Api(api2)
                .list_namespaced_job(installed, field_selector=f"metadata.name={name}")
                .items
            )
            assert (len(on_one), len(on_two)) == ((1, 0) if job["cluster"] == "one" else (0, 1))
    finally:
        core2.delete_namespaced_secret(s3_secret, installed)
        api2.close()
