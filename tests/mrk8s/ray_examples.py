"""The example jobs the Ray tests run, each checked against an independent computation.

Shared by ``test_ray_one_node.py`` (the single-node Ray ``--backend ray``
starts) and ``test_ray_cluster.py`` (three simulated nodes), which the Ray
backend's issue asks for both.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mrk8s.engine.driver import Driver, JobResult
from mrk8s.engine.settings import RunSettings
from tests.conftest import EXAMPLES
from tests.util import join_inputs

WORD = re.compile(r"[\w']+")


def run(
    executor: Any,
    tmp_path: Path,
    example: str,
    inputs: list[Path],
    driver: type[Driver] = Driver,
    **options: Any,
) -> JobResult:
    """Run ``examples/EXAMPLE`` on ``executor`` (shuffle under ``tmp_path`` unless given)."""
    options.setdefault("shuffle_dir", str(tmp_path / "shuffle"))
    settings = RunSettings(
        script=str(EXAMPLES / example),
        inputs=tuple(str(p) for p in inputs),
        output=str(tmp_path / "out"),
        backend="ray",
        **options,
    )
    return driver(settings).run(executor)


def check_top_words(executor: Any, tmp_path: Path, corpus: Path, top: int) -> None:
    result = run(executor, tmp_path, "top_words.py", [corpus], job_args={"top": top},
                 max_split_bytes=32 << 10)  # fmt: skip

    counts = collections.Counter(WORD.findall(corpus.read_text().lower()))
    assert result.records() == sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:top]
    assert result.summary["steps"] == 2


def check_terasort(executor: Any, tmp_path: Path, rows: int, files: int, seed: int) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import terasort_data
    finally:
        sys.path.remove(str(EXAMPLES))
    src = tmp_path / "tera-in"
    terasort_data.generate(rows, str(src), files=files, seed=seed)

    run(executor, tmp_path, "terasort.py", [src], reducers=3, output_format="parquet",
        max_split_bytes=1 << 20)  # fmt: skip

    keys_in = sorted(pq.read_table(sorted(src.glob("*.parquet")))["key"].to_pylist())
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(parts) == 3
    assert [k for p in parts for k in pq.read_table(p)["key"].to_pylist()] == keys_in


def check_join(executor: Any, tmp_path: Path, reducers: int) -> None:
    inputs = join_inputs(tmp_path)

    result = run(executor, tmp_path, "join.py", [inputs.users_csv, inputs.orders_csv],
                 reducers=reducers)  # fmt: skip

    assert dict(result.records()) == inputs.expected
    assert result.summary["counters"] == {"join": {"orders_without_user": inputs.dropped}}
