"""``mrk8s submit`` end to end: a job whose driver is itself a pod, on the real test cluster.

The driver Job runs ``mrk8s run ... --backend k8s`` in the ``mrk8s``
namespace of ``manifests/`` (Pod Security "restricted") as the
``mrk8s-driver`` service account, with the pod's in-cluster credentials and
the driver's Role only; it runs the stages as Indexed Jobs whose pods are
processes of the node agent that runs pods as local processes, shuffling
through the loopback S3 server. The output is compared with a Counter, and
``mrk8s logs`` prints what the map tasks wrote, compared with the input.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from scheduler.backends.k8s import driverjob, indexmap, names
from tests.cluster import kube
from tests.cluster.controlplane import Cluster
from tests.conftest import CLIResult
from tests.manifests.kustomize import installed
from tests.s3 import S3Bucket
from tests.util import LOUD_WORDCOUNT, make_words

pytestmark = pytest.mark.cluster

__all__ = ["installed"]  # the fixture, imported to be used here


@pytest.mark.timeout(420)
def test_submit_runs_a_job_whose_driver_is_a_pod_and_logs_prints_a_tasks_output(
    api: Any,
    cluster: Cluster,
    installed: str,
    s3_bucket: S3Bucket,
    cli: Callable[..., CLIResult],
    tmp_path: Path,
) -> None:
    import s3fs

    core = kubernetes.client.CoreV1Api(api)
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
    text = make_words(4000, vocab=300, seed=5)
    fs.pipe(f"{s3_bucket.url}/in/words.txt", text.encode())
    (tmp_path / "job").mkdir()
    script = tmp_path / "job" / "loud.py"
    script.write_text(LOUD_WORDCOUNT)
    job_id = f"loud-{uuid.uuid4().hex[:4]}"
    where = ["--kubeconfig", str(cluster.kubeconfig), "-n", installed]
    # No credentials on the command line: the pods get them from the Secret.
    public = {"client_kwargs": {"endpoint_url": s3_bucket.endpoint}}
    try:
        submitted = cli(
            "submit", str(script), f"{s3_bucket.url}/in/words.txt", "-o", f"{s3_bucket.url}/out",
            "--shuffle-dir", f"{s3_bucket.url}/shuffle", "--reducers", "2",
            "--split-size", "16KiB", "--workers", "3", "--image", "mrk8s-test:local",
            "--env-from-secret", secret,
            "--storage-options", json.dumps(public),
            "--job-id", job_id, *where,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert f"submitted job {job_id} to namespace {installed}" in submitted.stdout

        driver = kube.wait_finished(api, installed, driverjob.driver_job_name(job_id), timeout=360)
        driver_log = cli("logs", job_id, "--stage", "driver", *where)
        assert kube.condition(driver, "Complete"), driver_log.stdout + driver_log.stderr

        # The output, written by the stages the driver pod ran, equals a Counter.
        counts: Counter[str] = Counter()
        for path in fs.glob(f"{s3_bucket.url}/out/part-*"):
            for line in fs.cat(path).decode().splitlines():
                key, value = line.split("\t")
                counts[json.loads(key)] += json.loads(value)
        assert counts == Counter(text.split())

        # The stage Jobs are the driver's, found by the job's labels and owned by its owner.
        stage_jobs = (
            kubernetes.client.BatchV1Api(api)
            .list_namespaced_job(installed, label_selector=names.job_selector(job_id))
            .items
        )
        stages = {j.metadata.labels[names.STAGE_LABEL] for j in stage_jobs}
        assert stages == {"driver", "map", "reduce"}
        for job in stage_jobs:
            (ref,) = job.metadata.owner_references
            assert ref.name == names.owner_name(job_id)

        # A map task's own output, through mrk8s logs: each input line mapped once.
        # (--workers 3: a pod runs a batch of tasks; its log is shown for any of them.)
        maps = [j for j in stage_jobs if j.metadata.labels[names.STAGE_LABEL] == "map"]
        index_map = maps[0].metadata.annotations[indexmap.ANNOTATION]
        assert len(indexmap.decode(index_map)) > 1
        mapped = 0
        for index in [indexmap.batch(index_map, k)[-1] for k in range(indexmap.pods(index_map))]:
            log = cli(
                "logs", job_id, "--step", "1", "--stage", "map", "--index", str(index), *where
            )
            assert log.returncode == 0, log.stderr
            lines = [x for x in log.stdout.splitlines() if x.startswith("mapped a line of ")]
            assert lines, log.stdout
            mapped += len(lines)
        assert mapped == len(text.splitlines())

        status = cli("status", job_id, *where)
        assert status.returncode == 0, status.stderr
        assert f"owner ConfigMap {names.owner_name(job_id)}" in status.stdout
        driver_row = [
            x for x in status.stdout.splitlines() if driverjob.driver_job_name(job_id) in x
        ]
        assert driver_row and driver_row[0].split()[1:3] == ["complete", "1/1"]
    finally:
        cli("cancel", job_id, *where)
        core.delete_namespaced_secret(secret, installed)
