"""End-to-end jobs with ``SORT_KEYS = False``: the unsorted hash shuffle.

Real worker processes and files on the local backend; outputs compared with
``collections.Counter``. A reducer whose partition exceeds its memory share
gets it in several ``reduce_batch`` calls, each holding every row of its keys:
a key split across calls would show up as two output rows for one word.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

import mrk8s
from mrk8s import Step
from mrk8s.errors import JobDefinitionError
from mrk8s.tasks.run import bucket_ranges
from tests.mrk8s.engine.test_driver import read_parts, run, write_script
from tests.util import make_words

pytestmark = pytest.mark.timeout(300)

UNSORTED_WORDCOUNT = """
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s import MapReduce


class UnsortedCount(MapReduce):
    SORT_KEYS = False

    def map_batch(self, table):
        words = pc.list_flatten(pc.utf8_split_whitespace(table["line"]))
        return pa.table({"key": words, "value": pa.array([1] * len(words), pa.int64())})

    def reduce_batch(self, table):
        self.increment_counter("unsorted", "calls")
        self.increment_counter("unsorted", "rows", table.num_rows)
        summed = table.group_by("key").aggregate([("value", "sum")])
        return summed.rename_columns(["key", "value"])
"""


def word_counts(tmp_path: Path) -> dict[object, object]:
    got: dict[object, object] = {}
    for part in read_parts(tmp_path / "out"):
        for word, count in part:
            assert word not in got, f"{word!r} reached two reduce_batch calls"
            got[word] = count
    return got


@pytest.mark.parametrize("memory", ["1GiB", "4MiB"], ids=["one-call", "many-calls"])
def test_an_unsorted_shuffle_counts_every_word_once(tmp_path: Path, memory: str) -> None:
    text = make_words(600_000, vocab=50_000, seed=8)
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(tmp_path, UNSORTED_WORDCOUNT)

    result = run(
        tmp_path, script, [str(src)], reducers=3, memory_per_worker=memory, max_split_bytes=1 << 18
    )

    assert word_counts(tmp_path) == collections.Counter(text.split())
    counters = result.summary["counters"]["unsorted"]
    assert counters["rows"] == len(text.split())
    if memory == "1GiB":
        assert counters["calls"] == 3  # one per partition
    else:
        assert counters["calls"] > 3  # partitions bigger than a quarter of 4 MiB: in pieces


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ("SORT_KEYS = 'no'", "SORT_KEYS is 'no': set it to True or False"),
        ("PARTITIONER = 'range'", "SORT_KEYS = False needs the hash partitioner"),
    ],
)
def test_bad_unsorted_jobs_are_refused_before_any_task_runs(
    tmp_path: Path, attributes: str, message: str
) -> None:
    source = UNSORTED_WORDCOUNT.replace(
        "    SORT_KEYS = False\n", f"    SORT_KEYS = False\n    {attributes}\n"
    )
    script = write_script(tmp_path, source)
    src = tmp_path / "w.txt"
    src.write_text("a b c\n")
    with pytest.raises(JobDefinitionError, match=message):
        run(tmp_path, script, [str(src)])
    assert not (tmp_path / "out").exists()


def test_a_record_reducer_needs_sorted_keys(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class Records(MapReduce):
            SORT_KEYS = False

            def mapper(self, _, line):
                yield line, 1

            def reducer(self, key, values):
                yield key, sum(values)
        """,
    )
    src = tmp_path / "w.txt"
    src.write_text("a\n")
    with pytest.raises(JobDefinitionError, match="step 1 has a record reducer"):
        run(tmp_path, script, [str(src)])


def test_bucket_ranges_fill_each_call_up_to_the_limit_and_never_split_a_bucket() -> None:
    assert bucket_ranges({0: 4, 1: 4, 2: 4, 3: 4}, 8) == [[0, 1], [2, 3]]
    assert bucket_ranges({0: 4, 1: 4, 2: 4, 3: 4}, 100) == [[0, 1, 2, 3]]
    assert bucket_ranges({0: 30, 2: 1, 5: 1}, 8) == [[0], [2, 5]]
    assert bucket_ranges({1: 3, 0: 9}, 8) == [[0], [1]]
    assert bucket_ranges({}, 8) == []


COMBINED_WORDCOUNT = (
    UNSORTED_WORDCOUNT.replace("    SORT_KEYS = False\n", "    SORT_KEYS = SORTED\n")
    + """
    def combine_batch(self, table):
        self.increment_counter("combine", "calls")
        self.increment_counter("combine", "rows_in", table.num_rows)
        summed = table.group_by("key").aggregate([("value", "sum")])
        return pa.table({"key": summed["key"], "value": summed["value_sum"]})
"""
)


@pytest.mark.parametrize("memory", ["1GiB", "4MiB"], ids=["one-spill", "many-spills"])
@pytest.mark.parametrize("sort_keys", [False, True], ids=["unsorted", "sorted"])
def test_combine_batch_sums_each_spill_before_the_shuffle(
    tmp_path: Path, memory: str, sort_keys: bool
) -> None:
    text = make_words(400_000, vocab=30_000, seed=11)
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(tmp_path, COMBINED_WORDCOUNT.replace("SORTED", str(sort_keys)))

    result = run(
        tmp_path, script, [str(src)], reducers=3, memory_per_worker=memory, max_split_bytes=1 << 19
    )

    assert word_counts(tmp_path) == collections.Counter(text.split())
    summary = result.summary
    combined = summary["counters"]["combine"]
    words = len(text.split())
    assert combined["rows_in"] == words  # every mapped row went through combine_batch once
    maps = summary["stages"]["step0-map"]
    assert maps["records_out"] < words // 4  # far fewer rows reached the shuffle
    assert summary["counters"]["unsorted"]["rows"] == maps["records_out"]
    if memory == "1GiB":
        assert combined["calls"] == maps["tasks"]  # once per map task, at its end
    else:
        assert combined["calls"] > maps["tasks"]  # at every spill


def test_combine_batch_must_return_a_table_with_a_key(tmp_path: Path) -> None:
    source = COMBINED_WORDCOUNT.replace("SORTED", "False").replace(
        '        return pa.table({"key": summed["key"], "value": summed["value_sum"]})',
        "        return summed.to_pylist()",
    )
    script = write_script(tmp_path, source)
    src = tmp_path / "w.txt"
    src.write_text("a b c\n")
    with pytest.raises(mrk8s.JobFailedError) as info:
        run(tmp_path, script, [str(src)])
    assert "combine_batch must return a pyarrow.Table with a 'key' column, got list" in str(
        info.value
    )
    assert not (tmp_path / "out").exists()


def test_a_step_takes_one_combiner_and_only_before_a_reduce() -> None:
    def f(*_: object) -> None:
        return None

    with pytest.raises(JobDefinitionError, match="both combiner and combine_batch"):
        Step(map_batch=f, combiner=f, combine_batch=f, reduce_batch=f)
    with pytest.raises(JobDefinitionError, match="has a combine_batch but no reducer"):
        Step(map_batch=f, combine_batch=f)
