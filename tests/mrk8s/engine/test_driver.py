"""End-to-end jobs on the local backend (real worker processes, real files).

Every output is compared with an independent computation (Counter, sorted).
"""

from __future__ import annotations

import collections
import json
import os
import random
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import mrk8s
from tests.util import make_words

pytestmark = pytest.mark.timeout(300)

WORDCOUNT = """
from mrk8s import MapReduce

class WordCount(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        self.increment_counter("words", "distinct")
        yield word, sum(counts)
"""


def write_script(tmp_path: Path, source: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run(
    tmp_path: Path, script: str, inputs: list[str], **options: object
) -> mrk8s.engine.driver.JobResult:
    options.setdefault("shuffle_dir", str(tmp_path / "shuffle"))
    options.setdefault("workers", 2)
    return mrk8s.run(script, inputs, output=str(tmp_path / "out"), **options)


def part_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith("part-"))


def read_parts(out: Path) -> list[list[tuple[object, object]]]:
    parts = []
    for p in part_files(out):
        rows = []
        for line in p.read_text().splitlines():
            k, _, v = line.partition("\t")
            rows.append((json.loads(k), json.loads(v)))
        parts.append(rows)
    return parts


def test_wordcount_matches_counter_with_spills(tmp_path: Path) -> None:
    text = make_words(300_000, seed=1)
    src = tmp_path / "words.txt"
    src.write_text(text)
    script = write_script(tmp_path, WORDCOUNT)

    result = run(
        tmp_path,
        script,
        [str(src)],
        reducers=3,
        memory_per_worker=1 << 20,  # a 256 KiB sort buffer: every map task spills
        max_split_bytes=256 << 10,
    )

    expected = collections.Counter(text.split())
    parts = read_parts(tmp_path / "out")
    assert len(parts) == 3
    got = [rec for part in parts for rec in part]
    assert dict(got) == dict(expected)
    assert len(got) == len(expected)  # each key exactly once
    for part in parts:
        keys = [k for k, _ in part]
        assert keys == sorted(keys)
    stages = result.summary["stages"]
    assert stages["step0-map"]["tasks"] >= 4
    assert stages["step0-map"]["spills"] > 0
    assert stages["step0-map"]["records_in"] == text.count("\n")
    assert stages["step0-reduce"]["records_out"] == len(expected)
    assert result.summary["counters"] == {"words": {"distinct": len(expected)}}
    # Committed output only: summary and _SUCCESS present, no staging or shuffle left.
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists()
    assert json.loads((out / "summary.json").read_text())["job_id"] == result.job_id
    assert os.listdir(tmp_path / "shuffle") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.py", "out", "shuffle", "words.txt"]


def test_empty_input_gives_empty_committed_output(tmp_path: Path) -> None:
    src = tmp_path / "empty.txt"
    src.write_text("")
    script = write_script(tmp_path, WORDCOUNT)
    run(tmp_path, script, [str(src)])
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists()
    assert all(p.read_text() == "" for p in part_files(out))


def test_one_hot_key_goes_to_one_reducer(tmp_path: Path) -> None:
    src = tmp_path / "skew.txt"
    src.write_text("hot\n" * 50_000 + "cold\n")
    script = write_script(tmp_path, WORDCOUNT.replace("    def combiner", "    def _no_combiner"))
    run(
        tmp_path,
        script,
        [str(src)],
        reducers=4,
        memory_per_worker=1 << 20,
        max_split_bytes=32 << 10,
    )
    got = [rec for part in read_parts(tmp_path / "out") for rec in part]
    assert sorted(got) == [("cold", 1), ("hot", 50_000)]


MIXED_KEYS = """
from mrk8s import MapReduce

class Mixed(MapReduce):
    def mapper(self, _, line):
        n = int(line)
        # Keys of many types, and the same key typed differently by different tasks
        # (a task whose keys are all str sends a typed column, others a generic one).
        if n % 2:
            yield f"s{n % 7}", n
        else:
            choices = [f"s{n % 7}", n % 5, (n % 3, "t"), None, n % 4 == 0, float(n % 3) + 0.5]
            yield choices[n % len(choices)], [n]

    def reducer(self, key, values):
        total = 0
        for v in values:
            total += v if isinstance(v, int) else v[0]
        yield [type(key).__name__, key], total
"""


def test_keys_of_mixed_types_group_exactly(tmp_path: Path) -> None:
    numbers = list(range(4000))
    src = tmp_path / "numbers.txt"
    src.write_text("".join(f"{n}\n" for n in numbers[:1000]))
    src2 = tmp_path / "numbers2.txt"
    src2.write_text("".join(f"{n * 2}\n" for n in range(1000, 3000)))
    script = write_script(tmp_path, MIXED_KEYS)
    run(tmp_path, script, [str(src), str(src2)], reducers=3, max_split_bytes=4 << 10)

    expected: collections.Counter[tuple[str, object]] = collections.Counter()
    for n in numbers[:1000] + [n * 2 for n in range(1000, 3000)]:
        if n % 2:
            key: object = f"s{n % 7}"
        else:
            choices = [f"s{n % 7}", n % 5, (n % 3, "t"), None, n % 4 == 0, float(n % 3) + 0.5]
            key = choices[n % len(choices)]
        # JSON output turns tuples into lists.
        shown = list(key) if isinstance(key, tuple) else key
        expected[(type(key).__name__, json.dumps(shown))] += n
    got = collections.Counter()
    for part in read_parts(tmp_path / "out"):
        for (type_name, key), total in part:
            assert (type_name, json.dumps(key)) not in got, "a key was split across groups"
            got[(type_name, json.dumps(key))] = total
    assert got == expected


RANGE_SORT = """
from mrk8s import MapReduce

class Sort(MapReduce):
    PARTITIONER = "range"

    def mapper(self, _, line):
        yield int(line), None

    def reducer(self, key, values):
        for _ in values:
            yield key, None
"""


def test_range_partitioner_sorts_globally(tmp_path: Path) -> None:
    rng = random.Random(3)
    numbers = [rng.randint(-(10**12), 10**12) for _ in range(20_000)] + [7] * 500
    src = tmp_path / "n.txt"
    src.write_text("".join(f"{n}\n" for n in numbers))
    script = write_script(tmp_path, RANGE_SORT)
    run(tmp_path, script, [str(src)], reducers=4, max_split_bytes=64 << 10)
    parts = read_parts(tmp_path / "out")
    assert len(parts) == 4
    assert all(parts), "a range partition came out empty: boundaries are poor"
    assert [k for part in parts for k, _ in part] == sorted(numbers)


CUSTOM_PARTITION = """
from mrk8s import MapReduce

class ByParity(MapReduce):
    def mapper(self, _, line):
        yield int(line), 1

    def partition(self, key, num_reducers):
        return key % 2

    def reducer(self, key, ones):
        yield key, sum(ones)
"""


def test_custom_partition_function(tmp_path: Path) -> None:
    src = tmp_path / "n.txt"
    src.write_text("".join(f"{n % 50}\n" for n in range(1000)))
    script = write_script(tmp_path, CUSTOM_PARTITION)
    run(tmp_path, script, [str(src)], reducers=2)
    even, odd = read_parts(tmp_path / "out")
    assert even == [(k, 20) for k in range(0, 50, 2)]
    assert odd == [(k, 20) for k in range(1, 50, 2)]


COLUMNAR_MIX = """
import pyarrow as pa
import pyarrow.compute as pc
from mrk8s import MapReduce, Step

class Mix(MapReduce):
    def steps(self):
        return [
            Step(map_batch=self.split_words, reducer=self.count),
            Step(mapper=self.swap, reduce_batch=self.biggest_per_count),
        ]

    def split_words(self, table):
        words = pc.list_flatten(pc.utf8_split_whitespace(table["line"]))
        return pa.table({"key": words, "one": pa.array([1] * len(words), pa.int64())})

    def count(self, word, ones):
        yield word, sum(ones)

    def swap(self, word, count):
        yield count, word

    def biggest_per_count(self, table):
        # One row per count: the alphabetically last word with that count.
        out = table.group_by("key").aggregate([("value", "max")])
        return out.rename_columns(["key", "value"]).sort_by("key")
"""


def test_columnar_and_record_functions_mix_across_steps(tmp_path: Path) -> None:
    text = make_words(20_000, vocab=300, seed=5)
    src = tmp_path / "w.txt"
    src.write_text(text)
    script = write_script(tmp_path, COLUMNAR_MIX)
    run(tmp_path, script, [str(src)], reducers=2, max_split_bytes=16 << 10)
    counts = collections.Counter(text.split())
    expected: dict[int, str] = {}
    for word, c in counts.items():
        expected[c] = max(expected.get(c, ""), word)
    got = dict(rec for part in read_parts(tmp_path / "out") for rec in part)
    assert got == expected


def test_output_formats_jsonl_and_parquet(tmp_path: Path) -> None:
    text = make_words(5_000, vocab=100, seed=2)
    src = tmp_path / "w.txt"
    src.write_text(text)
    script = write_script(tmp_path, WORDCOUNT)
    expected = collections.Counter(text.split())

    run(tmp_path, script, [str(src)], output_format="jsonl")
    rows = [
        json.loads(line)
        for p in part_files(tmp_path / "out")
        for line in p.read_text().splitlines()
    ]
    assert {r["key"]: r["value"] for r in rows} == dict(expected)
    assert all(p.suffix == ".jsonl" for p in part_files(tmp_path / "out"))

    run(tmp_path, script, [str(src)], output_format="parquet", overwrite=True)
    tables = [pq.read_table(p) for p in part_files(tmp_path / "out")]
    got = {
        k: v
        for t in tables
        for k, v in zip(t["key"].to_pylist(), t["value"].to_pylist(), strict=True)
    }
    assert got == dict(expected)


def test_modules_beside_the_script_import_in_workers(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_job.py").write_text("def normalise(w):\n    return w.upper()\n")
    script = write_script(
        tmp_path,
        """
        from helpers_for_job import normalise
        from mrk8s import MapReduce

        class Upper(MapReduce):
            def mapper(self, _, line):
                for w in line.split():
                    yield normalise(w), 1

            def reducer(self, w, ones):
                yield w, sum(ones)
        """,
    )
    src = tmp_path / "in.txt"
    src.write_text("a b\nb c\n")
    result = run(tmp_path, script, [str(src)])
    assert sorted(result.records()) == [("A", 1), ("B", 2), ("C", 1)]


def test_map_only_step(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        """
        from mrk8s import MapReduce

        class Lengths(MapReduce):
            def mapper(self, _, line):
                yield line, len(line)
        """,
    )
    lines = [f"line number {i}" for i in range(500)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    result = run(tmp_path, script, [str(src)], max_split_bytes=2 << 10)
    assert sorted(result.records()) == sorted((line, len(line)) for line in lines)


HOOKS = """
from mrk8s import MapReduce

class Hooks(MapReduce):
    def mapper_init(self):
        self.lines = 0

    def mapper(self, _, line):
        self.lines += 1
        for w in line.split():
            yield w, 1

    def mapper_final(self):
        # One record per map task: how many lines it saw.
        yield "__lines__", self.lines

    def reducer_init(self):
        self.keys = 0

    def reducer(self, key, values):
        self.keys += 1
        yield key, sum(values)

    def reducer_final(self):
        yield f"__keys_in_reducer__", self.keys
"""


def test_init_and_final_hooks_run_once_per_task(tmp_path: Path) -> None:
    text = make_words(3_000, vocab=50, seed=8)
    src = tmp_path / "w.txt"
    src.write_text(text)
    script = write_script(tmp_path, HOOKS)
    result = run(tmp_path, script, [str(src)], reducers=3, max_split_bytes=2 << 10)
    got = collections.defaultdict(list)
    for k, v in result.records():
        got[k].append(v)
    counts = collections.Counter(text.split())
    assert {k: v[0] for k, v in got.items() if not k.startswith("__")} == dict(counts)
    assert got["__lines__"] == [text.count("\n")]  # the per-task counts, summed by the reducer
    per_reducer = got["__keys_in_reducer__"]
    assert len(per_reducer) == 3
    assert sum(per_reducer) == len(counts) + 1  # every word, and "__lines__"


COMBINER_HOOKS = """
from mrk8s import MapReduce

class CombinerHooks(MapReduce):
    def mapper(self, _, line):
        for w in line.split():
            yield w, 1

    def combiner_init(self):
        self.calls = 0  # the combiner below fails without it

    def combiner(self, key, values):
        self.calls += 1
        yield key, sum(values)

    def combiner_final(self):
        yield "__combiner_finals__", 1

    def reducer(self, key, values):
        yield key, sum(values)
"""


def test_combiner_hooks_run_around_the_in_mapper_combiner(tmp_path: Path) -> None:
    text = make_words(3_000, vocab=50, seed=9)
    src = tmp_path / "w.txt"
    src.write_text(text)
    script = write_script(tmp_path, COMBINER_HOOKS)
    result = run(tmp_path, script, [str(src)], reducers=2, max_split_bytes=2 << 10)
    got = dict(result.records())
    maps = result.summary["stages"]["step0-map"]["tasks"]
    assert maps > 1
    assert got.pop("__combiner_finals__") == maps  # combiner_final once per map task
    assert got == dict(collections.Counter(text.split()))


def test_defaults_give_two_map_tasks_and_two_reducers(tmp_path: Path) -> None:
    src = tmp_path / "small.txt"
    src.write_text("a b\nc d\ne f\n")
    script = write_script(tmp_path, WORDCOUNT)
    result = mrk8s.run(script, [str(src)], shuffle_dir=str(tmp_path / "s"), workers=1)
    assert result.summary["stages"]["step0-map"]["tasks"] >= 2
    assert result.summary["reducers"] == [2]
    assert sorted(result.records()) == [(w, 1) for w in "abcdef"]


def test_compressed_directory_and_glob_inputs(tmp_path: Path) -> None:
    import bz2
    import gzip

    data = tmp_path / "data"
    (data / "nested").mkdir(parents=True)
    texts = {
        "one.txt.gz": make_words(2_000, vocab=40, seed=1),
        "nested/two.txt.bz2": make_words(2_000, vocab=40, seed=2),
        "three.txt": make_words(2_000, vocab=40, seed=3),
    }
    (data / "one.txt.gz").write_bytes(gzip.compress(texts["one.txt.gz"].encode()))
    (data / "nested" / "two.txt.bz2").write_bytes(
        bz2.compress(texts["nested/two.txt.bz2"].encode())
    )
    (data / "three.txt").write_text(texts["three.txt"])
    (data / "_SUCCESS").write_text("not input")
    script = write_script(tmp_path, WORDCOUNT)

    whole = run(tmp_path, script, [str(data)])
    expected = collections.Counter(" ".join(texts.values()).split())
    assert dict(whole.records()) == dict(expected)

    globbed = run(tmp_path, script, [str(data / "*.txt*")], overwrite=True)
    expected = collections.Counter((texts["one.txt.gz"] + texts["three.txt"]).split())
    assert dict(globbed.records()) == dict(expected)
