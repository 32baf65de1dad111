"""The examples on a local single-node Ray, the one ``--backend ray`` starts by itself.

The same jobs as ``test_ray_cluster.py`` runs on three simulated nodes: the
word count, the two-step top words, TeraSort (range partitioner) and the
reduce-side join, each compared with an independent computation. Here every
map output is on the one node, so every reducer reads from its own disk.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mrk8s.engine.executors import LOCAL_PRELOAD  # noqa: E402
from scheduler.backends.ray import RayExecutor  # noqa: E402
from tests.mrk8s.ray_examples import check_join, check_terasort, check_top_words, run  # noqa: E402
from tests.util import make_words  # noqa: E402

pytestmark = pytest.mark.timeout(300)

WORD = re.compile(r"[\w']+")


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayExecutor]:
    if ray.is_initialized():
        pytest.fail("another test left Ray connected: this module starts its own")
    node_dir = tmp_path_factory.mktemp("node")
    with RayExecutor(local_dir=str(node_dir), num_workers=2, preload=LOCAL_PRELOAD) as ex:
        yield ex
    assert not ray.is_initialized()  # the Ray it started is stopped with it


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(make_words(30_000, vocab=1500, seed=21))
    return p


def test_the_ray_is_one_node_with_two_workers(executor: RayExecutor):
    assert list(executor.nodes().values()) == [2]


def test_wordcount(executor: RayExecutor, tmp_path: Path, corpus: Path):
    result = run(executor, tmp_path, "wordcount.py", [corpus], reducers=3,
                 max_split_bytes=32 << 10)  # fmt: skip

    assert dict(result.records()) == dict(collections.Counter(corpus.read_text().split()))
    assert result.summary["shuffle_bytes_remote"] == 0
    assert result.summary["shuffle_bytes_local"] == result.summary["shuffle_bytes"] > 0


def test_top_words_two_steps(executor: RayExecutor, tmp_path: Path, corpus: Path):
    check_top_words(executor, tmp_path, corpus, top=5)


def test_terasort_global_sort(executor: RayExecutor, tmp_path: Path):
    check_terasort(executor, tmp_path, rows=20_000, files=2, seed=4)


def test_reduce_side_join(executor: RayExecutor, tmp_path: Path):
    check_join(executor, tmp_path, reducers=2)
