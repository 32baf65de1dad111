"""Jobs on a simulated three-node Ray cluster (``ray.cluster_utils.Cluster``, one machine).

One cluster for the whole module: a head and two worker nodes, one CPU each,
so one worker actor per node. Each node keeps its map outputs in its own
directory under the module's ``nodes/`` (its "disk"); a reducer reads the
other nodes' map outputs through their reader actors. Every job's output is
compared with an independent computation; the commit records tell where each
task ran.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

import mrk8s  # noqa: E402
from mrk8s.engine.driver import Driver, JobResult  # noqa: E402
from mrk8s.engine.executors import LOCAL_PRELOAD  # noqa: E402
from mrk8s.engine.settings import RunSettings  # noqa: E402
from scheduler import placement  # noqa: E402
from scheduler.backends.ray import RayExecutor  # noqa: E402
from scheduler.backends.ray.actors import node_directory  # noqa: E402
from shuffle import commit  # noqa: E402
from shuffle.store import FsspecStore  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402
from tests.mrk8s.ray_examples import check_join, check_terasort, check_top_words, run  # noqa: E402
from tests.s3 import S3Bucket  # noqa: E402
from tests.util import make_words  # noqa: E402

pytestmark = pytest.mark.timeout(300)

WORD = re.compile(r"[\w']+")

#: Node deaths are noticed within a few seconds, not the default half minute.
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 100 << 20,
            "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECKS,
        },
    )
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=100 << 20)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def node_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nodes")


@pytest.fixture
def executor(cluster: Cluster, node_root: Path) -> Iterator[RayExecutor]:
    with RayExecutor(local_dir=str(node_root), preload=LOCAL_PRELOAD) as ex:
        yield ex


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(make_words(60_000, vocab=2000, seed=11))
    return p


def records_of(tmp_path: Path, result: JobResult, step: int, stage: str, n: int) -> list[Any]:
    store = FsspecStore(str(tmp_path / "shuffle" / result.job_id))
    return commit.read_stage(store, step, stage, n)


def test_the_cluster_has_three_nodes_with_a_worker_each(executor: RayExecutor):
    nodes = executor.nodes()

    assert len(nodes) == 3
    assert set(nodes.values()) == {1}


def test_wordcount_on_three_nodes(executor: RayExecutor, tmp_path: Path, corpus: Path):
    result = run(
        executor, tmp_path, "wordcount.py", [corpus], reducers=3, max_split_bytes=32 << 10,
        keep_shuffle=True,
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    maps = records_of(tmp_path, result, 0, "map", result.summary["stages"]["step0-map"]["tasks"])
    # Map outputs were written on several nodes, each into its own node's directory.
    assert len({m.node for m in maps}) > 1
    for m in maps:
        assert m.data_path.startswith(node_directory(executor.local_dir, m.node) + "/")
    summary = result.summary
    assert (
        summary["shuffle_bytes_local"] + summary["shuffle_bytes_remote"]
        == (summary["shuffle_bytes"])
    )
    assert summary["shuffle_bytes_remote"] > 0  # some segments came from other nodes


def test_wordcount_with_the_shuffle_on_s3(
    executor: RayExecutor, tmp_path: Path, corpus: Path, s3_bucket: S3Bucket
):
    import s3fs

    options = s3_bucket.storage_options
    result = run(
        executor, tmp_path, "wordcount.py", [corpus], reducers=3, max_split_bytes=32 << 10,
        shuffle_dir=f"{s3_bucket.url}/shuffle", storage_options=options, keep_shuffle=True,
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    # Every map output went to the bucket (not to a node's disk), from several nodes.
    job = FsspecStore(f"{s3_bucket.url}/shuffle/{result.job_id}", options)
    n_maps = result.summary["stages"]["step0-map"]["tasks"]
    maps = commit.read_stage(job, 0, "map", n_maps)
    assert len({m.node for m in maps}) > 1
    fs = s3fs.S3FileSystem(**options)
    for m in maps:
        assert not m.data_path.startswith("/")
        assert fs.exists(f"{s3_bucket.url}/shuffle/{result.job_id}/{m.data_path}")
    assert not list(Path(executor.local_dir).glob(f"*/{result.job_id}"))


def test_columnar_wordcount_hash_shuffle(executor: RayExecutor, tmp_path: Path, corpus: Path):
    result = run(
        executor, tmp_path, "wordcount_columnar.py", [corpus], reducers=4,
        max_split_bytes=32 << 10,
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))


def test_top_words_two_steps(executor: RayExecutor, tmp_path: Path, corpus: Path):
    check_top_words(executor, tmp_path, corpus, top=7)


def test_terasort_global_sort(executor: RayExecutor, tmp_path: Path):
    check_terasort(executor, tmp_path, rows=30_000, files=3, seed=9)


def test_reduce_side_join(executor: RayExecutor, tmp_path: Path):
    check_join(executor, tmp_path, reducers=3)


class RecordingDriver(Driver):
    """A driver that remembers the placement it chose for each step."""

    placements: dict[int, dict[int, str]]

    def place_reducers(self, executor: Any, plan: Any, store: Any, step: int) -> dict[int, str]:
        chosen = super().place_reducers(executor, plan, store, step)
        self.placements = {**getattr(self, "placements", {}), step: chosen}
        RecordingDriver.last = self  # type: ignore[attr-defined]
        return chosen


def test_reducers_run_where_placement_chose_and_locality_is_reported_from_the_records(
    executor: RayExecutor, tmp_path: Path, corpus: Path
):
    reducers = 6
    result = run(
        executor, tmp_path, "wordcount.py", [corpus], driver=RecordingDriver, reducers=reducers,
        max_split_bytes=16 << 10, keep_shuffle=True,
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    chosen = RecordingDriver.last.placements[0]  # type: ignore[attr-defined]
    n_maps = result.summary["stages"]["step0-map"]["tasks"]
    maps = records_of(tmp_path, result, 0, "map", n_maps)
    reduces = records_of(tmp_path, result, 0, "reduce", reducers)
    # Each reducer committed from the node the placement chose.
    assert {int(r.index): r.node for r in reduces} == chosen
    # The placement is the one the placement function gives for the map records' bytes
    # and the nodes' capacities (one worker per node: 2 reducers each).
    by_partition: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for m in maps:
        for p, b in m.partition_bytes().items():
            by_partition[p][m.node] = by_partition[p].get(m.node, 0) + b
    capacity = placement.capacity(reducers, executor.nodes())
    assert capacity == {n: 2 for n in executor.nodes()}
    assert placement.assign(dict(by_partition), capacity) == chosen
    # The reported locality, computed here from the commit records alone.
    total = sum(b for nodes in by_partition.values() for b in nodes.values())
    local = sum(by_partition[int(r.index)].get(r.node, 0) for r in reduces)
    best = sum(max(nodes.values()) for nodes in by_partition.values())
    summary = result.summary
    assert summary["shuffle_bytes"] == total
    assert summary["shuffle_bytes_local"] == local
    assert summary["shuffle_bytes_remote"] == total - local
    assert summary["locality"] == round(local / total, 4)
    assert summary["locality_best"] == round(best / total, 4)
    assert 0 < summary["locality"] <= summary["locality_best"] <= 1


def slow_corpus(tmp_path: Path) -> Path:
    p = tmp_path / "slow.txt"
    p.write_text(make_words(6_000, vocab=300, seed=3))
    return p


SLOW_WORDCOUNT = """
import time
from mrk8s import MapReduce

class SlowWordCount(MapReduce):
    def mapper(self, _, line):
        time.sleep(0.01)  # a map stage of several seconds: time to kill a busy worker
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


def test_a_worker_actor_killed_mid_stage_is_replaced_and_the_job_is_exact(
    executor: RayExecutor, tmp_path: Path
):
    corpus = slow_corpus(tmp_path)
    script = tmp_path / "slow_wordcount.py"
    script.write_text(SLOW_WORDCOUNT)
    killed: list[int] = []

    def kill_one_busy_actor() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = executor.busy_workers()
            if busy:
                _, handle, index = busy[0]
                ray.kill(handle, no_restart=True)
                killed.append(index)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_busy_actor)
    killer.start()
    try:
        settings = RunSettings(
            script=str(script), inputs=(str(corpus),), output=str(tmp_path / "out"),
            backend="ray", reducers=3, max_split_bytes=4 << 10,
            shuffle_dir=str(tmp_path / "shuffle"),
        )  # fmt: skip
        result = Driver(settings).run(executor)
    finally:
        killer.join()

    assert killed, "no worker was busy to be killed"
    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    stages = result.summary["stages"]
    assert stages["step0-map"]["failed_attempts"] + stages["step0-reduce"]["failed_attempts"] == 1
    assert len(executor.nodes()) == 3  # the dead actor was replaced on its node


class NodeLosingDriver(Driver):
    """Removes one node from the cluster right after the first map stage."""

    cluster: Cluster
    victim: Any
    lost_node_maps: int = 0

    def run_stage(self, executor: Any, plan: Any, store: Any, step: int, stage: str,
                  *args: Any, **kwargs: Any) -> None:  # fmt: skip
        super().run_stage(executor, plan, store, step, stage, *args, **kwargs)
        if step == 0 and stage == "map" and not self.lost_node_maps:
            maps = commit.read_stage(store, 0, "map", len(plan.steps[0].splits))
            gone = self.victim.node_id
            self.lost_node_maps = sum(1 for m in maps if m.node == gone)
            self.cluster.remove_node(self.victim)
            deadline = time.monotonic() + 60
            while any(n["NodeID"] == gone and n["Alive"] for n in ray.nodes()):
                assert time.monotonic() < deadline, "Ray did not notice the node was gone"
                time.sleep(0.2)


def test_a_node_lost_after_the_map_stage_has_its_map_outputs_recomputed(
    cluster: Cluster, node_root: Path, tmp_path: Path, corpus: Path
):
    victim = cluster.add_node(num_cpus=1, object_store_memory=100 << 20)
    cluster.wait_for_nodes()
    with RayExecutor(local_dir=str(node_root), preload=LOCAL_PRELOAD) as executor:
        assert len(executor.nodes()) == 4
        NodeLosingDriver.cluster = cluster
        NodeLosingDriver.victim = victim
        result = run(
            executor, tmp_path, "wordcount.py", [corpus], driver=NodeLosingDriver, reducers=4,
            max_split_bytes=8 << 10, keep_shuffle=True,
        )  # fmt: skip
        assert len(executor.nodes()) == 3

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    n_maps = result.summary["stages"]["step0-map"]["tasks"]
    lost = result.summary["stages"]["step0-map"]["recomputed_lost"]
    assert lost >= 1
    maps = records_of(tmp_path, result, 0, "map", n_maps)
    reduces = records_of(tmp_path, result, 0, "reduce", 4)
    assert victim.node_id not in {m.node for m in maps} | {r.node for r in reduces}


class ReaderKillingDriver(Driver):
    """Kills one node's reader actor right after the first map stage (the node stays)."""

    victim_node: str = ""

    def run_stage(self, executor: Any, plan: Any, store: Any, step: int, stage: str,
                  *args: Any, **kwargs: Any) -> None:  # fmt: skip
        super().run_stage(executor, plan, store, step, stage, *args, **kwargs)
        if step == 0 and stage == "map" and not self.victim_node:
            maps = commit.read_stage(store, 0, "map", len(plan.steps[0].splits))
            counts = collections.Counter(m.node for m in maps)
            node = counts.most_common(1)[0][0]
            ReaderKillingDriver.victim_node = node
            ray.kill(executor.reader_actors()[node], no_restart=True)


def test_a_reducer_that_cannot_read_a_node_recomputes_the_map_output_itself(
    executor: RayExecutor, tmp_path: Path, corpus: Path
):
    ReaderKillingDriver.victim_node = ""
    # Few, large splits: a reduce attempt recomputes at most MAX_RECOMPUTED_MAPS outputs.
    result = run(
        executor, tmp_path, "wordcount.py", [corpus], driver=ReaderKillingDriver, reducers=3,
        max_split_bytes=128 << 10, keep_shuffle=True,
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    victim = ReaderKillingDriver.victim_node
    reduces = records_of(tmp_path, result, 0, "reduce", 3)
    # A reducer on another node met the dead reader and recomputed what it needed;
    # the reducer on the node itself read its disk and recomputed nothing.
    assert any(r.recomputed >= 1 for r in reduces if r.node != victim)
    assert all(r.recomputed == 0 for r in reduces if r.node == victim)
    assert result.summary["stages"]["step0-reduce"]["recomputed_map_tasks"] >= 1


def test_the_script_and_the_modules_beside_it_are_shipped_without_git_and_venvs(
    executor: RayExecutor, cluster: Cluster, node_root: Path, tmp_path: Path
):
    project = tmp_path / "project"
    project.mkdir()
    (project / "weights.py").write_text("WEIGHT = 3\n")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / ".venv").mkdir()
    (project / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (project / "job.py").write_text(
        "import os\n"
        "from mrk8s import MapReduce\n"
        "import weights\n\n"
        "class Weighted(MapReduce):\n"
        "    def mapper_init(self):\n"
        "        origin = os.path.dirname(os.path.abspath(__file__))\n"
        "        self.increment_counter('cwd', 'is_origin', int(os.getcwd() == origin))\n"
        "        self.increment_counter('cwd', 'has_weights', int(os.path.exists('weights.py')))\n"
        "        self.increment_counter('cwd', 'has_git', int(os.path.exists('.git')))\n"
        "        self.increment_counter('cwd', 'has_venv', int(os.path.exists('.venv')))\n"
        "        self.increment_counter('cwd', 'tasks', 1)\n\n"
        "    def mapper(self, _, line):\n"
        "        for word in line.split():\n"
        "            yield word, weights.WEIGHT\n\n"
        "    def reducer(self, word, counts):\n"
        "        yield word, sum(counts)\n"
    )
    src = tmp_path / "in.txt"
    src.write_text(make_words(3000, vocab=50, seed=2))
    executor.close()  # this test's pool ships the project
    with RayExecutor(
        local_dir=str(node_root), working_dir=str(project), preload=LOCAL_PRELOAD
    ) as shipping:
        settings = RunSettings(
            script=str(project / "job.py"), inputs=(str(src),), output=str(tmp_path / "out"),
            backend="ray", reducers=2, max_split_bytes=4 << 10,
            shuffle_dir=str(tmp_path / "shuffle"),
        )  # fmt: skip
        result = Driver(settings).run(shipping)

    expected = {w: 3 * c for w, c in collections.Counter(src.read_text().split()).items()}
    assert dict(result.records()) == expected
    tasks = result.summary["counters"]["cwd"]["tasks"]
    assert tasks > 1
    # Every map task ran in the shipped copy, which has the module and not .git or .venv.
    assert result.summary["counters"]["cwd"] == {
        "is_origin": 0, "has_weights": tasks, "has_git": 0, "has_venv": 0, "tasks": tasks,
    }  # fmt: skip


def test_mrk8s_run_api_starts_nothing_when_ray_is_connected(
    cluster: Cluster, tmp_path: Path, corpus: Path
):
    # The programmatic entry point with backend="ray" uses the Ray this process is
    # connected to (the cluster) and leaves it connected.
    result = mrk8s.run(
        str(EXAMPLES / "wordcount.py"), [str(corpus)], backend="ray", reducers=3,
        shuffle_dir=str(tmp_path / "shuffle"),
    )  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    assert ray.is_initialized()
