"""mrjob jobs read every input as raw text lines, whatever the file is called.

mrjob never parses a file by its extension: a ``.csv``, ``.jsonl`` or
``.tsv`` file reaches the mapper (through ``INPUT_PROTOCOL``) line by line,
and ``.gz``/``.bz2`` files are decompressed. mrk8s's native jobs read those
extensions as typed records; an ``MRJob`` must not. Each test runs the job
renamed (``mrk8s.run``) and unedited (``mrk8s run`` in a subprocess) and
compares its records with mrjob's own inline runner on the same files.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import random
from pathlib import Path

import pytest

from tests.mrjob.conftest import (
    copy_job,
    load_class,
    mrjob_examples,
    mrjob_output,
    multiset,
    parse_lines,
    run_cli,
    run_renamed,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mrjob"),
    pytest.mark.timeout(300),
]

WORDS = ["you", "usual", "tab", "comma", "quote", "Unit", "field", "north", "über", "x"]

#: Reads each line as JSON through INPUT_PROTOCOL: the mapper must get the whole line.
JSON_VALUES_JOB = """
from mrjob.job import MRJob
from mrjob.protocol import JSONValueProtocol


class MRFieldSums(MRJob):
    INPUT_PROTOCOL = JSONValueProtocol

    def mapper(self, _, record):
        for name, value in record.items():
            yield name, value["n"]

    def reducer(self, name, values):
        yield name, sum(values)


if __name__ == "__main__":
    MRFieldSums.run()
"""


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real CSV (header, quoted commas, a quoted newline), JSON lines, TSV, and
    compressed copies; deterministic by seed."""
    d = tmp_path_factory.mktemp("inputs")
    rng = random.Random(19)
    out: dict[str, Path] = {}
    with open(d / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "note"])
        for i in range(300):
            note = _text(rng, 4) + (",\n" + _text(rng, 2) if i % 50 == 7 else "")
            writer.writerow([i, _text(rng, 2), note])
    out["csv"] = d / "table.csv"
    with open(d / "records.jsonl", "w") as f:
        for _ in range(300):
            record = {rng.choice(WORDS): {"n": rng.randint(1, 9), "t": _text(rng, 3)}}
            f.write(json.dumps(record) + "\n")
    out["jsonl"] = d / "records.jsonl"
    with open(d / "rows.tsv", "w") as f:
        for i in range(300):
            f.write(f"{i}\t{_text(rng, 3)}\t{rng.random():.3f}\n")
    out["tsv"] = d / "rows.tsv"
    out["csv.gz"] = d / "table2.csv.gz"
    out["csv.gz"].write_bytes(gzip.compress(out["csv"].read_bytes()))
    out["jsonl.bz2"] = d / "records2.jsonl.bz2"
    out["jsonl.bz2"].write_bytes(bz2.compress(out["jsonl"].read_bytes()))
    return out


def _run_both_ways(
    tmp_path: Path, source: Path, name: str, inputs: list[Path]
) -> tuple[list[tuple[object, object]], list[tuple[object, object]]]:
    """The job's records on mrk8s, renamed and unedited."""
    cls = load_class(source, name)
    renamed = copy_job(source, tmp_path / "renamed", renamed=True)
    got_renamed = parse_lines(cls, run_renamed(renamed, inputs, tmp_path / "r"))
    unedited = copy_job(source, tmp_path / "unedited", renamed=False)
    proc = run_cli(
        ["run", str(unedited), *map(str, inputs), "--reducers", "2", "-w", "2", "-q"],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    got_unedited = parse_lines(cls, proc.stdout.encode().splitlines())
    return got_renamed, got_unedited


@pytest.mark.parametrize("kind", ["csv", "jsonl", "tsv", "csv.gz", "jsonl.bz2"])
def test_word_count_reads_lines_of_any_extension(
    tmp_path: Path, files: dict[str, Path], kind: str
) -> None:
    source = mrjob_examples() / "mr_word_freq_count.py"
    inputs = [files[kind]]
    expected = mrjob_output(load_class(source, "MRWordFreqCount"), [str(p) for p in inputs])
    # The header and field separators are words too: the file was read as text.
    if kind.startswith("csv"):
        assert ("name", 1) in expected and ("note", 1) in expected
    renamed, unedited = _run_both_ways(tmp_path, source, "MRWordFreqCount", inputs)
    assert multiset(renamed) == multiset(expected)
    assert multiset(unedited) == multiset(expected)


def test_input_protocol_gets_each_whole_jsonl_line(tmp_path: Path, files: dict[str, Path]) -> None:
    source = tmp_path / "mr_field_sums.py"
    source.write_text(JSON_VALUES_JOB)
    inputs = [files["jsonl"], files["jsonl.bz2"]]
    expected = mrjob_output(load_class(source, "MRFieldSums"), [str(p) for p in inputs])
    assert expected
    renamed, unedited = _run_both_ways(tmp_path, source, "MRFieldSums", inputs)
    assert multiset(renamed) == multiset(expected)
    assert multiset(unedited) == multiset(expected)
