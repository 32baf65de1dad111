"""What a user sees when a job goes wrong, and what it leaves behind.

Each test drives the real ``mrk8s`` command in a subprocess over real files:
bad inputs, bad sizes, results that cannot be written, a failing or
interrupted job, a reader that closes the pipe early. The error is one
paragraph naming the bad value and the fix (exit 2 for the user's mistakes,
never retried), and nothing is left that the user did not ask to keep.
"""

from __future__ import annotations

import bz2
import collections
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import EXAMPLES, REPO, CLIResult
from tests.mrk8s.test_disk import _mount
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


# -- what a stopped job leaves behind ---------------------------------------------------------


def _hidden(directory: Path) -> list[str]:
    """Hidden names in ``directory``: where a staging directory beside ``-o`` would be."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


_FAILS_IN_REDUCE = """
import os
from mrk8s import MapReduce

class FailsInReduce(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        if word == "c":
            {fail}
        yield word, sum(counts)
"""


def test_a_job_a_rerun_cannot_fix_does_not_advise_resuming_and_keeps_nothing(
    cli: Run, tmp_path: Path, shuffle_dir: Path
) -> None:
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress(_random_text(20_000))[:60_000])

    res = cli("run", _script(tmp_path, WORDCOUNT), str(src), "--job-id", "bad-input", "-q")

    assert res.returncode == 2, res.stderr
    assert "resume" not in res.stderr and "--job-id" not in res.stderr
    assert res.stderr.splitlines()[-1] == (
        "mrk8s: job bad-input kept nothing: it can only succeed once its script or input "
        "changes, and a changed job starts over (--keep-shuffle keeps its data to inspect)"
    )
    assert list(shuffle_dir.iterdir()) == []


def test_a_failed_job_with_keep_shuffle_says_what_it_keeps_and_clean_removes_it(
    cli: Run, tmp_path: Path, shuffle_dir: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc a\nd e f g\n")
    job = _script(tmp_path, _FAILS_IN_REDUCE.replace("{fail}", 'raise ValueError("no c")'))
    out = tmp_path / "out"

    res = cli("run", job, str(src), "-o", str(out), "--job-id", "kept", "--keep-shuffle", "-q")

    assert res.returncode == 2, res.stderr
    assert "reducer raised ValueError: no c" in res.stderr
    assert "resume" not in res.stderr and "--job-id" not in res.stderr
    assert res.stderr.splitlines()[-1] == (
        f"mrk8s: job kept failed on something a rerun cannot fix; its data is kept in "
        f"{shuffle_dir / 'kept'} because of --keep-shuffle (`mrk8s status kept` shows it): "
        "remove it with `mrk8s clean kept`"
    )
    assert not out.exists()
    assert _hidden(tmp_path) == []  # the other reducer's staged part is gone too
    assert (shuffle_dir / "kept" / "plan.json").exists()

    cleaned = cli("clean", "kept")

    assert cleaned.returncode == 0, cleaned.stderr
    assert list(shuffle_dir.iterdir()) == []


def test_a_job_stopped_by_lost_workers_keeps_its_tasks_to_resume_but_no_staging(
    cli: Run, tmp_path: Path, shuffle_dir: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc a\nd e f g\n")
    job = _script(tmp_path, _FAILS_IN_REDUCE.replace("{fail}", "os._exit(3)"))
    out = tmp_path / "out"

    res = cli("run", job, str(src), "-o", str(out), "--max-attempts", "1", "-q")

    assert res.returncode == 1, res.stderr
    job_id = next(shuffle_dir.iterdir()).name
    assert res.stderr.splitlines()[-1] == (
        f"mrk8s: job {job_id} stopped; its finished tasks are kept in {shuffle_dir / job_id}: "
        f"fix the cause, then rerun the same command with --job-id {job_id} to resume (or "
        f"remove them with `mrk8s clean {job_id}`)"
    )
    assert not out.exists()
    assert _hidden(tmp_path) == []
    assert sorted(p.name for p in (shuffle_dir / job_id / "commits").iterdir() if "map" in p.name)


def _start(shuffle_dir: Path, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    """``mrk8s ARGS`` running in its own process group, as a shell runs a command."""
    env = {**os.environ, "MRK8S_SHUFFLE_DIR": str(shuffle_dir)}
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "mrk8s.cli", *args],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        **popen,
    )


def _workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _assert_all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=15)
    assert alive == [], f"still running: {alive}"


def test_ctrl_c_during_reduce_prints_one_line_and_leaves_nothing_beside_the_output(
    tmp_path: Path, shuffle_dir: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc a\nd e f g\n")
    reducing = tmp_path / "reducing"
    job = _script(
        tmp_path,
        f"""
        import time
        from mrk8s import MapReduce

        class SlowReduce(MapReduce):
            def mapper(self, _, line):
                for word in line.split():
                    yield word, 1

            def reducer(self, word, counts):
                open({str(reducing)!r}, "a").close()
                time.sleep(60)
                yield word, sum(counts)
        """,
    )
    out = tmp_path / "out"
    proc = _start(shuffle_dir, "run", job, str(src), "-o", str(out), "-w", "2", "-q")
    deadline = time.monotonic() + 60
    while not reducing.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the reducer never started"
        time.sleep(0.05)
    workers = _workers(proc)
    assert len(workers) == 2

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=60)

    stderr = err.decode()
    assert proc.returncode == 130, stderr
    job_id = next(shuffle_dir.iterdir()).name
    assert stderr.splitlines() == [
        f"mrk8s: interrupted; job {job_id} stopped; its finished tasks are kept in "
        f"{shuffle_dir / job_id}: fix the cause, then rerun the same command with --job-id "
        f"{job_id} to resume (or remove them with `mrk8s clean {job_id}`)"
    ]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not out.exists()
    assert _hidden(tmp_path) == []
    _assert_all_gone(workers)


def test_a_reader_that_closes_the_pipe_early_ends_the_job_quietly_and_removes_its_data(
    tmp_path: Path, shuffle_dir: Path
) -> None:
    src = tmp_path / "in.txt"
    words = [f"word{i:06d}" for i in range(60_000)]  # ~1 MB of results: more than a pipe holds
    src.write_text("\n".join(words) + "\n")
    proc = _start(
        shuffle_dir, "run", _script(tmp_path, WORDCOUNT), str(src), "-q", stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline(), proc.stdout.readline()]  # what `| head -2` reads
    workers = _workers(proc)
    assert workers, "the job's workers should still be up while it writes its results"

    proc.stdout.close()
    _, err = proc.communicate(timeout=60)

    assert [line.split(b"\t")[1] for line in first] == [b"1\n", b"1\n"]
    assert err.decode() == ""
    assert proc.returncode == 141
    assert list(shuffle_dir.iterdir()) == []
    _assert_all_gone(workers)


def test_a_read_only_output_names_the_job_id_to_rerun_with_and_the_rerun_resumes(
    cli: Run, tmp_path: Path, shuffle_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount(ro, "size=1m,ro")
    try:
        src = tmp_path / "in.txt"
        src.write_text("a b\nc a\n")
        args = ["run", _script(tmp_path, WORDCOUNT), str(src), "-o", str(ro / "out"), "-q"]

        failed = cli(*args)

        assert failed.returncode == 2, failed.stderr
        assert "read-only file system" in failed.stderr
        job_id = next(shuffle_dir.iterdir()).name  # chosen by mrk8s: no --job-id was given
        assert failed.stderr.splitlines()[-1] == (
            f"mrk8s: job {job_id} stopped; its finished tasks are kept in "
            f"{shuffle_dir / job_id}: fix the cause, then rerun the same command with "
            f"--job-id {job_id} to resume (or remove them with `mrk8s clean {job_id}`)"
        )
        assert not (ro / "out").exists()

        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
        again = cli(*args[:-1], "--job-id", job_id)

        assert again.returncode == 0, again.stderr
        assert f"resuming job {job_id}" in again.stderr
        assert (ro / "out" / "_SUCCESS").exists()
        assert _hidden(ro) == []
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


# -- the command line --------------------------------------------------------------------------


def test_bench_without_a_subcommand_lists_the_subcommands_and_exits_2(cli: Run) -> None:
    res = cli("bench")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("usage: mrk8s bench SUBCOMMAND [OPTIONS]\n\nsubcommands:\n")
    assert "\n  shuffle   shuffle throughput" in res.stderr
    helped = cli("bench", "--help")
    assert helped.returncode == 0
    assert "  shuffle   shuffle throughput" in helped.stdout


# -- input that is not UTF-8 -------------------------------------------------------------------


@pytest.mark.parametrize("example", ["wordcount.py", "wordcount_columnar.py"])
def test_input_bytes_that_are_not_utf8_are_counted_and_warned_about_once(
    cli: Run, tmp_path: Path, example: str
) -> None:
    # Latin-1 text among UTF-8: each \xe9 before a space, and each \xff, is one bad byte.
    lines = [b"caf\xe9 ok \xc3\xa9t\xc3\xa9", b"plain words only", b"\xff\xff na\xefve"] * 3000
    src = tmp_path / "mixed.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    bad_bytes = 3000 * (1 + 2 + 1)
    out = tmp_path / "out"

    res = cli("run", str(EXAMPLES / example), str(src), "-o", str(out), "-w", "2", "-q")

    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["step0-map"]["tasks"] > 1  # counted across map tasks
    assert summary["counters"]["mrk8s"]["invalid_utf8_bytes"] == bad_bytes
    [line] = res.stderr.splitlines()
    assert line.startswith("mrk8s WARNING ")
    assert line.endswith(
        f": {bad_bytes} input bytes were not valid UTF-8 and were read as U+FFFD (counter "
        "mrk8s/invalid_utf8_bytes in summary.json): if the input is in another encoding, "
        "convert it to UTF-8 first, e.g. with iconv -f latin1 -t utf-8"
    )
    # The words themselves are read as before: each bad byte run is one U+FFFD.
    text = "".join(p.read_text() for p in sorted(out.glob("part-*")))
    got = {json.loads(k): int(v) for k, v in (line.split("\t") for line in text.splitlines())}
    expected = collections.Counter(
        w for line in lines for w in line.decode("utf-8", "replace").split()
    )
    assert got == dict(expected)


def test_valid_utf8_input_has_no_invalid_utf8_counter(cli: Run, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("café 東京 ok\n" * 100, encoding="utf-8")
    out = tmp_path / "out"
    res = cli("run", str(EXAMPLES / "wordcount.py"), str(src), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "mrk8s" not in json.loads((out / "summary.json").read_text())["counters"]
