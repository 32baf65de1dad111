"""A multi-step mrjob job on mrk8s, three ways, against mrjob's inline runner.

tests/mrjob/jobs/mr_word_stats.py has three steps, a passthrough option, a
file option and FILES, counters, tuple and None keys, SORT_VALUES and
ReprProtocol output. It runs on the local backend with three reducers:
unedited through ``mrk8s run``, renamed through ``python job.py``, and
renamed through mrjob's programmatic API (``make_runner``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mrjob.conftest import (
    JOBS,
    copy_job,
    load_class,
    multiset,
    parse_lines,
    run_cli,
)
from tests.util import make_words

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mrjob"),
    pytest.mark.timeout(300),
]

SCRIPT = JOBS / "mr_word_stats.py"


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    paths = []
    for seed in (5, 6):
        p = tmp_path / f"in{seed}.txt"
        text = make_words(20_000, vocab=400, seed=seed)
        p.write_text(text.replace("w1 ", "apple ").replace("w2 ", "Orange, ").replace("w4 ", "x "))
        paths.append(p)
    return paths


@pytest.fixture
def stop_words(tmp_path: Path) -> Path:
    p = tmp_path / "stop.txt"
    p.write_text("w0\nw3\napple\n")
    return p


def _oracle(inputs: list[Path], stop_words: Path) -> tuple[list[tuple[object, object]], int]:
    cls = load_class(SCRIPT, "MRWordStats")
    args = [*map(str, inputs), "--min-length", "2", "--stop-words", str(stop_words)]
    job = cls(args=["-r", "inline", "--no-conf", *args])
    with job.make_runner() as runner:
        runner.run()
        records = list(job.parse_output(runner.cat_output()))
        skipped = sum(step.get("words", {}).get("skipped", 0) for step in runner.counters())
    return records, skipped


def test_unedited_with_mrk8s_run(tmp_path: Path, inputs: list[Path], stop_words: Path) -> None:
    job = copy_job(SCRIPT, tmp_path / "job", renamed=False, extra=[JOBS / "letters.txt"])
    proc = run_cli(
        [
            "run",
            str(job),
            *map(str, inputs),
            "-r",
            "local",
            "--reducers",
            "3",
            "-w",
            "2",
            "--split-size",
            "32KiB",
            "--",
            "--min-length",
            "2",
            "--stop-words",
            stop_words.name,  # relative to the current directory, as a user types it
        ],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    expected, skipped = _oracle(inputs, stop_words)
    cls = load_class(SCRIPT, "MRWordStats")
    got = parse_lines(cls, proc.stdout.encode().splitlines())
    assert multiset(got) == multiset(expected)
    assert any(isinstance(k, tuple) for k, _ in got)  # ReprProtocol keeps tuples
    assert f"counter words/skipped = {skipped}" in proc.stderr
    assert "MRWordStats status: length" in proc.stderr


def test_renamed_with_python_job_py(tmp_path: Path, inputs: list[Path], stop_words: Path) -> None:
    job = copy_job(SCRIPT, tmp_path / "job", renamed=True, extra=[JOBS / "letters.txt"])
    env = dict(os.environ, MRK8S_SHUFFLE_DIR=str(tmp_path / "shuffle"))
    proc = subprocess.run(
        [
            sys.executable,
            str(job),
            *map(str, inputs),
            *["-r", "inline", "--reducers", "3", "--no-conf", "-q"],
            *["--min-length", "2", "--stop-words", str(stop_words)],
        ],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=240,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "imports mrjob" not in proc.stderr  # renamed: nothing to alias
    got = parse_lines(load_class(SCRIPT, "MRWordStats"), proc.stdout.encode().splitlines())
    assert multiset(got) == multiset(_oracle(inputs, stop_words)[0])


def test_renamed_with_make_runner(tmp_path: Path, inputs: list[Path], stop_words: Path) -> None:
    job_path = copy_job(SCRIPT, tmp_path / "job", renamed=True, extra=[JOBS / "letters.txt"])
    cls = load_class(job_path, "MRWordStats")
    from mrk8s.mrjob.job import MRJob

    assert issubclass(cls, MRJob)
    job = cls(
        args=[
            *map(str, inputs),
            *["-r", "local", "--reducers", "3", "--workers", "2"],
            *["--shuffle-dir", str(tmp_path / "shuffle")],
            *["--min-length", "2", "--stop-words", str(stop_words)],
        ]
    )
    with job.make_runner() as runner:
        runner.run()
        got = list(job.parse_output(runner.cat_output()))
        counters = runner.counters()
        output_dir = Path(runner.get_output_dir())
        assert output_dir.is_dir()
    assert not output_dir.exists()  # a temporary output is removed on leaving the `with`
    expected, skipped = _oracle(inputs, stop_words)
    assert multiset(got) == multiset(expected)
    assert counters[0]["words"]["skipped"] == skipped


@pytest.mark.timeout(120)
def test_sandbox_stdin_and_output_dir(tmp_path: Path) -> None:
    """mrjob's test idiom: job.sandbox(stdin=...) as the input; --output-dir kept."""
    import io

    source = (
        "from mrk8s.mrjob.job import MRJob\n"
        "from mrk8s.mrjob.protocol import JSONValueProtocol\n\n"
        "class MRLengths(MRJob):\n"
        "    OUTPUT_PROTOCOL = JSONValueProtocol\n\n"
        "    def mapper(self, _, line):\n"
        "        yield None, len(line)\n\n"
        "    def reducer(self, key, lengths):\n"
        "        yield key, sorted(lengths)\n"
    )
    script = tmp_path / "mr_lengths.py"
    script.write_text(source)
    cls = load_class(script, "MRLengths")
    out = tmp_path / "out"
    job = cls(args=["-r", "inline", "--output-dir", str(out), "--shuffle-dir", str(tmp_path)])
    job.sandbox(stdin=io.BytesIO(b"a\nbbb\ncc\n"))
    with job.make_runner() as runner:
        runner.run()
        assert list(job.parse_output(runner.cat_output())) == [(None, [1, 2, 3])]
    assert (out / "_SUCCESS").exists()
