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
