"""The bytes of text output: what README promises, and what mrjob writes for mrjob jobs.

A native job's line is ``json.dumps(key, ensure_ascii=False) TAB
json.dumps(value, ensure_ascii=False)`` in UTF-8, through every writer (the
record API's, and the Arrow path of a columnar word count); README says so in
those words. An mrjob job's lines are its ``OUTPUT_PROTOCOL``'s, byte for byte
what the real mrjob package writes for the same job and input (run here with
``python job.py -r inline``), non-ASCII keys included.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, CLIResult

pytestmark = pytest.mark.timeout(180)

Run = Callable[..., CLIResult]

#: Words that JSON escapes differently with and without ensure_ascii, and some it escapes always.
WORDS = ["東京", "café", "naïve", "Ωmega", "emoji😀", 'quote"d', "back\\slash", "tab\x01x", "plain"]

README_FORMAT = "`json.dumps(key, ensure_ascii=False) TAB json.dumps(value, ensure_ascii=False)`"


def _text(tmp_path: Path) -> tuple[Path, collections.Counter[str]]:
    lines = [" ".join(WORDS[i % len(WORDS) :] + WORDS[: i % 3]) for i in range(40)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src, collections.Counter(w for line in lines for w in line.split())


def _expected_lines(pairs: list[tuple[object, object]]) -> list[bytes]:
    return sorted(
        (
            json.dumps(k, ensure_ascii=False) + "\t" + json.dumps(v, ensure_ascii=False) + "\n"
        ).encode()
        for k, v in pairs
    )


def _stdout_lines(cli: Run, *args: str) -> list[bytes]:
    res = cli(*args, "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith("\n")
    return sorted(line.encode() + b"\n" for line in res.stdout[:-1].split("\n"))


def test_readme_states_the_text_line_format_exactly() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"one record per line as {README_FORMAT}, in UTF-8" in readme


@pytest.mark.parametrize("example", ["wordcount.py", "wordcount_columnar.py"])
def test_native_text_output_is_the_readme_format(cli: Run, tmp_path: Path, example: str) -> None:
    src, counts = _text(tmp_path)
    got = _stdout_lines(cli, "run", str(EXAMPLES / example), str(src))
    assert got == _expected_lines(list(counts.items()))
    assert '"東京"\t'.encode() in b"".join(got)  # not "\u6771\u4eac"


def test_native_values_of_every_json_type_are_the_readme_format(cli: Run, tmp_path: Path) -> None:
    src, counts = _text(tmp_path)
    job = tmp_path / "values.py"
    job.write_text(
        textwrap.dedent(
            """
            from mrk8s import MapReduce

            class Values(MapReduce):
                def mapper(self, _, line):
                    for word in line.split():
                        yield word, 1

                def reducer(self, word, counts):
                    n = sum(counts)
                    yield [word, n], {"word": word, "n": n, "half": n / 2, "pair": (word, None)}
            """
        )
    )
    got = _stdout_lines(cli, "run", str(job), str(src))
    pairs: list[tuple[object, object]] = [
        ([w, n], {"word": w, "n": n, "half": n / 2, "pair": [w, None]}) for w, n in counts.items()
    ]
    assert got == _expected_lines(pairs)


_MRJOB_JOB = """
from mrjob.job import MRJob
from mrjob.protocol import {protocol}


class Protocols(MRJob):
    OUTPUT_PROTOCOL = {protocol}

    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, {value}


if __name__ == "__main__":
    Protocols.run()
"""


@pytest.mark.parametrize(
    ("protocol", "value"),
    [
        ("JSONProtocol", "[word, sum(counts)]"),
        ("JSONValueProtocol", "{'word': word, 'n': sum(counts)}"),
        ("StandardJSONProtocol", "sum(counts)"),
        ("ReprProtocol", "(word, sum(counts))"),
        ("ReprValueProtocol", "word * 2"),
        ("TextProtocol", "word + str(sum(counts))"),
        ("TextValueProtocol", "word"),
        ("RawValueProtocol", "word + ' ' + str(sum(counts))"),
    ],
)
def test_mrjob_output_is_byte_identical_to_mrjob_for_its_output_protocol(
    cli: Run, tmp_path: Path, protocol: str, value: str
) -> None:
    pytest.importorskip("mrjob", reason="the real mrjob package is the oracle (test extra)")
    src, _ = _text(tmp_path)
    job = tmp_path / "protocols.py"
    job.write_text(_MRJOB_JOB.format(protocol=protocol, value=value))
    mrjob_run = subprocess.run(
        [sys.executable, str(job), "-r", "inline", str(src)],
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert mrjob_run.returncode == 0, mrjob_run.stderr.decode()
    theirs = sorted(mrjob_run.stdout.splitlines(keepends=True))
    assert theirs, "mrjob wrote nothing"
    assert any(re.search(rb"\\u6771|\xe6\x9d\xb1|\\xe6", line) for line in theirs)

    ours = _stdout_lines(cli, "run", str(job), str(src))

    assert ours == theirs
