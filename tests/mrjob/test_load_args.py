"""``load_args()`` (and mrjob 0.5's ``load_options()``) overrides run, as in mrjob.

mrjob calls ``load_args`` from ``MRJob.__init__``, so what an override sets
(``self.sample_size``, ``self.stop_words``) exists before ``mapper_init``
in every task. mrk8s builds the job in the driver and in each worker process
(separate processes): each must run the override on the same options.
"""

from __future__ import annotations

import collections
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

#: Both hooks derive attributes from the options that every function relies on.
LOADED_JOB = """
from mrjob.job import MRJob


class MRLoaded(MRJob):
    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--words", default="w1,w2")
        self.add_passthru_arg("--scale", type=int, default=1)

    def HOOK(self, args):
        super().HOOK(args)
        self.wanted = set(self.options.words.split(","))
        self.factor = self.options.scale * 10

    def mapper_init(self):
        self.seen = len(self.wanted)

    def mapper(self, _, line):
        for word in line.split():
            if word in self.wanted:
                yield word, self.factor

    def reducer(self, word, counts):
        yield word, [sum(counts), sorted(self.wanted)]


if __name__ == "__main__":
    MRLoaded.run()
"""


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("text")
    rng = random.Random(7)
    paths = []
    for i in range(2):
        p = d / f"in{i}.txt"
        lines = (" ".join(f"w{rng.randint(0, 9)}" for _ in range(8)) for _ in range(3000))
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def _expected(inputs: list[Path], words: list[str], scale: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in inputs:
        for word in path.read_text().split():
            if word in words:
                counts[word] += 10 * scale
    return multiset((w, [n, sorted(words)]) for w, n in counts.items())


def test_load_args_runs_in_the_driver_and_every_task(tmp_path: Path, text: list[Path]) -> None:
    source = tmp_path / "mr_loaded.py"
    source.write_text(LOADED_JOB.replace("HOOK", "load_args"))
    args = ["--words", "w3,w5,w7", "--scale", "3"]
    cls = load_class(source, "MRLoaded")
    oracle = mrjob_output(cls, [*map(str, text), *args])
    assert multiset(oracle) == _expected(text, ["w3", "w5", "w7"], 3)

    renamed = copy_job(source, tmp_path / "renamed", renamed=True)
    lines = run_renamed(renamed, text, tmp_path / "r", job_args={"words": "w3,w5,w7", "scale": 3})
    assert multiset(parse_lines(cls, lines)) == multiset(oracle)

    unedited = copy_job(source, tmp_path / "unedited", renamed=False)
    proc = run_cli(
        ["run", str(unedited), *map(str, text), *args, "-w", "2", "--split-size", "8KiB", "-q"],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    assert multiset(parse_lines(cls, proc.stdout.encode().splitlines())) == multiset(oracle)


def test_load_options_override_runs_too(tmp_path: Path, text: list[Path]) -> None:
    # mrjob 0.7 no longer calls load_options (so no oracle run): the count is the oracle.
    job = tmp_path / "mr_loaded.py"
    job.write_text(LOADED_JOB.replace("HOOK", "load_options"))
    proc = run_cli(
        ["run", str(job), *map(str, text), "--words", "w0,w9", "-w", "2", "-q"],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    got = parse_lines(load_class(job, "MRLoaded"), proc.stdout.encode().splitlines())
    assert multiset(got) == _expected(text, ["w0", "w9"], 1)


def test_log_sampler_sample_size(tmp_path: Path) -> None:
    """mr_log_sampler's load_args sets self.sample_size; the reducer stops there."""
    log = tmp_path / "app.log"
    lines = [
        f"2026-12-05 03:{i // 60:02d}:{i % 60:02d} INFO request {i} took {i % 97} ms"
        for i in range(600)
    ]
    log.write_text("\n".join(lines) + "\n")
    job = copy_job(mrjob_examples() / "mr_log_sampler.py", tmp_path / "job", renamed=False)
    proc = run_cli(
        ["run", str(job), str(log), "--sample-size", "20", "-w", "2", "--split-size", "4KiB"],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    assert proc.returncode == 0, proc.stderr
    sample = proc.stdout.splitlines()
    # A random sample: 20 distinct lines of the log, as mrjob's own run gives.
    assert len(sample) == 20 and len(set(sample)) == 20
    assert set(sample) <= set(lines)
    oracle = mrjob_output(
        load_class(mrjob_examples() / "mr_log_sampler.py", "MRLogSampler"),
        [str(log), "--sample-size", "20"],
    )
    # (mrjob's parse_output keeps each line's newline in a raw value.)
    assert len(oracle) == 20 and {v.rstrip("\n") for _, v in oracle} <= set(lines)


def test_log_sampler_without_sample_size_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    job = copy_job(mrjob_examples() / "mr_log_sampler.py", tmp_path / "job", renamed=False)
    proc = run_cli(["run", str(job), str(log)], cwd=tmp_path, shuffle_dir=tmp_path / "shuffle")
    assert proc.returncode == 2, proc.stderr
    assert "MRLogSampler: You must specify the --sample-size" in proc.stderr
    assert "Traceback" not in proc.stderr
