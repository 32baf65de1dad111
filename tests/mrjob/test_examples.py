"""mrjob's own example jobs on mrk8s, renamed and unedited, against mrjob's inline runner.

Each example comes from the installed mrjob package (mrjob/examples/). mrk8s
runs it on generated input with several map tasks and reducers; the records
it outputs must be those mrjob's inline runner outputs on the same input,
compared as multisets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mrjob.conftest import (
    JOBS,
    copy_job,
    load_class,
    mrjob_examples,
    mrjob_output,
    multiset,
    parse_lines,
    run_cli,
    run_renamed,
)
from tests.util import make_words

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mrjob"),
    pytest.mark.timeout(300),
]

#: (script, job class, support files from the examples directory)
EXAMPLES = [
    ("mr_word_freq_count.py", "MRWordFreqCount", []),
    ("mr_most_used_word.py", "MRMostUsedWord", ["stop_words.txt"]),
    ("mr_next_word_stats.py", "MRNextWordStats", []),
    ("mr_wc.py", "MRWordCountUtility", []),
    ("mr_count_lines_by_file.py", "MRCountLinesByFile", []),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two text files: Zipf words with stop words, capitals and punctuation mixed in."""
    d = tmp_path_factory.mktemp("corpus")
    stop = ["the", "and", "of", "a", "to", "is"]
    paths = []
    for seed in (1, 2):
        text = make_words(40_000, vocab=800, seed=seed)
        for i, word in enumerate(stop):
            text = text.replace(f"w{i + 3} ", f"{word} ").replace(f"w{i + 20} ", f"W{i}, ")
        path = d / f"part{seed}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


def _oracle(script: Path, name: str, inputs: list[Path]) -> list[tuple[object, object]]:
    return mrjob_output(load_class(script, name), [str(p) for p in inputs])


@pytest.mark.parametrize(("script", "name", "extra"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_renamed(
    tmp_path: Path, corpus: list[Path], script: str, name: str, extra: list[str]
) -> None:
    examples = mrjob_examples()
    job = copy_job(
        examples / script, tmp_path / "job", renamed=True, extra=[examples / e for e in extra]
    )
    assert "from mrk8s.mrjob" in job.read_text()
    lines = run_renamed(job, corpus, tmp_path)
    expected = _oracle(examples / script, name, corpus)
    assert expected, "the oracle gave nothing: the test input is wrong"
    assert multiset(parse_lines(load_class(examples / script, name), lines)) == multiset(expected)


@pytest.mark.parametrize(("script", "name", "extra"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_unedited(
    tmp_path: Path, corpus: list[Path], script: str, name: str, extra: list[str]
) -> None:
    examples = mrjob_examples()
    job = copy_job(
        examples / script, tmp_path / "job", renamed=False, extra=[examples / e for e in extra]
    )
    proc = run_cli(
        ["run", str(job), *map(str, corpus), "-r", "local", "--reducers", "3", "-w", "2", "-q"],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"mrk8s: {script} imports mrjob" in proc.stderr
    assert proc.stderr.count("imports mrjob") == 1  # one line, from the driver only
    got = parse_lines(load_class(examples / script, name), proc.stdout.encode().splitlines())
    assert multiset(got) == multiset(_oracle(examples / script, name, corpus))


@pytest.mark.parametrize("renamed", [True, False], ids=["renamed", "unedited"])
def test_line_counts_by_file_with_mapper_raw(
    tmp_path: Path, corpus: list[Path], renamed: bool
) -> None:
    source = JOBS / "mr_count_lines_raw.py"
    job = copy_job(source, tmp_path / "job", renamed=renamed)
    inputs = [*corpus, corpus[0].parent / "part1.txt"]  # the same file twice: two map tasks
    if renamed:
        lines = run_renamed(job, inputs, tmp_path)
    else:
        proc = run_cli(
            ["run", str(job), *map(str, inputs), "-r", "inline", "--reducers", "2", "-q"],
            cwd=tmp_path,
            shuffle_dir=tmp_path / "shuffle",
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.encode().splitlines()
    cls = load_class(source, "MRCountLinesRaw")
    expected = mrjob_output(cls, [str(p) for p in inputs])
    assert multiset(parse_lines(cls, lines)) == multiset(expected)
    assert {k for k, _ in expected} == {str(p) for p in corpus}
