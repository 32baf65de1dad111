"""Every example in examples/ runs and gives the answer an independent computation gives."""

from __future__ import annotations

import collections
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import mrk8s
from tests.conftest import EXAMPLES
from tests.util import join_inputs, make_words

pytestmark = pytest.mark.timeout(300)

WORD = re.compile(r"[\w']+")


def run(
    tmp_path: Path, example: str, inputs: list[Path], **options: object
) -> mrk8s.engine.driver.JobResult:
    options.setdefault("shuffle_dir", str(tmp_path / "shuffle"))
    options.setdefault("workers", 2)
    return mrk8s.run(
        str(EXAMPLES / example), [str(p) for p in inputs], output=str(tmp_path / "out"), **options
    )


@pytest.fixture
def terasort_data() -> Any:
    """examples/terasort_data.py, imported as the example's users run it."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import terasort_data as module
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(make_words(60_000, vocab=2000, seed=11).replace("w1 ", "W1, "))
    return p


def test_wordcount_on_the_bundled_sample(tmp_path: Path) -> None:
    sample = EXAMPLES / "data" / "sample.txt"
    result = run(tmp_path, "wordcount.py", [sample])
    expected = collections.Counter(sample.read_text().split())
    assert dict(result.records()) == dict(expected)


def test_wordcount_several_maps_and_reducers(tmp_path: Path, corpus: Path) -> None:
    result = run(tmp_path, "wordcount.py", [corpus], reducers=3, max_split_bytes=32 << 10)
    expected = collections.Counter(corpus.read_text().split())
    assert dict(result.records()) == dict(expected)
    assert result.summary["stages"]["step0-map"]["tasks"] > 2


def test_columnar_wordcount(tmp_path: Path, corpus: Path) -> None:
    result = run(tmp_path, "wordcount_columnar.py", [corpus], reducers=3, max_split_bytes=32 << 10)
    expected = collections.Counter(corpus.read_text().split())
    got = result.records()
    assert dict(got) == dict(expected)
    assert len(got) == len(expected)


@pytest.mark.parametrize("script", ["wordcount.py", "wordcount_columnar.py"])
def test_wordcount_whitespace_edges(tmp_path: Path, script: str) -> None:
    # Leading, trailing and repeated spaces and tabs, blank and whitespace-only
    # lines, a non-ASCII space, a last line without a newline: words are what
    # str.split() says they are, and no empty word is ever counted.
    lines = ["a b ", "\tc\td\t", "  x  y", "", "   ", "\t", "e", "f\u2003g ", "a  a\t"] * 50
    src = tmp_path / "edges.txt"
    src.write_text("\n".join(lines) + "\nlast word  ")
    result = run(tmp_path, script, [src], reducers=2, max_split_bytes=256)
    expected = collections.Counter(src.read_text().split())
    assert "" not in dict(result.records())
    assert dict(result.records()) == dict(expected)


def test_inverted_index(tmp_path: Path) -> None:
    rng = random.Random(4)
    vocab = [f"t{i}" for i in range(300)]
    docs = {f"doc{i:03d}": " ".join(rng.choices(vocab, k=40)) for i in range(200)}
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"doc": d, "text": t}) + "\n" for d, t in docs.items()))
    result = run(tmp_path, "inverted_index.py", [src], reducers=2, max_split_bytes=8 << 10)
    expected: dict[str, set[str]] = collections.defaultdict(set)
    for d, text in docs.items():
        for w in text.split():
            expected[w].add(d)
    assert dict(result.records()) == {w: sorted(ds) for w, ds in expected.items()}


def test_reduce_side_join(tmp_path: Path) -> None:
    inputs = join_inputs(tmp_path)
    result = run(tmp_path, "join.py", [inputs.users_csv, inputs.orders_csv], reducers=3)
    assert dict(result.records()) == inputs.expected
    assert inputs.dropped > 0
    assert result.summary["counters"] == {"join": {"orders_without_user": inputs.dropped}}


def test_top_words_two_steps(tmp_path: Path, corpus: Path) -> None:
    result = run(tmp_path, "top_words.py", [corpus], job_args={"top": 7}, max_split_bytes=32 << 10)
    counts = collections.Counter(WORD.findall(corpus.read_text().lower()))
    expected = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:7]
    assert result.records() == expected
    assert result.summary["steps"] == 2
    assert result.summary["reducers"][1] == 1


def test_top_words_from_the_command_line(tmp_path: Path) -> None:
    sample = EXAMPLES / "data" / "sample.txt"
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "top_words.py"),
            str(sample),
            "--top",
            "3",
            "-q",
            "--shuffle-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    counts = collections.Counter(WORD.findall(sample.read_text().lower()))
    expected = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:3]
    assert [
        tuple(json.loads(x) for x in line.split("\t")) for line in proc.stdout.splitlines()
    ] == expected


def test_terasort_range_partitioned_global_sort(tmp_path: Path, terasort_data: Any) -> None:
    src = tmp_path / "tera-in"
    terasort_data.generate(60_000, str(src), files=3, seed=9)
    run(
        tmp_path, "terasort.py", [src], reducers=4, output_format="parquet", max_split_bytes=1 << 20
    )
    out = tmp_path / "out"
    verdict = terasort_data.validate(str(src), str(out))
    assert verdict["ok"], verdict
    assert verdict["parts"] == 4
    # Independently of the validator: the parts concatenated are exactly sorted(input).
    keys_in = sorted(pq.read_table(sorted(src.glob("*.parquet")))["key"].to_pylist())
    parts = sorted(out.glob("part-*.parquet"))
    keys_out = [k for p in parts for k in pq.read_table(p)["key"].to_pylist()]
    assert keys_out == keys_in
    sizes = [pq.read_metadata(p).num_rows for p in parts]
    assert min(sizes) > 60_000 / 4 / 2, f"range partitions badly unbalanced: {sizes}"


def test_terasort_validator_catches_unsorted_output(tmp_path: Path, terasort_data: Any) -> None:
    src = tmp_path / "in"
    terasort_data.generate(1000, str(src), files=1, seed=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    # The input itself is unsorted: as "output" it must fail validation.
    (src / "part-00000.parquet").replace(bad / "part-00000.parquet")
    terasort_data.generate(1000, str(src), files=1, seed=1)
    verdict = terasort_data.validate(str(src), str(bad))
    assert not verdict["ok"]
    assert verdict["out_of_order_pairs"] > 0
    assert verdict["checksum_match"]
