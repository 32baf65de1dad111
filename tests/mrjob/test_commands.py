"""mrjob command steps: ``*_cmd`` and ``*_pre_filter`` run as mrjob's local runner runs them.

Jobs with commands in every position run unedited through ``mrk8s run``
(several map tasks and reducers) and through mrjob's own local runner
(``python job.py -r local``, in a subprocess, the oracle); their output
lines must be equal as multisets. A failing command is a user error naming
the step part, the command, its exit status and the end of its stderr.
:class:`CommandPipe` is also driven directly with more data than a pipe
holds, both ways.
"""

from __future__ import annotations

import collections
import random
import textwrap
from pathlib import Path

import pytest

from mrk8s.errors import UserError
from mrk8s.mrjob.commands import CommandError, CommandPipe
from tests.mrjob.conftest import mrjob_local, run_cli

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mrjob"),
    pytest.mark.timeout(300),
]

#: A command in every position of a step, across three steps.
PIPES_JOB = """
import re

from mrjob.job import MRJob
from mrjob.step import MRStep

WORD = re.compile(r"\\w+")


class MRPipes(MRJob):
    def steps(self):
        return [
            MRStep(
                mapper_pre_filter="grep -v '^#'",
                mapper=self.words,
                combiner_cmd="sed -e 's/1$/3/'",
                reducer=self.total,
            ),
            MRStep(reducer_pre_filter="grep -v -e '\\"w1'", reducer=self.by_count),
            MRStep(reducer_cmd="uniq -c"),
        ]

    def words(self, _, line):
        for word in WORD.findall(line):
            yield word.lower(), 1

    def total(self, word, counts):
        yield word, sum(counts)

    def by_count(self, word, totals):
        for total in totals:
            yield total % 7, word


if __name__ == "__main__":
    MRPipes.run()
"""

#: A first-step mapper command: the reducer is the job's first Python part, so it
#: reads with INPUT_PROTOCOL (RawProtocol: key TAB value), as mrjob chooses.
CMD_FIRST_JOB = """
from mrjob.job import MRJob
from mrjob.protocol import RawProtocol
from mrjob.step import MRStep


class MRCmdFirst(MRJob):
    INPUT_PROTOCOL = RawProtocol

    def steps(self):
        return [MRStep(mapper_cmd=["awk", "{print $1 \\"\\\\t\\" length($0)}"],
                       reducer=self.total)]

    def total(self, key, lengths):
        yield key, sum(int(n) for n in lengths)


if __name__ == "__main__":
    MRCmdFirst.run()
"""

#: A combiner behind a pre-filter, given as a method (as the failing jobs below give
#: mapper_cmd, mapper_pre_filter and reducer_cmd).
COMBINER_FILTER_JOB = """
from mrjob.job import MRJob


class MRCombinerFilter(MRJob):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def combiner_pre_filter(self):
        return "grep -v -e '^.w2.\\t'"

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    MRCombinerFilter.run()
"""


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("text")
    rng = random.Random(11)
    paths = []
    for i in range(2):
        lines = []
        for n in range(2500):
            words = " ".join(f"w{min(int(rng.paretovariate(1.2)), 40)}" for _ in range(6))
            lines.append(("# " if n % 13 == 0 else "") + words)
        p = d / f"in{i}.txt"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def _both(tmp_path: Path, source: str, name: str, inputs: list[Path]) -> tuple[list, list]:
    job = tmp_path / f"{name}.py"
    job.write_text(textwrap.dedent(source))
    args = [str(p) for p in inputs]
    options = ["-r", "local", "--reducers", "3", "-w", "2", "--split-size", "16KiB", "-q"]
    proc = run_cli(
        ["run", str(job), *args, *options],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.encode().splitlines()
    expected = mrjob_local(job, args, cwd=tmp_path)
    return got, expected


def test_commands_in_every_position(tmp_path: Path, text: list[Path]) -> None:
    got, expected = _both(tmp_path, PIPES_JOB, "mr_pipes", text)
    assert expected and all(line.lstrip().startswith(b"1 ") for line in expected)
    # The pre-filters worked: no word w1x, and the combiner tripled each 1.
    assert not any(b'"w1' in line for line in expected)
    assert collections.Counter(got) == collections.Counter(expected)


def test_mapper_cmd_first_then_a_python_reducer(tmp_path: Path, text: list[Path]) -> None:
    got, expected = _both(tmp_path, CMD_FIRST_JOB, "mr_cmd_first", text)
    assert len(expected) > 10
    assert collections.Counter(got) == collections.Counter(expected)


def test_combiner_pre_filter_and_command_methods(tmp_path: Path, text: list[Path]) -> None:
    got, expected = _both(tmp_path, COMBINER_FILTER_JOB, "mr_combiner_filter", text)
    assert expected and not any(line.startswith(b'"w2"\t') for line in expected)
    assert collections.Counter(got) == collections.Counter(expected)


FAILING = """
from mrjob.job import MRJob


class MRFails(MRJob):
    def {part}(self):
        return {command!r}
{reducer}"""

REDUCER = """
    def reducer(self, key, values):
        yield key, len(list(values))
"""


@pytest.mark.parametrize(
    ("part", "command", "said"),
    [
        (
            "mapper_cmd",
            "sh -c 'echo reading the input went wrong >&2; exit 3'",
            ["exited with status 3", "reading the input went wrong"],
        ),
        (
            "mapper_pre_filter",
            "no-such-program-h2 --flag",
            ["exited with status 127", "not found", "could not run"],
        ),
        ("reducer_cmd", "false", ["exited with status 1", "wrote nothing to stderr"]),
        ("mapper_cmd", "no-such-program-h2", ["could not start", "installed on every worker"]),
    ],
)
def test_a_failing_command_is_a_user_error(
    tmp_path: Path, part: str, command: str, said: list[str]
) -> None:
    job = tmp_path / "mr_fails.py"
    reducer = "" if part.startswith("reducer") else REDUCER
    job.write_text(FAILING.format(part=part, command=command, reducer=reducer))
    (tmp_path / "in.txt").write_text("a b\nc d\n" * 50)
    proc = run_cli(["run", str(job), "in.txt", "-w", "1"], cwd=tmp_path, shuffle_dir=tmp_path / "s")
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr[proc.stderr.index("mrk8s: job failed:") :]
    assert f"{part} of step 1 `{command}`" in error
    for words in said:
        assert words in error
    assert "step=1 of 1, stage=" in error
    assert "Traceback" not in proc.stderr
    assert "attempt 2" not in proc.stderr  # a user error: not retried


def test_a_pre_filter_that_finds_nothing_is_not_an_error(tmp_path: Path) -> None:
    # grep exits 1 when no line matches; mrjob's sh pipeline ignores a filter's status.
    job = tmp_path / "mr_nothing.py"
    job.write_text(FAILING.format(part="mapper_pre_filter", command="grep zzz", reducer=REDUCER))
    (tmp_path / "in.txt").write_text("a b\nc d\n")
    proc = run_cli(["run", str(job), "in.txt"], cwd=tmp_path, shuffle_dir=tmp_path / "s")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert mrjob_local(job, ["in.txt"], cwd=tmp_path) == []


# -- the pipe itself ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_pipe_streams_more_than_a_pipe_buffer_both_ways() -> None:
    # The command writes 2 MB before it reads a byte, then echoes 8 MB of input:
    # writing and reading must go on at once, or both sides block.
    command = "head -c 2000000 /dev/zero | tr '\\0' x; echo; cat"
    pipe = CommandPipe(["sh", "-c", command], what="mapper_cmd of step 1", pre_filter=False)
    lines = [f"{i:08d} {'y' * 90}".encode() for i in range(80_000)]
    out = list(pipe.feed(lines)) + list(pipe.close())
    assert out[0] == b"x" * 2_000_000
    assert out[1:] == lines


@pytest.mark.timeout(60)
def test_pipe_gives_output_as_it_comes() -> None:
    pipe = CommandPipe("cat", what="mapper_cmd of step 1", pre_filter=False)
    seen = 0
    for _ in pipe.feed(b"%d" % i for i in range(200_000)):
        seen += 1
    assert seen > 0  # output arrived before the input ended
    rest = list(pipe.close())
    assert seen + len(rest) == 200_000 and rest[-1] == b"199999"


def test_pipe_whose_command_stops_reading_early() -> None:
    pipe = CommandPipe("head -n 2", what="reducer_cmd of step 2", pre_filter=False)
    out = list(pipe.feed(b"line %d" % i for i in range(100_000))) + list(pipe.close())
    assert out == [b"line 0", b"line 1"]


def test_pipe_error_names_the_part_status_and_stderr_tail() -> None:
    pipe = CommandPipe(
        ["sh", "-c", "cat >/dev/null; seq 1 2000 >&2; exit 4"],
        what="combiner_cmd of step 2",
        pre_filter=False,
    )
    with pytest.raises(CommandError) as info:
        list(pipe.feed([b"a"])) + list(pipe.close())
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith("combiner_cmd of step 2 `sh -c 'cat >/dev/null; seq 1 2000 >&2;")
    assert "exited with status 4" in message and message.rstrip(")").count("\n") < 500
    assert "1999\n2000" in message and "\n1\n" not in message  # the tail only
