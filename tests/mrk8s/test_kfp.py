"""mrk8s as a Kubeflow Pipelines step, run for real by KFP's local runner.

Pipelines are composed with the KFP DSL, compiled with KFP's compiler, loaded
back with KFP's own loader and RUN by ``kfp.local``'s subprocess runner (each
step a real subprocess of KFP's executor, no cluster). Results are checked
against ``collections.Counter`` over the same text.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations at run time.
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

kfp = pytest.importorskip(
    "kfp", reason="the KFP tests need the kfp extra: pip install 'mrk8s[kfp]'"
)

from kfp import compiler, components, dsl, local  # noqa: E402

from mrk8s.kfp import mapreduce_op  # noqa: E402
from mrk8s.kfp.step import by_reference, metrics_of  # noqa: E402
from tests.s3 import S3Bucket  # noqa: E402

# The subprocess runner runs each step with this interpreter, which has mrk8s installed:
# it stands in for the worker image, as KFP warns it does.
pytestmark = pytest.mark.filterwarnings(
    "ignore:You may be attemping to run a task that uses custom:RuntimeWarning"
)

REPO = Path(__file__).resolve().parents[2]
WORDCOUNT = REPO / "examples" / "wordcount.py"
MRK8S = [sys.executable, "-m", "mrk8s.cli"]

TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\n" * 7

# A word count that also counts, so the Metrics artifact has counters to show.
COUNTING_JOB = """
from mrk8s import MapReduce


class CountingWordCount(MapReduce):
    def mapper(self, key, line):
        self.increment_counter("text", "lines", 1)
        for word in line.split():
            self.increment_counter("text", "words", 1)
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


@dsl.component(base_image="python:3.11")
def write_text(text: str, out: dsl.Output[dsl.Dataset]) -> None:
    with open(out.path, "w", encoding="utf-8") as f:
        f.write(text)


@dsl.component(base_image="python:3.11")
def check_counts(text: dsl.Input[dsl.Dataset], counts: dsl.Input[dsl.Dataset]) -> int:
    """Fails the pipeline unless the mrk8s output equals Counter over the text."""
    import collections
    import json
    import os

    with open(text.path, encoding="utf-8") as f:
        expected = collections.Counter(f.read().split())
    got: dict[str, int] = {}
    for name in sorted(os.listdir(counts.path)):
        if name.startswith("part-"):
            with open(os.path.join(counts.path, name), encoding="utf-8") as f:
                for line in f:
                    key, value = line.rstrip("\n").split("\t")
                    got[json.loads(key)] = json.loads(value)
    if got != dict(expected):
        raise ValueError(f"counts differ: {got} != {dict(expected)}")
    return len(got)


def three_steps(script: str, **step: Any) -> Any:
    """Write TEXT, count its words with the mrk8s step (``step``: more of its arguments), check."""

    @dsl.pipeline(name="count-words")
    def pipeline(reducers: int = 3) -> None:
        written = write_text(text=TEXT)
        counted = mapreduce_op(
            script=script, input_dataset=written.outputs["out"], reducers=reducers, **step
        )
        check_counts(text=written.outputs["out"], counts=counted.outputs["output"])

    return pipeline


@pytest.fixture
def local_runner(tmp_path: Path) -> Path:
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def read_parts(directory: Path) -> dict[str, int]:
    got: dict[str, int] = {}
    parts = sorted(directory.glob("part-*"))
    assert parts, f"no part files in {directory}"
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines():
            key, value = line.split("\t")
            got[json.loads(key)] = json.loads(value)
    return got


def task_dir(root: Path, task: str) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run / task


def executor_output(root: Path, task: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((task_dir(root, task) / "executor_output.json").read_text())
    return data


def test_a_three_step_pipeline_compiled_loaded_back_and_run_by_kfp_local(
    local_runner: Path, tmp_path: Path
):
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_JOB)
    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(three_steps(str(script)), str(package))
    loaded = components.load_component_from_file(str(package))

    loaded(reducers=3)

    expected = Counter(TEXT.split())
    output = task_dir(local_runner, "mapreduce") / "output"
    assert read_parts(output) == dict(expected)
    assert (output / "_SUCCESS").exists()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["reducers"] == [3]
    # The Metrics artifact holds the job's counters, checked against the text itself.
    (metrics,) = executor_output(local_runner, "mapreduce")["artifacts"]["metrics"]["artifacts"]
    shown = metrics["metadata"]
    assert shown["counter/text/words"] == sum(expected.values())
    assert shown["counter/text/lines"] == TEXT.count("\n")
    assert shown["step0-reduce/records_out"] == len(expected)
    assert shown == metrics_of(summary)
    # The checking step ran and saw as many words as Counter did.
    checked = executor_output(local_runner, "check-counts")
    assert checked["parameterValues"]["Output"] == len(expected)


def test_mrk8s_kfp_compile_round_trips_and_its_pipeline_runs(local_runner: Path, tmp_path: Path):
    text = tmp_path / "input.txt"
    text.write_text(TEXT)
    package = tmp_path / "wordcount.yaml"
    done = subprocess.run(
        [*MRK8S, "kfp", "compile", str(WORDCOUNT), "-o", str(package), "--input", str(text), "-r2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = components.load_component_from_file(str(package))
    assert loaded.name == "mrk8s-wordcount"
    defaults = {name: spec.default for name, spec in loaded.component_spec.inputs.items()}
    assert set(defaults) == {
        "inputs",
        "reducers",
        "backend",
        "shuffle_dir",
        "output_format",
        "args",
    }
    assert defaults["inputs"] == [str(text)]
    assert defaults["reducers"] == 2

    loaded()

    output = task_dir(local_runner, "mapreduce-urls") / "output"
    assert read_parts(output) == dict(Counter(TEXT.split()))
    assert len(list(output.glob("part-*"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.py"], "missing.py: no such job script"),
        ([str(WORDCOUNT), "--", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        ([str(WORDCOUNT), "--", "--max-attempts", "0"], "--max-attempts 0: give at least 1"),
        ([str(WORDCOUNT), "--backend", "spark"], "invalid choice: 'spark'"),
    ],
)
def test_a_bad_script_or_option_is_refused_before_any_yaml_is_written(
    tmp_path: Path, args: list[str], message: str
):
    package = tmp_path / "out" / "pipeline.yaml"
    package.parent.mkdir()
    done = subprocess.run(
        [*MRK8S, "kfp", "compile", "-o", str(package), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert list(package.parent.iterdir()) == []


def test_mrk8s_kfp_component_writes_the_reusable_component(tmp_path: Path):
    path = tmp_path / "component.yaml"
    done = subprocess.run(
        [*MRK8S, "kfp", "component", "-o", str(path), "--image", "registry.example/mrk8s:test"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = components.load_component_from_file(str(path))
    assert set(loaded.component_spec.outputs) == {"output", "metrics"}
    assert {"script", "script_source", "input_dataset", "inputs", "backend", "args"} <= set(
        loaded.component_spec.inputs
    )
    assert loaded.component_spec.implementation.container.image == "registry.example/mrk8s:test"


def test_artifacts_in_object_storage_are_read_and_written_in_place(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The step's body with artifacts whose URIs are S3 URLs (as KFP gives them on a cluster).

    kfp.local only takes a local pipeline root, so the component's function is
    called directly, with the artifact objects KFP's executor would build. The
    parts land under the output URI; nothing of them is written locally (the
    step's temporary directory, the shuffle directory and the artifact's local
    path are checked).
    """
    import s3fs

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    bucket = s3_bucket.url.removeprefix("s3://")
    fs.pipe(f"{bucket}/upstream/out/part-00000", TEXT.encode())
    fs.pipe(f"{bucket}/upstream/out/_SUCCESS", b"")
    scratch, shuffle = tmp_path / "tmp", tmp_path / "shuffle"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("MRK8S_SHUFFLE_DIR", str(shuffle))
    upstream = dsl.Dataset(name="input_dataset", uri=f"{s3_bucket.url}/upstream/out")
    output = dsl.Dataset(name="output", uri=f"{s3_bucket.url}/run-1/mapreduce/output")
    metrics = dsl.Metrics(name="metrics", uri=f"{s3_bucket.url}/run-1/mapreduce/metrics")
    assert by_reference(output.uri) and by_reference(upstream.uri)

    mapreduce_op.python_func(  # what KFP's executor calls, with these artifacts
        output=output,
        metrics=metrics,
        script=str(WORDCOUNT),
        input_dataset=upstream,
        reducers=2,
        storage_options=s3_bucket.storage_options,
    )

    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/run-1/mapreduce/output"))
    assert names == ["_SUCCESS", "part-00000", "part-00001", "summary.json"]
    got: dict[str, int] = {}
    for part in ("part-00000", "part-00001"):
        for line in fs.cat(f"{bucket}/run-1/mapreduce/output/{part}").decode().splitlines():
            key, value = line.split("\t")
            got[json.loads(key)] = json.loads(value)
    assert got == dict(Counter(TEXT.split()))
    assert metrics.metadata["step0-reduce/records_out"] == len(got)
    assert output.metadata["location"] == output.uri
    local_files = [
        name
        for root in (scratch, shuffle)
        for _, _, files in os.walk(root)
        for name in files
        if name.startswith("part-")
    ]
    assert local_files == []
    assert not os.path.exists(output.path)
