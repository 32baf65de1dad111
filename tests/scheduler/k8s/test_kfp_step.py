"""The three-step pipeline of tests/mrk8s/test_kfp.py with its mrk8s step fanned out to pods.

KFP's local runner runs the steps as subprocesses; the mrk8s step runs
``mrk8s run --backend k8s`` from there, so its map and reduce tasks run as
the pods of Indexed Jobs on the real control plane (admitted in a namespace
enforcing Pod Security "restricted"), and the shuffle goes through the
loopback S3 server. The local runner's artifacts are on local disk, which
pods cannot reach, so the step stages the input Dataset in the shuffle
directory and copies the output back (mrk8s.kfp.step). The counts are checked
by the pipeline's own last step and again here against ``collections.Counter``.
Marker ``cluster``.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations at run time.
import collections
import json
from pathlib import Path

import pytest

pytest.importorskip("kfp", reason="KFP tests need the kfp extra: pip install 'mrk8s[kfp]'")
kubernetes = pytest.importorskip("kubernetes")

from kfp import compiler, components  # noqa: E402

from scheduler.backends.k8s import names  # noqa: E402
from tests.mrk8s.test_kfp import (  # noqa: E402
    TEXT,
    WORDCOUNT,
    executor_output,
    local_runner,  # noqa: F401  (a fixture)
    read_parts,
    task_dir,
    three_steps,
)
from tests.scheduler.k8s.conftest import IMAGE, SECRET, Space  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings(
        "ignore:You may be attemping to run a task that uses custom:RuntimeWarning"
    ),
]


def test_the_pipeline_runs_with_its_mrk8s_step_fanned_out_as_indexed_jobs(
    space: Space,
    local_runner: Path,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
):
    job_options = [
        "--kubeconfig", space.kubeconfig, "--namespace", space.namespace,
        "--image", IMAGE, "--env-from-secret", SECRET, "--job-id", "kfp-wc",
    ]  # fmt: skip
    package = tmp_path / "pipeline.yaml"
    pipeline = three_steps(
        str(WORDCOUNT),
        backend="k8s",
        shuffle_dir=f"{space.bucket.url}/shuffle",
        storage_options=space.public_options,
        args=job_options,
    )
    compiler.Compiler().compile(pipeline, str(package))

    components.load_component_from_file(str(package))(reducers=2)

    expected = dict(collections.Counter(TEXT.split()))
    output = task_dir(local_runner, "mapreduce") / "output"
    assert read_parts(output) == expected
    summary = json.loads((output / "summary.json").read_text())
    assert summary["reducers"] == [2]
    checked = executor_output(local_runner, "check-counts")
    assert checked["parameterValues"]["Output"] == len(expected)
    # The tasks ran as the pods of the job's two Indexed Jobs, one pod per task.
    batch = kubernetes.client.BatchV1Api(space.api)
    jobs = batch.list_namespaced_job(space.namespace, label_selector=names.job_selector("kfp-wc"))
    stages = {j.metadata.labels[names.STAGE_LABEL]: j for j in jobs.items}
    assert sorted(stages) == ["map", "reduce"]
    assert {j.spec.completion_mode for j in jobs.items} == {"Indexed"}
    assert stages["reduce"].spec.completions == 2
    pods = kubernetes.client.CoreV1Api(space.api).list_namespaced_pod(
        space.namespace, label_selector=names.job_selector("kfp-wc")
    )
    ran = collections.Counter(p.metadata.labels[names.STAGE_LABEL] for p in pods.items)
    assert ran == {stage: job.spec.completions for stage, job in stages.items()}
    assert {p.status.phase for p in pods.items} == {"Succeeded"}
    # The staged copies in the object store are gone once the output is back.
    import s3fs

    fs = s3fs.S3FileSystem(**space.bucket.storage_options)
    assert not fs.exists(f"{space.bucket.url}/shuffle/kfp-staging")
