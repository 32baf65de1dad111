"""The Kubernetes executor's own behaviour on the real test cluster.

Watching: list, then watch from the list's version; a version etcd has
compacted away is answered with 410 Gone and listed again; a watch the
server ends is started again from the last version, nothing replayed. The
owner ConfigMap: deleting it removes the Jobs and their pods through the
real garbage collector. Shipping the modules beside the script. The clear
errors for a missing namespace and for pods that cannot be created.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from mrk8s.engine.driver import Driver  # noqa: E402
from mrk8s.engine.settings import RunSettings  # noqa: E402
from scheduler.backends.k8s import names, watch  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from scheduler.backends.k8s.render import PodSettings  # noqa: E402
from scheduler.errors import ClusterError, JobFailedError  # noqa: E402
from tests.cluster.kube import wait_until  # noqa: E402
from tests.scheduler.k8s.conftest import IMAGE, SECRET, Space  # noqa: E402
from tests.scheduler.k8s.test_faults import (  # noqa: E402
    SLOW_COUNT,
    counts,
    finished,
    run_in_thread,
    running_pid,
    stage_pods,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def events_of(out: queue.Queue[watch.Event], until: Any, timeout: float = 60) -> list[Any]:
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        assert time.monotonic() < deadline, f"waited {timeout} s; saw {seen}"
        with contextlib.suppress(queue.Empty):
            seen.append(out.get(timeout=1))
    return seen


def config_map(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"test": "watch"}}, "data": {"k": name}}


def compact_etcd(cluster: Any) -> None:
    """Compact the cluster's etcd to its current revision (through its gRPC gateway):
    older resource versions are gone for any watch the API server sends to etcd."""
    pki = Path(cluster.state) / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key")
    url = f"https://127.0.0.1:{cluster.ports['etcd-client']}/v3"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(url + path, json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return dict(json.loads(response.read()))

    revision = post("/maintenance/status", {})["header"]["revision"]
    post("/kv/compaction", {"revision": revision, "physical": True})


def event(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"test": "watch"}},
        "involvedObject": {"kind": "Pod", "name": "nothing", "namespace": namespace},
        "reason": "Test",
        "message": name,
    }


def test_a_resource_version_gone_from_etcd_is_listed_again(cluster: Any, api: Any, namespace: str):
    # Events have no watch cache in the API server: their watches go to etcd.
    core = kubernetes.client.CoreV1Api(api)
    for i in range(3):
        core.create_namespaced_event(namespace, event(f"e-{i}", namespace))
    compact_etcd(cluster)
    out: queue.Queue[watch.Event] = queue.Queue()
    follower = watch.Follower(
        core.list_namespaced_event,
        namespace=namespace,
        selector="test=watch",
        kind="event",
        out=out,
        resource_version="2",  # compacted away: the server answers 410 Gone
    ).start()
    try:
        seen = events_of(out, lambda s: any(what == "LIST" for _, what, _ in s))
        core.create_namespaced_event(namespace, event("e-late", namespace))
        seen += events_of(out, lambda s: any(what == "ADDED" for _, what, _ in s))
    finally:
        follower.stop()

    (listed,) = [items for _, what, items in seen if what == "LIST"]
    assert sorted(i["metadata"]["name"] for i in listed) == ["e-0", "e-1", "e-2"]
    assert follower.lists == 1  # the list came after the 410, not before the first watch
    added = [obj["metadata"]["name"] for _, what, obj in seen if what == "ADDED"]
    assert added == ["e-late"]  # watched from the new list's version: nothing replayed


def test_a_watch_the_server_ends_is_started_again_from_its_version(api: Any, namespace: str):
    core = kubernetes.client.CoreV1Api(api)
    out: queue.Queue[watch.Event] = queue.Queue()
    follower = watch.Follower(
        core.list_namespaced_config_map,
        namespace=namespace,
        selector="test=watch",
        kind="cm",
        out=out,
        watch_seconds=1,
    ).start()
    try:
        events_of(out, lambda s: any(what == "LIST" for _, what, _ in s))
        for i in range(4):
            core.create_namespaced_config_map(namespace, config_map(f"cm-{i}"))
            time.sleep(0.8)
        seen = events_of(out, lambda s: sum(what == "ADDED" for _, what, _ in s) >= 4)
    finally:
        follower.stop()

    added = [obj["metadata"]["name"] for _, what, obj in seen if what == "ADDED"]
    assert added == ["cm-0", "cm-1", "cm-2", "cm-3"]  # each once, in order
    assert follower.watches >= 3 and follower.lists == 1


def test_deleting_the_owner_config_map_removes_the_jobs_and_their_pods(
    executor: KubernetesExecutor, space: Space, tmp_path: Path
):
    script = tmp_path / "job" / "slow_count.py"
    script.parent.mkdir()
    script.write_text(SLOW_COUNT)
    text = tmp_path / "text.txt"
    text.write_text("a b c\n" * 400)
    url = space.upload(text, "in/text.txt")
    thread, outcome = run_in_thread(
        executor, space, script, url, job_id="owned", job_args={"sleep": 0.05},
        max_split_bytes=1 << 10,
    )  # fmt: skip
    wait_until(
        lambda: any(running_pid(p) for p in stage_pods(space, "owned")),
        timeout=120,
        what="a running map pod",
    )
    core = kubernetes.client.CoreV1Api(space.api)
    batch = kubernetes.client.BatchV1Api(space.api)
    selector = names.job_selector("owned")
    assert batch.list_namespaced_job(space.namespace, label_selector=selector).items

    core.delete_namespaced_config_map(
        names.owner_name("owned"), space.namespace, propagation_policy="Background"
    )

    wait_until(
        lambda: (
            not batch.list_namespaced_job(space.namespace, label_selector=selector).items
            and not core.list_namespaced_pod(space.namespace, label_selector=selector).items
        ),
        timeout=120,
        what="the garbage collector to remove the Jobs and pods",
    )
    with pytest.raises(JobFailedError, match="was deleted while it ran"):
        finished(thread, outcome)


def test_the_owner_config_map_goes_when_a_finished_jobs_jobs_expire(space: Space, tmp_path: Path):
    settings = PodSettings(
        namespace=space.namespace, image=IMAGE, memory=512 << 20, ttl_seconds=2,
        env_secrets=(SECRET,),
    )  # fmt: skip
    script = tmp_path / "job" / "slow_count.py"
    script.parent.mkdir()
    script.write_text(SLOW_COUNT)
    text = tmp_path / "text.txt"
    text.write_text("a b c\n" * 50)
    url = space.upload(text, "in/text.txt")
    core = kubernetes.client.CoreV1Api(space.api)
    batch = kubernetes.client.BatchV1Api(space.api)
    selector = names.job_selector("expires")

    with KubernetesExecutor(settings, kubeconfig=space.kubeconfig) as ex:
        thread, outcome = run_in_thread(ex, space, script, url, job_id="expires",
                                        job_args={"sleep": 0.0})  # fmt: skip
        result = finished(thread, outcome)

    assert dict(result.records(space.bucket.storage_options)) == {"a": 50, "b": 50, "c": 50}
    # The TTL controller deletes the Jobs 2 s after they finish; the garbage collector
    # then deletes the ConfigMap, which now depends on them (before, it stayed for ever).
    wait_until(
        lambda: (
            not core.list_namespaced_config_map(space.namespace, label_selector=selector).items
            and not batch.list_namespaced_job(space.namespace, label_selector=selector).items
        ),
        timeout=120,
        what="the Jobs and then the owner ConfigMap to be gone",
    )


HELPER_JOB = """
import os
from mrk8s import MapReduce

import helper


class Where(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield helper.normalise(word), 1
        yield "(helper)", os.path.dirname(helper.__file__)

    def reducer(self, key, values):
        values = list(values)
        yield key, values[0] if key == "(helper)" else sum(values)
"""


def test_the_modules_beside_the_script_are_shipped_with_it(
    executor: KubernetesExecutor, space: Space, tmp_path: Path
):
    job = tmp_path / "job"
    job.mkdir()
    (job / "where.py").write_text(HELPER_JOB)
    (job / "helper.py").write_text("def normalise(word):\n    return word.upper()\n")
    text = tmp_path / "text.txt"
    text.write_text("a b\nb c\n")
    settings = space.run_settings(job / "where.py", [space.upload(text, "in/text.txt")], reducers=1)

    result = dict(Driver(settings).run(executor).records(space.bucket.storage_options))

    where = result.pop("(helper)")
    assert result == {k.upper(): v for k, v in counts(text).items()}
    # The pods imported the shipped copy (unpacked in their scratch volume), not ours.
    assert where != str(job)
    assert "/mrk8s-code/" in where


def test_a_missing_namespace_is_named(space: Space, tmp_path: Path):
    settings = PodSettings(namespace="no-such-namespace", image=IMAGE)
    text = tmp_path / "text.txt"
    text.write_text("a b\n")
    run = RunSettings(
        script="examples/wordcount.py",
        inputs=(space.upload(text, "in/text.txt"),),
        backend="k8s",
        shuffle_dir=f"{space.bucket.url}/shuffle",
        storage_options=space.bucket.storage_options,
    )

    with (
        KubernetesExecutor(settings, kubeconfig=space.kubeconfig) as ex,
        pytest.raises(ClusterError) as caught,
    ):
        Driver(run).run(ex)

    assert "namespace no-such-namespace does not exist: create it" in str(caught.value)
    assert "or pass --namespace NS" in str(caught.value)


def test_pods_that_cannot_be_created_are_explained(space: Space, tmp_path: Path):
    core = kubernetes.client.CoreV1Api(space.api)
    core.delete_namespaced_service_account("mrk8s-worker", space.namespace)
    text = tmp_path / "text.txt"
    text.write_text("a b\n")
    run = RunSettings(
        script="examples/wordcount.py",
        inputs=(space.upload(text, "in/text.txt"),),
        backend="k8s",
        shuffle_dir=f"{space.bucket.url}/shuffle",
        storage_options=space.bucket.storage_options,
        job_id="nosa",
    )
    settings = PodSettings(namespace=space.namespace, image=IMAGE, env_secrets=(SECRET,))

    with (
        KubernetesExecutor(settings, kubeconfig=space.kubeconfig) as ex,
        pytest.raises(ClusterError) as caught,
    ):
        Driver(run).run(ex)

    message = str(caught.value)
    assert f"the pods of Job {space.namespace}/{names.stage_job_name('nosa', 0, 'map')}" in (
        message
    )
    assert 'serviceaccount "mrk8s-worker" not found' in message
    assert "Apply manifests/" in message
    # The Job that could not run is gone.
    jobs = kubernetes.client.BatchV1Api(space.api).list_namespaced_job(
        space.namespace, label_selector=names.job_selector("nosa")
    )
    assert collections.Counter(j.metadata.deletion_timestamp is None for j in jobs.items)[True] == 0
