"""The example jobs with ``--backend k8s`` on the real test cluster, object-store shuffle.

Every stage runs as an Indexed Job of the real Job controller, its pods
scheduled by the real scheduler and admitted in a namespace that enforces
Pod Security "restricted"; the shuffle goes through the loopback S3 server.
Each output is compared with an independent computation (Counter,
sorted()). Marker ``cluster``.
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
import pyarrow.parquet as pq  # noqa: E402

from mrk8s.engine.driver import Driver, JobResult  # noqa: E402
from scheduler.backends.k8s import names  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from shuffle import storecount  # noqa: E402
from tests.cluster import kube  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402
from tests.scheduler.k8s.conftest import Space  # noqa: E402
from tests.util import join_inputs, make_words  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

WORD = re.compile(r"[\w']+")


def run(
    executor: KubernetesExecutor,
    space: Space,
    example: str,
    inputs: list[str],
    **options: Any,
) -> JobResult:
    settings = space.run_settings(EXAMPLES / example, inputs, **options)
    return Driver(settings).run(executor)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(make_words(30_000, vocab=1500, seed=11))
    return p


def test_wordcount_from_the_command_line(space: Space, corpus: Path, cli: Any):
    url = space.upload(corpus, "in/corpus.txt")

    out = cli(
        "run", "examples/wordcount.py", url, *space.cli_args(), "--reducers", "3",
        "--split-size", "64KiB", "--job-id", "wc", "-q",
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    got = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("\t")
        got[json.loads(key)] = json.loads(value)
    assert got == dict(collections.Counter(corpus.read_text().split()))
    # The Jobs are found by the job's label, as `kubectl get jobs -l mrk8s.io/job-id=wc` would.
    jobs = kubernetes.client.BatchV1Api(space.api).list_namespaced_job(
        space.namespace, label_selector=names.job_selector("wc")
    )
    assert sorted(j.metadata.name for j in jobs.items) == [
        names.stage_job_name("wc", 0, "map"),
        names.stage_job_name("wc", 0, "reduce"),
    ]
    for job in jobs.items:
        assert job.spec.completion_mode == "Indexed"
        assert [r.name for r in job.metadata.owner_references] == [names.owner_name("wc")]
        # The driver moves on once every task's pod succeeded; the Job controller marks
        # the Job Complete within its batching second.
        kube.wait_until(
            lambda name=job.metadata.name: kube.condition(
                kubernetes.client.BatchV1Api(space.api).read_namespaced_job(name, space.namespace),
                "Complete",
            ),
            timeout=30,
            what=f"Job {job.metadata.name} to be Complete",
        )
    pods = kubernetes.client.CoreV1Api(space.api).list_namespaced_pod(
        space.namespace, label_selector=names.job_selector("wc")
    )
    # Every pod was admitted under "restricted" and ran once: one pod per task.
    completions = {j.metadata.labels[names.STAGE_LABEL]: j.spec.completions for j in jobs.items}
    assert completions["map"] > 1 and completions["reduce"] == 3
    stages = collections.Counter(p.metadata.labels[names.STAGE_LABEL] for p in pods.items)
    assert stages == completions
    assert {p.status.phase for p in pods.items} == {"Succeeded"}


def test_top_words_two_steps(executor: KubernetesExecutor, space: Space, corpus: Path):
    url = space.upload(corpus, "in/corpus.txt")

    result = run(executor, space, "top_words.py", [url], job_args={"top": 7})

    counts = collections.Counter(WORD.findall(corpus.read_text().lower()))
    expected = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:7]
    assert result.records(space.bucket.storage_options) == expected
    assert result.summary["steps"] == 2


def test_terasort_global_sort(executor: KubernetesExecutor, space: Space, tmp_path: Path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import terasort_data
    finally:
        sys.path.remove(str(EXAMPLES))
    src = tmp_path / "tera-in"
    terasort_data.generate(20_000, str(src), files=3, seed=9)
    url = space.upload(src, "tera-in")

    run(executor, space, "terasort.py", [url], reducers=3, output_format="parquet")

    import s3fs

    fs = s3fs.S3FileSystem(**space.bucket.storage_options)
    parts = sorted(fs.glob(f"{space.bucket.url}/out/part-*.parquet"))
    assert len(parts) == 3
    got = [k for p in parts for k in pq.read_table(p, filesystem=fs)["key"].to_pylist()]
    keys_in = sorted(pq.read_table(sorted(src.glob("*.parquet")))["key"].to_pylist())
    assert got == keys_in


def test_reduce_side_join(executor: KubernetesExecutor, space: Space, tmp_path: Path):
    inputs = join_inputs(tmp_path, users=200, orders=2000)
    urls = [
        space.upload(inputs.users_csv, "in/users.csv"),
        space.upload(inputs.orders_csv, "in/orders.csv"),
    ]

    result = run(executor, space, "join.py", urls, reducers=3)

    assert dict(result.records(space.bucket.storage_options)) == inputs.expected
    counters = dict(result.summary["counters"])
    # Beside the job's own group, the engine's: the S3 requests its tasks sent
    # (shuffle.storecount; none through Arrow's client, which it cannot see).
    store = counters.pop(storecount.COUNTER_GROUP, {})
    assert counters == {"join": {"orders_without_user": inputs.dropped}}
    kinds = {*storecount.KINDS, storecount.BYTES_READ, storecount.BYTES_WRITTEN}
    assert set(store) <= kinds, sorted(set(store) - kinds)
