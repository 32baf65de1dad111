"""End-to-end jobs with ``REDUCE_BATCH_PIECES = True``: a sorted partition reaches
``reduce_batch`` in pieces of whole keys, in key order.

Real worker processes and files on the local backend; outputs compared with
``collections.Counter`` and ``sorted()``. The job's ``reduce_batch`` writes,
for every key, the number of the call (within its reduce task) that got it,
how many keys and bytes that call got, and whether the call's keys were in
``sorted()`` order; a part file's keys must then come out strictly increasing
(a key split across two calls would come out twice), the calls in order.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

import pytest

from mrk8s.errors import JobDefinitionError
from tests.mrk8s.engine.test_driver import read_parts, run, write_script
from tests.util import make_words

pytestmark = pytest.mark.timeout(300)

PIECES_WORDCOUNT = """
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s import MapReduce


class PiecesCount(MapReduce):
    REDUCE_BATCH_PIECES = True

    def map_batch(self, table):
        words = pc.list_flatten(pc.utf8_split_whitespace(table["line"]))
        return pa.table({"key": words, "value": pa.array([1] * len(words), pa.int64())})

    def reduce_batch(self, table):
        self.calls = getattr(self, "calls", 0) + 1
        keys = table["key"].to_pylist()
        self.increment_counter("pieces", "calls")
        self.increment_counter("pieces", "rows", table.num_rows)
        if keys != sorted(keys):
            self.increment_counter("pieces", "unsorted_calls")
        summed = table.group_by("key").aggregate([("value", "sum")]).sort_by("key")
        n = summed.num_rows
        return pa.table({
            "key": summed["key"],
            "count": summed["value_sum"],
            "call": pa.array([self.calls] * n, pa.int64()),
            "keys": pa.array([n] * n, pa.int64()),
            "bytes": pa.array([table.nbytes] * n, pa.int64()),
        })
"""

#: The piece bound at --memory-per-worker 4MiB: a quarter of it (less than 32 MiB).
LIMIT_4MIB = 1 << 20


def calls_of(tmp_path: Path) -> list[list[tuple[str, dict[str, Any]]]]:
    """Each part file's rows, ``(key, {"count", "call", "keys", "bytes"})``."""
    return [
        [(str(k), v) for k, v in part]  # type: ignore[misc]
        for part in read_parts(tmp_path / "out")
    ]


def check_pieces(parts: list[list[tuple[str, dict[str, Any]]]]) -> dict[str, int]:
    """Assert every part holds its calls in key order, no key in two calls; the counts."""
    counts: dict[str, int] = {}
    for part in parts:
        keys = [k for k, _ in part]
        assert keys == sorted(set(keys)), "a part's keys are not strictly increasing"
        calls = [v["call"] for _, v in part]
        # Calls numbered 1, 2, ... in the order they were made, each with output.
        assert calls == sorted(calls)
        assert sorted(set(calls)) == list(range(1, len(set(calls)) + 1))
        per_call = collections.Counter(calls)
        for _, v in part:
            assert v["keys"] == per_call[v["call"]]  # every key a call got came out of it
        for key, v in part:
            assert key not in counts
            counts[key] = v["count"]
    return counts


@pytest.mark.parametrize("memory", ["4MiB", "1GiB"], ids=["many-pieces", "one-piece"])
def test_a_sorted_partition_reaches_reduce_batch_in_pieces_of_whole_keys(
    tmp_path: Path, memory: str
) -> None:
    text = make_words(400_000, vocab=40_000, seed=26)
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(tmp_path, PIECES_WORDCOUNT)

    result = run(
        tmp_path, script, [str(src)], reducers=2, memory_per_worker=memory, max_split_bytes=1 << 18
    )

    parts = calls_of(tmp_path)
    assert check_pieces(parts) == collections.Counter(text.split())
    counters = result.summary["counters"]["pieces"]
    assert "unsorted_calls" not in counters  # every call's keys in sorted() order
    assert counters["rows"] == len(text.split())
    calls_per_part = [max(v["call"] for _, v in part) for part in parts]
    assert counters["calls"] == sum(calls_per_part)
    if memory == "1GiB":
        assert calls_per_part == [1, 1]  # 32 MiB pieces: each partition fits in one
    else:
        assert min(calls_per_part) >= 3  # ~2 MB partitions in pieces of at most 1 MiB
        sizes = [v["bytes"] for part in parts for _, v in part if v["keys"] > 1]
        # Bytes are estimated per merged table (spread evenly over its rows): about the bound.
        assert max(sizes) <= LIMIT_4MIB * 1.01
        assert max(sizes) > LIMIT_4MIB // 2  # pieces filled, not cut at every merge pass


#: Sorts among make_words' keys (after "w2599", before "w26"): pieces come before and after it.
HOT = "w25hot"


def test_a_key_larger_than_a_piece_is_one_call_of_its_own(tmp_path: Path) -> None:
    rng = random.Random(5)
    hot = 150_000  # about 2.2 MB of Arrow rows: twice the 1 MiB piece bound
    words = make_words(100_000, vocab=5_000, seed=3).split() + [HOT] * hot
    rng.shuffle(words)
    text = "\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10)) + "\n"
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(tmp_path, PIECES_WORDCOUNT)

    run(tmp_path, script, [str(src)], reducers=1, memory_per_worker="4MiB", max_split_bytes=1 << 18)

    (part,) = calls_of(tmp_path)
    assert check_pieces([part]) == collections.Counter(words)
    (info,) = [v for k, v in part if k == HOT]
    assert info["count"] == hot  # one output row: every row of the key in one call
    assert info["keys"] == 1  # alone in its call
    assert info["bytes"] > LIMIT_4MIB
    others = {v["call"] for k, v in part if k != HOT}
    assert info["call"] not in others
    assert {info["call"] - 1, info["call"] + 1} <= others  # calls before and after it


def test_without_the_attribute_reduce_batch_gets_each_partition_whole(tmp_path: Path) -> None:
    text = make_words(200_000, vocab=20_000, seed=4)
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(
        tmp_path, PIECES_WORDCOUNT.replace("    REDUCE_BATCH_PIECES = True\n", "")
    )

    result = run(
        tmp_path, script, [str(src)], reducers=3, memory_per_worker="4MiB", max_split_bytes=1 << 18
    )

    parts = calls_of(tmp_path)
    assert check_pieces(parts) == collections.Counter(text.split())
    assert result.summary["counters"]["pieces"]["calls"] == 3  # one per partition
    assert all(v["call"] == 1 for part in parts for _, v in part)
    # Larger than a piece would be: the whole partition, as before.
    assert max(v["bytes"] for part in parts for _, v in part) > LIMIT_4MIB


def test_with_an_unsorted_shuffle_it_changes_nothing(tmp_path: Path) -> None:
    text = make_words(200_000, vocab=20_000, seed=6)
    src = tmp_path / "words.txt"
    src.write_text(text)
    opt_in = "    REDUCE_BATCH_PIECES = True\n"
    source = PIECES_WORDCOUNT.replace(opt_in, opt_in + "    SORT_KEYS = False\n")
    script = write_script(tmp_path, source)

    result = run(
        tmp_path, script, [str(src)], reducers=2, memory_per_worker="4MiB", max_split_bytes=1 << 18
    )

    got: dict[str, int] = {}
    for part in calls_of(tmp_path):
        for key, v in part:
            assert key not in got
            got[key] = v["count"]
    assert got == collections.Counter(text.split())
    # Pieces of whole hash buckets, as without the attribute; keys in no order.
    assert result.summary["counters"]["pieces"]["unsorted_calls"] > 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            PIECES_WORDCOUNT.replace("REDUCE_BATCH_PIECES = True", "REDUCE_BATCH_PIECES = 'yes'"),
            "PiecesCount.REDUCE_BATCH_PIECES is 'yes': set it to True or False",
        ),
        (
            """
            from mrk8s import MapReduce

            class Records(MapReduce):
                REDUCE_BATCH_PIECES = True

                def mapper(self, _, line):
                    yield line, 1

                def reducer(self, key, values):
                    yield key, sum(values)
            """,
            "Records.REDUCE_BATCH_PIECES = True, but no step has a reduce_batch",
        ),
    ],
    ids=["not-a-bool", "no-reduce-batch"],
)
def test_a_meaningless_reduce_batch_pieces_is_refused_before_any_task_runs(
    tmp_path: Path, source: str, message: str
) -> None:
    script = write_script(tmp_path, source)
    src = tmp_path / "w.txt"
    src.write_text("a b c\n")
    with pytest.raises(JobDefinitionError, match=message):
        run(tmp_path, script, [str(src)])
    assert not (tmp_path / "out").exists()


LEAN_WORDCOUNT = """
import pyarrow as pa
import pyarrow.compute as pc

from mrk8s import MapReduce


class LeanCount(MapReduce):
    REDUCE_BATCH_PIECES = OPT_IN

    def map_batch(self, table):
        words = pc.list_flatten(pc.utf8_split_whitespace(table["line"]))
        return pa.table({"key": words, "value": pa.array([1] * len(words), pa.int64())})

    def reduce_batch(self, table):
        return table.group_by("key").aggregate([("value", "sum")]).rename_columns(["key", "value"])
"""


@pytest.mark.slow
def test_a_reducer_in_pieces_holds_as_much_memory_at_four_times_the_partition(
    tmp_path: Path,
) -> None:
    """Peak RSS of the one reduce task (its commit record's, reset per task), at a
    partition of about 9 and of 36 MB of Arrow rows, with a 4 MiB piece bound."""
    peaks: dict[tuple[bool, int], int] = {}
    for words in (500_000, 2_000_000):
        text = make_words(words, vocab=200_000, seed=words)
        for pieces in (True, False):
            where = tmp_path / f"{words}-{pieces}"
            where.mkdir()
            src = where / "words.txt"
            src.write_text(text)
            script = write_script(where, LEAN_WORDCOUNT.replace("OPT_IN", str(pieces)))
            result = run(
                where,
                script,
                [str(src)],
                reducers=1,
                memory_per_worker="16MiB",
                max_split_bytes=1 << 20,
            )
            got = dict(row for part in read_parts(where / "out") for row in part)
            assert got == collections.Counter(text.split())
            peaks[pieces, words] = result.summary["stages"]["step0-reduce"]["peak_rss_max"]
    mib = {k: v >> 20 for k, v in peaks.items()}
    print(f"reduce task peak RSS, MiB (in pieces?, words): {mib}")
    grown_in_pieces = peaks[True, 2_000_000] - peaks[True, 500_000]
    grown_whole = peaks[False, 2_000_000] - peaks[False, 500_000]
    assert grown_in_pieces < 24 << 20
    assert grown_whole > 4 * grown_in_pieces + (24 << 20)  # the measure can tell them apart
