"""The examples on a local single-node Ray, the one ``--backend ray`` starts by itself.

The same jobs as ``test_ray_cluster.py`` runs on three simulated nodes: the
word count, the two-step top words, TeraSort (range partitioner) and the
reduce-side join, each compared with an independent computation. Here every
map output is on the one node, so every reducer reads from its own disk.
"""

from __future__ import annotations

import collections
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from mrk8s.engine.driver import Driver, JobResult  # noqa: E402
from mrk8s.engine.executors import LOCAL_PRELOAD  # noqa: E402
from mrk8s.engine.settings import RunSettings  # noqa: E402
from scheduler.backends.ray import RayExecutor  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402
from tests.util import join_inputs, make_words  # noqa: E402

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


def run(executor: RayExecutor, tmp_path: Path, example: str, inputs: list[Path],
        **options: Any) -> JobResult:  # fmt: skip
    settings = RunSettings(
        script=str(EXAMPLES / example),
        inputs=tuple(str(p) for p in inputs),
        output=str(tmp_path / "out"),
        backend="ray",
        shuffle_dir=str(tmp_path / "shuffle"),
        **options,
    )
    return Driver(settings).run(executor)


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
    result = run(executor, tmp_path, "top_words.py", [corpus], job_args={"top": 5},
                 max_split_bytes=32 << 10)  # fmt: skip

    counts = collections.Counter(WORD.findall(corpus.read_text().lower()))
    assert result.records() == sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:5]
    assert result.summary["steps"] == 2


def test_terasort_global_sort(executor: RayExecutor, tmp_path: Path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import terasort_data
    finally:
        sys.path.remove(str(EXAMPLES))
    src = tmp_path / "tera-in"
    terasort_data.generate(20_000, str(src), files=2, seed=4)

    run(executor, tmp_path, "terasort.py", [src], reducers=3, output_format="parquet",
        max_split_bytes=1 << 20)  # fmt: skip

    keys_in = sorted(pq.read_table(sorted(src.glob("*.parquet")))["key"].to_pylist())
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(parts) == 3
    assert [k for p in parts for k in pq.read_table(p)["key"].to_pylist()] == keys_in


def test_reduce_side_join(executor: RayExecutor, tmp_path: Path):
    inputs = join_inputs(tmp_path)

    result = run(executor, tmp_path, "join.py", [inputs.users_csv, inputs.orders_csv],
                 reducers=2)  # fmt: skip

    assert dict(result.records()) == inputs.expected
    assert result.summary["counters"] == {"join": {"orders_without_user": inputs.dropped}}
