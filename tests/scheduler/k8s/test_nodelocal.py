"""``--backend k8s`` in node-local mode on the real test cluster.

Map outputs go to each node's hostPath directory; the shuffle server runs as
a DaemonSet (rendered by tests/cluster/shuffleserver.py with manifests/'
names) and serves them to reducers on other nodes; reducers are placed by
``scheduler.placement`` and run as one Job per node, pinned by node affinity.
The plan, code, commit records and output stay in the loopback S3 bucket.
hostPath volumes need a namespace that does not enforce Pod Security
"restricted" (as manifests/node-local/ says), so the test's namespace is
relabelled privileged. Each output is compared with ``collections.Counter``.
"""

from __future__ import annotations

import collections
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

kubernetes = pytest.importorskip("kubernetes")

from mrk8s.engine.driver import Driver  # noqa: E402
from mrk8s.engine.progress import Progress  # noqa: E402
from mrk8s.engine.settings import RunSettings  # noqa: E402
from mrk8s.tasks.plan import JobPlan  # noqa: E402
from scheduler import placement  # noqa: E402
from scheduler.backends.k8s import indexmap, names, nodeshuffle  # noqa: E402
from scheduler.backends.k8s.executor import KubernetesExecutor  # noqa: E402
from scheduler.backends.k8s.render import PodSettings  # noqa: E402
from scheduler.errors import ClusterError  # noqa: E402
from shuffle import commit  # noqa: E402
from shuffle.store import FsspecStore  # noqa: E402
from tests.cluster import kube  # noqa: E402
from tests.cluster.controlplane import free_port  # noqa: E402
from tests.cluster.shuffleserver import server_daemonset  # noqa: E402
from tests.conftest import EXAMPLES, CLIResult  # noqa: E402
from tests.scheduler.k8s import test_examples  # noqa: E402
from tests.scheduler.k8s.conftest import IMAGE, SECRET, Space, executor_in  # noqa: E402
from tests.util import make_words  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture
def node_local(space: Space) -> Iterator[KubernetesExecutor]:
    """The namespace with the token Secret and a listening shuffle server on every node,
    and an executor in node-local mode."""
    core = kubernetes.client.CoreV1Api(space.api)
    core.patch_namespace(
        space.namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
    )
    core.create_namespaced_secret(
        space.namespace,
        {
            "metadata": {"name": nodeshuffle.TOKEN_SECRET},
            "stringData": {nodeshuffle.TOKEN_KEY: secrets.token_urlsafe(16)},
        },
    )
    kubernetes.client.AppsV1Api(space.api).create_namespaced_daemon_set(
        space.namespace, server_daemonset(free_port())
    )

    def serving() -> bool:
        pods = core.list_namespaced_pod(
            space.namespace, label_selector=nodeshuffle.SERVER_SELECTOR
        ).items
        running = [p for p in pods if p.status.phase == "Running"]
        # (A test before this one may have deleted a node: every node there is.)
        return len(running) == len(kube.ready_nodes(space.api)) and all(
            "listening on" in core.read_namespaced_pod_log(p.metadata.name, space.namespace)
            for p in running
        )

    kube.wait_until(serving, timeout=60, what="a listening shuffle server on every node")
    yield from executor_in(space, node_local=True)


def test_wordcount_node_local_reducers_run_where_placement_put_them(
    node_local: KubernetesExecutor, space: Space, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_words(40_000, vocab=1500, seed=3))
    url = space.upload(corpus, "in/corpus.txt")
    settings = space.run_settings(
        EXAMPLES / "wordcount.py",
        [url],
        reducers=4,
        max_split_bytes=48 << 10,
        job_id="wc-local",
        keep_shuffle=True,
    )

    result = Driver(settings).run(node_local)

    assert dict(result.records(space.bucket.storage_options)) == dict(
        collections.Counter(corpus.read_text().split())
    )
    # Every map output is on the disk of the node its commit record names.
    store = FsspecStore(f"{space.bucket.url}/shuffle/wc-local", space.bucket.storage_options)
    plan = JobPlan.loads(store.read_bytes("plan.json").decode())
    maps = commit.read_stage(store, 0, "map", len(plan.steps[0].splits))
    assert len(maps) > 3
    for m in maps:
        assert m.data_path.startswith("/")
        assert f"/nodes/{m.node}/hostpath/var/lib/mrk8s/shuffle/wc-local/s0/" in m.data_path
    # Each reducer ran on the node an independent placement over the commit records
    # chooses (every node with a server, equal pods allocatable): its pod's spec.nodeName.
    by_partition: dict[int, dict[str, int]] = {}
    for m in maps:
        for p, refs in m.partition_index.items():
            by_partition.setdefault(int(p), {}).setdefault(m.node, 0)
            by_partition[int(p)][m.node] += sum(r.length for r in refs)
    nodes = node_local.nodes()
    assert sorted(nodes) == kube.ready_nodes(space.api)
    chosen = placement.assign(by_partition, placement.capacity(4, nodes))
    core = kubernetes.client.CoreV1Api(space.api)
    pods = core.list_namespaced_pod(
        space.namespace, label_selector=f"{names.JOB_ID_LABEL}=wc-local,{names.STAGE_LABEL}=reduce"
    ).items
    ran = {}
    for pod in pods:
        job_name = pod.metadata.labels["job-name"]
        job = kubernetes.client.BatchV1Api(space.api).read_namespaced_job(job_name, space.namespace)
        tasks = job.metadata.annotations[indexmap.ANNOTATION]
        index = indexmap.decode(tasks)[int(pod.metadata.labels[names.INDEX_LABEL])]
        ran[index] = pod.spec.node_name
    assert ran == chosen
    reduces = commit.read_stage(store, 0, "reduce", 4)
    assert {int(r.index): r.node for r in reduces} == chosen
    # One Job per node group of the reduce stage.
    jobs = (
        kubernetes.client.BatchV1Api(space.api)
        .list_namespaced_job(
            space.namespace,
            label_selector=f"{names.JOB_ID_LABEL}=wc-local,{names.STAGE_LABEL}=reduce",
        )
        .items
    )
    assert sorted(j.metadata.name for j in jobs) == sorted(
        names.stage_job_name("wc-local", 0, "reduce", node) for node in set(chosen.values())
    )
    # The summary's locality is the one the commit records give.
    summary = result.summary
    assert summary["locality"] == round(placement.locality(chosen, by_partition), 4)
    best = sum(max(n.values()) for n in by_partition.values())
    total = sum(sum(n.values()) for n in by_partition.values())
    assert summary["locality_best"] == round(best / total, 4)
    assert summary["shuffle_bytes_local"] + summary["shuffle_bytes_remote"] == total


class CordonedDuringTheMapStage(Progress):
    """Keeps every node but ``keep`` cordoned (``spec.unschedulable``, as ``kubectl cordon``
    does) until the map stage has finished, so the scheduler can put every map pod only
    on ``keep``; then makes them schedulable again, before the reducers are placed."""

    def __init__(self, api: object, keep: str, cordoned: list[str]) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.keep = keep
        self.cordoned = cordoned

    def set(self, unschedulable: bool) -> None:
        for node in self.cordoned:
            self.core.patch_node(node, {"spec": {"unschedulable": unschedulable}})

    def stage_finished(self, name: str) -> None:
        if name.endswith(" map"):
            self.set(False)


def test_uneven_map_output_reducers_run_where_placement_put_them(
    node_local: KubernetesExecutor, space: Space, tmp_path: Path
) -> None:
    """Every map output on one node (the others cordoned during the map stage): that node
    takes only its share of the reducers, the rest run on nodes holding none of the data
    and read it all from its shuffle server."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_words(40_000, vocab=1500, seed=21))
    url = space.upload(corpus, "in/corpus.txt")
    nodes = kube.ready_nodes(space.api)
    assert len(nodes) >= 2
    keep, others = nodes[0], nodes[1:]
    cordon = CordonedDuringTheMapStage(space.api, keep, others)
    reducers = 6
    settings = space.run_settings(
        EXAMPLES / "wordcount.py",
        [url],
        reducers=reducers,
        max_split_bytes=64 << 10,
        job_id="wc-uneven",
        keep_shuffle=True,
    )
    cordon.set(True)
    try:
        result = Driver(settings, progress=cordon).run(node_local)
    finally:
        cordon.set(False)

    assert dict(result.records(space.bucket.storage_options)) == dict(
        collections.Counter(corpus.read_text().split())
    )
    store = FsspecStore(f"{space.bucket.url}/shuffle/wc-uneven", space.bucket.storage_options)
    plan = JobPlan.loads(store.read_bytes("plan.json").decode())
    maps = commit.read_stage(store, 0, "map", len(plan.steps[0].splits))
    # The skew happened: every map task ran on `keep`, its output on that node's disk.
    assert len(maps) >= 3
    assert {m.node for m in maps} == {keep}
    for m in maps:
        assert f"/nodes/{keep}/hostpath/var/lib/mrk8s/shuffle/wc-uneven/s0/" in m.data_path
    by_partition: dict[int, dict[str, int]] = {}
    for m in maps:
        for p, refs in m.partition_index.items():
            by_partition.setdefault(int(p), {}).setdefault(m.node, 0)
            by_partition[int(p)][m.node] += sum(r.length for r in refs)
    node_bytes = collections.Counter()
    for held in by_partition.values():
        node_bytes.update(held)
    total = sum(node_bytes.values())
    assert sorted(by_partition) == list(range(reducers))
    assert node_bytes[keep] == total > 0 and all(node_bytes[n] == 0 for n in others)

    # Where the reducers should run, by hand: `keep` takes its share (equal `pods`
    # allocatable: ceil(R / nodes)), the partitions with the most bytes first; the rest
    # go to the other nodes, as many on each. And by scheduler.placement, from the records.
    share = -(-reducers // len(nodes))
    biggest = sorted(by_partition, key=lambda p: (-sum(by_partition[p].values()), p))[:share]
    chosen = placement.assign(by_partition, placement.capacity(reducers, node_local.nodes()))
    assert sorted(p for p, n in chosen.items() if n == keep) == sorted(biggest)
    elsewhere = collections.Counter(n for n in chosen.values() if n != keep)
    assert sorted(elsewhere) == sorted(others) and max(elsewhere.values()) <= share

    # Each reducer's pod ran on the node chosen for it (spec.nodeName), in one Job per node.
    core = kubernetes.client.CoreV1Api(space.api)
    batch = kubernetes.client.BatchV1Api(space.api)
    selector = f"{names.JOB_ID_LABEL}=wc-uneven,{names.STAGE_LABEL}=reduce"
    ran = {}
    for pod in core.list_namespaced_pod(space.namespace, label_selector=selector).items:
        job = batch.read_namespaced_job(pod.metadata.labels["job-name"], space.namespace)
        tasks = indexmap.decode(job.metadata.annotations[indexmap.ANNOTATION])
        ran[tasks[int(pod.metadata.labels[names.INDEX_LABEL])]] = pod.spec.node_name
    assert ran == chosen
    reduces = commit.read_stage(store, 0, "reduce", reducers)
    assert {int(r.index): r.node for r in reduces} == chosen

    # The reported locality is the commit records' one: the bytes of the partitions
    # reduced on `keep`, over all; every partition's bytes are on one node (best 1.0).
    local = sum(by_partition[p][keep] for p in biggest)
    summary = result.summary
    assert summary["locality"] == round(local / total, 4) < 1.0
    assert summary["locality_best"] == 1.0
    assert summary["shuffle_bytes_local"] == local
    assert summary["shuffle_bytes_remote"] == total - local


def test_no_shuffle_server_is_one_clear_error(space: Space) -> None:
    settings = PodSettings(
        namespace=space.namespace, image=IMAGE, env_secrets=(SECRET,), node_local=True
    )
    with KubernetesExecutor(settings, kubeconfig=space.kubeconfig) as executor:
        run = RunSettings(
            script=str(EXAMPLES / "wordcount.py"),
            inputs=(space.upload(Path(EXAMPLES / "data" / "sample.txt"), "in/sample.txt"),),
            output=f"{space.bucket.url}/out",
            backend="k8s",
            shuffle_dir=f"{space.bucket.url}/shuffle",
            storage_options=space.bucket.storage_options,
        )
        with pytest.raises(
            ClusterError, match=r"no shuffle server runs in namespace .*manifests/node-local/"
        ):
            Driver(run).run(executor)
    jobs = kubernetes.client.BatchV1Api(space.api).list_namespaced_job(space.namespace).items
    assert jobs == []  # nothing was started


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(make_words(30_000, vocab=1500, seed=11))
    return p


@pytest.mark.parametrize("mode", ["object-store", "node-local"])
def test_bench_shuffle_on_k8s_is_verified(
    node_local: KubernetesExecutor, space: Space, cli: Callable[..., CLIResult], mode: str
) -> None:
    """``mrk8s bench shuffle --backend k8s`` in both shuffle modes: every partition checked
    by the bench itself, one pod per task, reducers in one Job or one per node group."""
    extra = ["--node-local-shuffle"] if mode == "node-local" else []
    out = cli(
        "bench", "shuffle", "--size", "2MiB", "--maps", "2", "--reducers", "3",
        "--repeat", "1", "--no-warmup", "-q", *space.cli_args(), *extra,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    [line] = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert line["verified"] is True and line["problems"] == []
    assert line["backend"] == "k8s" and line["rows"] == (2 << 20) // 98
    assert (line["map_tasks"], line["reduce_tasks"]) == (2, 3)
    core = kubernetes.client.CoreV1Api(space.api)
    pods = core.list_namespaced_pod(
        space.namespace, label_selector=names.job_selector(line["job_id"])
    ).items
    stages = collections.Counter(p.metadata.labels[names.STAGE_LABEL] for p in pods)
    assert stages == {"map": 2, "reduce": 3}
    assert all(p.status.phase == "Succeeded" for p in pods)
    jobs = {
        p.metadata.labels["job-name"]
        for p in pods
        if p.metadata.labels[names.STAGE_LABEL] == "reduce"
    }
    if mode == "node-local":
        # One reduce Job per node the placement chose, each pod on its Job's node.
        assert jobs == {
            names.stage_job_name(line["job_id"], 0, "reduce", names.label_value(p.spec.node_name))
            for p in pods
            if p.metadata.labels[names.STAGE_LABEL] == "reduce"
        }
    else:
        assert jobs == {names.stage_job_name(line["job_id"], 0, "reduce")}


# The object-store mode's example tests, each run again in node-local mode.


def test_top_words_node_local(node_local: KubernetesExecutor, space: Space, corpus: Path):
    test_examples.test_top_words_two_steps(node_local, space, corpus)


def test_terasort_node_local(node_local: KubernetesExecutor, space: Space, tmp_path: Path):
    test_examples.test_terasort_global_sort(node_local, space, tmp_path)


def test_join_node_local(node_local: KubernetesExecutor, space: Space, tmp_path: Path):
    test_examples.test_reduce_side_join(node_local, space, tmp_path)


class DeleteANodeAfterTheMapStage(Progress):
    """Deletes the node holding the most map outputs once the map stage has finished."""

    def __init__(self, space: Space, store: FsspecStore) -> None:
        self.space = space
        self.store = store
        self.deleted: str | None = None
        self.lost: list[int] = []

    def stage_finished(self, name: str) -> None:
        if self.deleted is not None or not name.endswith(" map"):
            return
        plan = JobPlan.loads(self.store.read_bytes("plan.json").decode())
        maps = commit.read_stage(self.store, 0, "map", len(plan.steps[0].splits))
        held = collections.Counter(m.node for m in maps)
        self.deleted = held.most_common(1)[0][0]
        self.lost = sorted(int(m.index) for m in maps if m.node == self.deleted)
        kubernetes.client.CoreV1Api(self.space.api).delete_node(self.deleted)


# Last in the file: the deleted node stays deleted for the rest of the session.
def test_a_node_deleted_after_the_map_stage_has_its_map_outputs_recomputed(
    node_local: KubernetesExecutor, space: Space, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_words(30_000, vocab=1200, seed=8))
    url = space.upload(corpus, "in/corpus.txt")
    store = FsspecStore(f"{space.bucket.url}/shuffle/lost", space.bucket.storage_options)
    progress = DeleteANodeAfterTheMapStage(space, store)
    settings = space.run_settings(
        EXAMPLES / "wordcount.py",
        [url],
        reducers=3,
        max_split_bytes=32 << 10,
        job_id="lost",
        keep_shuffle=True,
    )

    result = Driver(settings, progress=progress).run(node_local)

    assert dict(result.records(space.bucket.storage_options)) == dict(
        collections.Counter(corpus.read_text().split())
    )
    assert progress.deleted is not None and progress.lost
    assert result.summary["stages"]["step0-map"]["recomputed_lost"] == len(progress.lost)
    plan = JobPlan.loads(store.read_bytes("plan.json").decode())
    maps = commit.read_stage(store, 0, "map", len(plan.steps[0].splits))
    assert progress.deleted not in {m.node for m in maps}
    for m in maps:  # the recomputed ones too: on the disk of the node they now name
        assert f"/nodes/{m.node}/hostpath/var/lib/mrk8s/shuffle/lost/s0/" in m.data_path
    reduces = commit.read_stage(store, 0, "reduce", 3)
    assert progress.deleted not in {r.node for r in reduces}
