"""What a user sees when a job goes wrong, and what it leaves behind.

Each test drives the real ``mrk8s`` command in a subprocess over real files:
bad inputs, bad sizes, results that cannot be written, a failing or
interrupted job, a reader that closes the pipe early. The error is one
paragraph naming the bad value and the fix (exit 2 for the user's mistakes,
never retried), and nothing is left that the user did not ask to keep.
"""

from __future__ import annotations

import bz2
import gzip
import random
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLIResult
from tests.util import WORDCOUNT

pytestmark = pytest.mark.timeout(120)

Run = Callable[..., CLIResult]


def _script(tmp_path: Path, source: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def _random_text(lines: int, seed: int = 0) -> bytes:
    """Text that does not compress to almost nothing, so a cut lands in the data."""
    rng = random.Random(seed)
    return "".join(f"{rng.random()} {rng.random()}\n" for _ in range(lines)).encode()


# -- compressed inputs that do not decompress ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("truncated.txt.gz", gzip.compress(_random_text(20_000))[:60_000]),
        ("truncated.csv.gz", gzip.compress(b"a,b\n" + _random_text(20_000))[:60_000]),
        ("not-gzip.gz", b"this was never gzip\n"),
        ("truncated.bz2", bz2.compress(_random_text(20_000))[:60_000]),
        ("damaged.bz2", b"BZh9" + bytes(range(256)) * 4),
    ],
)
def test_a_damaged_compressed_input_is_an_input_error_naming_the_file(
    cli: Run, tmp_path: Path, name: str, content: bytes
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    job = _script(tmp_path, WORDCOUNT)

    res = cli("run", job, str(src), "-q")

    assert res.returncode == 2, res.stderr
    kind = "gzip" if name.endswith(".gz") else "bz2"
    assert f"input {str(src)!r} is not a valid {kind} file" in res.stderr
    assert "truncated or damaged; compress or download it again" in res.stderr
    assert "internal error" not in res.stderr
    assert "retrying" not in res.stderr  # a user error: one attempt only
    assert "Traceback" not in res.stderr


# -- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split-size", "0"], "--split-size 0 bytes: give a positive size, e.g. 64MiB"),
        (["--split-size", "0.4"], "--split-size 0 bytes: give a positive size, e.g. 64MiB"),
        (["--split-size", "0MiB"], "--split-size 0 bytes: give a positive size, e.g. 64MiB"),
        (["--split-size", "-1"], "--split-size '-1' is not a size: write a number"),
        (["--split-size", "big"], "--split-size 'big' is not a size: write a number"),
        (["--memory-per-worker", "12 apples"], "--memory-per-worker '12 apples' is not a size"),
    ],
)
def test_a_bad_size_is_a_usage_error_naming_the_option(
    cli: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    res = cli("run", _script(tmp_path, WORDCOUNT), str(src), *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"mrk8s: error: {message}"), res.stderr
    assert "Traceback" not in res.stderr


def test_a_bad_bench_size_is_a_usage_error_naming_the_option(cli: Run) -> None:
    res = cli("bench", "shuffle", "--size", "lots")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("mrk8s: error: --size 'lots' is not a size"), res.stderr


# -- results that cannot be written ------------------------------------------------------------

_BAD_RESULT = """
from mrk8s import MapReduce

class BadResult(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        n = sum(counts)
        if word == "c":
            yield {bad}
        else:
            yield word, n
"""


@pytest.mark.parametrize(
    ("fmt", "bad", "part", "message"),
    [
        (
            "text",
            "word, {n}",
            "part-00000",
            "the value of key 'c' cannot be written as text to output part part-00000: set "
            "values cannot be written as JSON (JSON has no sets): yield a list, e.g. "
            "sorted(the_set)",
        ),
        (
            "text",
            "frozenset([word]), n",
            "part-00000",
            "the key frozenset({'c'}) cannot be written as text to output part part-00000: "
            "frozenset values cannot be written as JSON (JSON has no sets)",
        ),
        (
            "jsonl",
            "word, object()",
            "part-00000.jsonl",
            "the value of key 'c' cannot be written as jsonl to output part part-00000.jsonl: "
            "object values cannot be written as JSON: yield str, int, float, bool, None, or "
            "lists and dicts of them",
        ),
        (
            "parquet",
            "word, object()",
            "part-00000.parquet",
            "the value of key 'c' cannot be written as parquet to output part "
            "part-00000.parquet: object values cannot be written as JSON",
        ),
    ],
)
def test_a_result_that_cannot_be_written_is_a_user_error_naming_key_reducer_and_part(
    cli: Run, tmp_path: Path, fmt: str, bad: str, part: str, message: str
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc a\n")
    job = _script(tmp_path, _BAD_RESULT.replace("{bad}", bad))
    out = tmp_path / "out"

    res = cli("run", job, str(src), "-o", str(out), "--output-format", fmt, "-r", "1", "-q")

    assert res.returncode == 2, res.stderr
    assert f"reducer yielded a result that cannot be written: {message}" in res.stderr
    assert "stage=reduce, task=0, partition=0" in res.stderr
    assert part in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_an_mrjob_result_its_output_protocol_cannot_write_names_key_and_part(
    cli: Run, tmp_path: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc a\n")
    job = _script(
        tmp_path,
        """
        from mrjob.job import MRJob

        class MRSets(MRJob):
            def mapper(self, _, line):
                for word in line.split():
                    yield word, 1

            def reducer(self, word, counts):
                yield word, set(counts)

        if __name__ == "__main__":
            MRSets.run()
        """,
    )
    res = cli("run", job, str(src), "-r", "1", "-q")
    assert res.returncode == 2, res.stderr
    assert (
        "reducer yielded a result that cannot be written: the result of key 'a' cannot be "
        "written by the job's OUTPUT_PROTOCOL to output part part-00000: Object of type set "
        "is not JSON serializable"
    ) in res.stderr
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
