"""Every example mrjob 0.7.4 ships, unedited, on mrk8s against ``python EXAMPLE.py -r local``.

The test enumerates the installed package's ``mrjob/examples/`` directory:
each ``.py`` file there is either run (:data:`RUNS`, with inputs built for
it here, small and deterministic by seed) or excluded with its reason
(:data:`EXCLUDED`), and a new file in a later mrjob fails the test until it
is sorted into one of them. A run copies the script (bytes unchanged, with
the support files mrjob ships beside it) into a temporary directory and runs
it twice on the same inputs and options: ``mrk8s run`` (2 workers, 3
reducers, several map tasks) and mrjob's own local runner in a subprocess
(the oracle). Their output lines must be equal as multisets; where a job
writes floats its lines are compared parsed, floats rounded to 9 significant
digits (the order in which a reducer adds them differs between runners).
"""

from __future__ import annotations

import collections
import gc
import gzip
import io
import json
import random
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.mrjob.conftest import mrjob_examples, mrjob_local, run_cli

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(300),
]

#: Examples not run, and why (each needs something mrk8s does not run).
EXCLUDED = {
    "__init__.py": "the package's marker, not a job",
    "mr_jar_step_example.py": "a JarStep: runs a Hadoop jar (hadoop-mapreduce-examples.jar)",
    "mr_nick_nack.py": "HADOOP_OUTPUT_FORMAT and LIBJARS: a Java output format from a jar",
    "mr_nick_nack_input_format.py": "HADOOP_INPUT_FORMAT from a jar (and mr_nick_nack's jar)",
    "mr_spark_most_used_word.py": "a spark() step: needs Spark (pyspark)",
    "mr_spark_wordcount.py": "a spark() step: needs Spark (pyspark)",
    "mr_spark_wordcount_script.py": "a SparkScriptStep: needs Spark",
    "mr_sparkaboom.py": "a spark() step: needs Spark (pyspark)",
    "spark_wordcount_script.py": "a Spark script, not an MRJob",
}

Inputs = Callable[[Path, random.Random], list[Path]]

#: mrk8s's own options: two workers, three reducers, several map tasks per file.
MRK8S_OPTIONS = ["-w", "2", "--reducers", "3", "--split-size", "4KiB", "-q"]


@dataclass(frozen=True)
class Run:
    """How to run one example: its inputs, its own options, how to compare."""

    inputs: Inputs
    args: list[str] = field(default_factory=list)
    #: Support files mrjob ships beside the example that it reads.
    extra: list[str] = field(default_factory=list)
    #: Compare parsed JSON lines with floats rounded (else the lines as they are).
    floats: bool = False
    #: The job fails by design (mr_boom): both runners fail and output nothing.
    fails: bool = False


# -- inputs, one builder per kind of example ---------------------------------------------

WORDS = [
    "the",
    "and",
    "of",
    "a",
    "to",
    "is",
    "you",
    "unusual",
    "future",
    "under",
    "run",
    "sun",
    "blue",
    "fun",
    "use",
    "truth",
    "quiet",
]


def _text(d: Path, rng: random.Random) -> list[Path]:
    """Two text files of words (stop words, u-words, capitals, punctuation)."""
    paths = []
    for i in range(2):
        lines = []
        for _ in range(1500):
            words = [rng.choice(WORDS) for _ in range(rng.randint(0, 9))]
            words += [f"w{min(int(rng.paretovariate(1.1)), 60)}" for _ in range(3)]
            rng.shuffle(words)
            lines.append(" ".join(w.capitalize() if rng.random() < 0.1 else w for w in words))
            if rng.random() < 0.1:
                lines[-1] += ", said Úrsula."
        p = d / f"text{i}.txt"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def _gzipped_text(d: Path, rng: random.Random) -> list[Path]:
    """Compressed files: one map task each under both runners (mapper_final counts per task)."""
    paths = []
    for p in _text(d, rng):
        gz = p.with_suffix(".txt.gz")
        gz.write_bytes(gzip.compress(p.read_bytes(), mtime=0))
        p.unlink()
        paths.append(gz)
    return paths


def _log(d: Path, rng: random.Random) -> list[Path]:
    """Log lines, fewer than --sample-size: the sample is then the whole log."""
    p = d / "access.log"
    lines = [
        f"2026-12-05T03:{i // 60:02d}:{i % 60:02d} {rng.choice(['GET', 'POST'])} "
        f"/item/{rng.randint(1, 500)} {rng.choice([200, 200, 404, 500])} {rng.random():.4f}s"
        for i in range(90)
    ]
    p.write_text("\n".join(lines) + "\n")
    return [p]


CATEGORIES = {
    "animals": [
        "puppy",
        "kitten",
        "rabbit",
        "mouse",
        "bear",
        "lion",
        "tail",
        "paws",
        "fur",
        "whiskers",
    ],
    "america": [
        "liberty",
        "states",
        "prairie",
        "union",
        "democracy",
        "freedom",
        "west",
        "pioneers",
    ],
}
COMMON = [
    "the",
    "morning",
    "light",
    "over",
    "the",
    "hill",
    "and",
    "the",
    "quiet",
    "road",
    "home",
    "again",
]


def _documents(d: Path, rng: random.Random) -> list[Path]:
    """A small labelled document set, named as mr_text_classifier wants: id-cat-not_cat.txt."""
    docs = d / "docs"
    docs.mkdir()
    paths = []
    for i in range(14):
        cat = rng.choice(sorted(CATEGORIES))
        other = next(c for c in sorted(CATEGORIES) if c != cat)
        label = rng.choice([f"-{cat}", f"-{cat}-not_{other}", ""])
        words = [
            rng.choice(CATEGORIES[cat]) if rng.random() < 0.4 else rng.choice(COMMON)
            for _ in range(rng.randint(30, 80))
        ]
        lines = [" ".join(words[j : j + 9]) + "." for j in range(0, len(words), 9)]
        p = docs / f"doc{i:02d}{label}.txt"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def _wet(d: Path, rng: random.Random) -> list[Path]:
    """Two Common Crawl style WET files (warcio): plain-text pages with phone numbers."""
    # warcio leaves the temporary files it spools payloads to for the garbage collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        paths = _write_wet(d, rng)
        gc.collect()
    return paths


def _write_wet(d: Path, rng: random.Random) -> list[Path]:
    from warcio.warcwriter import WARCWriter

    hosts = [f"www.shop{i}.example.com" for i in range(6)] + ["directory.example.org"]
    phones = [f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"]
    phones += [f"({rng.randint(201, 989)}) {rng.randint(200, 999)}.{rng.randint(1000, 9999)}"]
    phones += [f"1 {rng.randint(201, 989)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}"]
    phones += [f"{rng.randint(201, 989)}.{rng.randint(200, 999)}.{rng.randint(1000, 9999)}"]
    paths = []
    for n in range(2):
        out = io.BytesIO()
        writer = WARCWriter(out, gzip=False)
        for r in range(25):
            host = rng.choice(hosts)
            url = f"http://{host}/{rng.choice(['contact', 'about', 'store/locations'])}"
            if r % 5 == 0:
                url += f"?page={r}"
            text = " ".join(
                rng.choice([*phones, "call us", "open daily", "Main St."]) for _ in range(8)
            )
            kind = "text/plain" if r % 7 else "text/html"
            record = writer.create_warc_record(
                url,
                "conversion",
                payload=io.BytesIO(text.encode()),
                warc_headers_dict={"Content-Type": kind},
            )
            writer.write_record(record)
        p = d / f"crawl-{n}.warc.wet"
        p.write_bytes(out.getvalue())
        paths.append(p)
    return paths


RUNS: dict[str, Run] = {
    "mr_boom.py": Run(_text, fails=True),  # "A job that always fails"
    "mr_count_lines_by_file.py": Run(_text),
    "mr_count_lines_right.py": Run(_text),
    "mr_count_lines_wrong.py": Run(_gzipped_text),
    "mr_grep.py": Run(_log, args=["-e", " 404 "]),
    "mr_log_sampler.py": Run(_log, args=["--sample-size", "100"]),
    "mr_most_used_word.py": Run(_text, extra=["stop_words.txt"]),
    "mr_next_word_stats.py": Run(_text),
    "mr_phone_to_url.py": Run(_wet),
    "mr_text_classifier.py": Run(_documents, floats=True),
    "mr_wc.py": Run(_text),
    "mr_word_freq_count.py": Run(_text),
    "mr_words_containing_u_freq_count.py": Run(_text),
}


def test_every_example_is_run_or_excluded_with_a_reason() -> None:
    shipped = {p.name for p in mrjob_examples().glob("*.py")}
    assert shipped == set(RUNS) | set(EXCLUDED)
    assert not set(RUNS) & set(EXCLUDED)
    for name in ("mr_grep.py", "mr_log_sampler.py", "mr_text_classifier.py"):
        assert name in RUNS
    assert {"mr_phone_to_url.py", "mr_words_containing_u_freq_count.py"} <= set(RUNS)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}") + 0.0
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _comparable(lines: list[bytes], floats: bool) -> collections.Counter[Any]:
    if not floats:
        return collections.Counter(lines)
    parsed = []
    for line in lines:
        key, _, value = line.partition(b"\t")
        record = [_rounded(json.loads(key)), _rounded(json.loads(value))]
        parsed.append(json.dumps(record, sort_keys=True))
    return collections.Counter(parsed)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_unedited_as_mrjobs_local_runner(tmp_path: Path, name: str) -> None:
    run = RUNS[name]
    examples = mrjob_examples()
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    for file in [name, *run.extra]:
        shutil.copy(examples / file, job_dir / file)
    script = job_dir / name
    assert script.read_bytes() == (examples / name).read_bytes()  # unedited
    data = tmp_path / "data"
    data.mkdir()
    inputs = [str(p) for p in run.inputs(data, random.Random(f"{name}-19"))]

    proc = run_cli(
        ["run", str(script), *inputs, *run.args, *MRK8S_OPTIONS],
        cwd=tmp_path,
        shuffle_dir=tmp_path / "shuffle",
    )
    if run.fails:
        assert proc.returncode == 2 and proc.stdout == ""
        assert "mapper_init raised Exception: BOOM" in proc.stderr
        with pytest.raises(AssertionError, match="BOOM"):
            mrjob_local(script, inputs, cwd=tmp_path)
        return
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.encode().splitlines()
    expected = mrjob_local(script, [*inputs, *run.args], cwd=tmp_path)
    assert expected, "the oracle gave nothing: the inputs do not suit the example"
    assert _comparable(got, run.floats) == _comparable(expected, run.floats)
