"""What mrk8s cannot honour in an mrjob job fails with a message naming it and the fix.

Shell steps and pre-filters, Hadoop JOBCONF and friends, jar and Spark
steps, EMR/Dataproc runners and options; and warnings for what is ignored
because ignoring it cannot change the output. Jobs are built in this
process from mrk8s.mrjob (no aliasing needed); the command-line cases run
``mrk8s run`` in a process of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mrk8s import JobDefinitionError, UsageError
from mrk8s.mrjob.job import MRJob
from mrk8s.mrjob.step import JarStep, MRStep, SparkJarStep, SparkScriptStep, SparkStep
from mrk8s.tasks import aliases
from tests.mrjob.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mrjob")


def _reducer(self: MRJob, key: object, values: object) -> object:
    yield key, 1


def _job(**attrs: object) -> MRJob:
    cls = type("MRSomeJob", (MRJob,), {"reducer": _reducer, **attrs})
    return cls(args=[])  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["mapper_cmd", "combiner_pre_filter", "reducer_cmd"])
def test_command_methods_become_step_commands(name: str) -> None:
    # As in mrjob, a *_cmd / *_pre_filter method returns the command (run: test_commands.py).
    attrs: dict[str, object] = {name: lambda self: "grep -v x"}
    if name.startswith("reducer"):
        attrs["reducer"] = None  # the class's reducer would conflict with reducer_cmd
    (step,) = _job(**attrs).steps()
    assert step[name] == "grep -v x"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mapper_cmd": "cat", "mapper": _reducer},
        {"mapper_cmd": "cat", "mapper_pre_filter": "grep x"},
        {"mapper": _reducer, "mapper_raw": _reducer},
        {"mapper_raw": _reducer, "mapper_pre_filter": "grep x"},
        {"combiner_cmd": "uniq", "combiner": _reducer},
        {"reducer_cmd": "cat", "reducer_init": _reducer},
    ],
)
def test_mrstep_refuses_mrjobs_conflicts(kwargs: dict[str, object]) -> None:
    with pytest.raises(JobDefinitionError, match="an MRStep cannot have both") as info:
        MRStep(**kwargs)
    assert all(name in str(info.value) for name in kwargs)


def test_mrstep_command_must_be_a_command() -> None:
    assert MRStep(mapper_cmd=["grep", "-e", "a b"])["mapper_cmd"] == ["grep", "-e", "a b"]
    with pytest.raises(JobDefinitionError, match=r"mapper_cmd=\.\.\.\) must be a shell command"):
        MRStep(mapper_cmd=3)


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("JOBCONF", {"mapreduce.job.reduces": 1}),
        ("HADOOP_INPUT_FORMAT", "org.apache.hadoop.mapred.lib.NLineInputFormat"),
        ("HADOOP_OUTPUT_FORMAT", "nicknack.MultipleValueOutputFormat"),
        ("LIBJARS", ["nicknack.jar"]),
    ],
)
def test_hadoop_class_attributes(attr: str, value: object) -> None:
    with pytest.raises(JobDefinitionError, match=f"{attr} is Hadoop configuration.*remove it"):
        _job(**{attr: value}).engine_steps()


def test_hadoop_partitioner_and_archives() -> None:
    partitioner = "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner"
    with pytest.raises(JobDefinitionError, match=r"Hadoop partitioner.*define partition"):
        _job(PARTITIONER=partitioner).engine_steps()
    with pytest.raises(JobDefinitionError, match=r"ARCHIVES.*list the directories in DIRS"):
        _job(ARCHIVES=["data.tar.gz"]).engine_steps()


def test_step_jobconf() -> None:
    with pytest.raises(JobDefinitionError, match=r"jobconf=.*does not read.*--reducers"):
        MRStep(reducer=_reducer, jobconf={"mapreduce.job.reduces": 1})


@pytest.mark.parametrize("step", [JarStep, SparkStep, SparkJarStep, SparkScriptStep])
def test_jar_and_spark_steps(step: type) -> None:
    with pytest.raises(JobDefinitionError, match=r"cannot run a \w*(Jar|Spark)\w*Step"):
        step(jar="x.jar", args=[])


def test_spark_method() -> None:
    job = _job(spark=lambda self, input_path, output_path: None)
    with pytest.raises(JobDefinitionError, match=r"defines spark\(\): mrk8s does not run Spark"):
        job.engine_steps()


@pytest.mark.parametrize("runner", ["emr", "dataproc", "hadoop", "spark"])
def test_cluster_runners_in_args(runner: str) -> None:
    with pytest.raises(UsageError, match=f"mrjob's {runner} runner.*--backend local"):
        type(_job())(args=["-r", runner, "in.txt"])


@pytest.mark.parametrize("option", ["--region", "--num-core-instances", "--emr-action-on-failure"])
def test_cloud_options_in_args(option: str) -> None:
    with pytest.raises(UsageError, match=f"{option} is an option of mrjob's EMR/Dataproc"):
        type(_job())(args=[option, "x", "in.txt"])


def test_jobconf_option_in_args() -> None:
    with pytest.raises(UsageError, match="--jobconf sets Hadoop configuration"):
        type(_job())(args=["--jobconf", "a=b", "in.txt"])


def test_aliasing_refused_where_the_real_mrjob_is_loaded() -> None:
    import mrjob  # the test-only dependency: this process has the real package

    assert sys.modules["mrjob"] is mrjob
    with pytest.raises(JobDefinitionError, match="already imported the real mrjob"):
        aliases.install("job.py")
    assert sys.modules["mrjob"] is mrjob  # left alone


# -- through the command line --------------------------------------------------------

JOB = """\
from mrjob.job import MRJob


class MRCount(MRJob):
    def mapper(self, _, line):
        yield "lines", 1

    def reducer(self, key, ones):
        yield key, sum(ones)
"""


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "mr_count.py").write_text(JOB)
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    return tmp_path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "emr"], "-r emr: mrk8s does not run on mrjob's emr runner"),
        (["--runner=dataproc"], "-r dataproc: mrk8s does not run on mrjob's dataproc runner"),
        (["--region", "us-west-2"], "--region is an option of mrjob's EMR/Dataproc"),
        (["--jobconf", "a=b"], "--jobconf sets Hadoop configuration"),
    ],
)
def test_cli_refuses(job_dir: Path, args: list[str], message: str) -> None:
    proc = run_cli(["run", "mr_count.py", "in.txt", *args], cwd=job_dir, shuffle_dir=job_dir / "s")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(120)
def test_cli_warns_for_what_cannot_change_the_output(job_dir: Path) -> None:
    proc = run_cli(
        [
            *["run", "mr_count.py", "in.txt", "-c", "mrjob.conf", "--no-conf", "--no-output"],
            *["--output-dir", "out", "-w", "1"],
        ],
        cwd=job_dir,
        shuffle_dir=job_dir / "s",
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: --conf-path mrjob.conf ignored: mrjob config files are not read" in (
        proc.stderr
    )
    assert "warning: --no-output ignored" in proc.stderr
    assert (job_dir / "out" / "part-00000").exists()
    lines = b"".join(p.read_bytes() for p in sorted((job_dir / "out").glob("part-*")))
    assert lines == b'"lines"\t3\n'


@pytest.mark.timeout(120)
def test_cli_import_of_an_mrjob_module_not_provided(job_dir: Path) -> None:
    (job_dir / "mr_util.py").write_text("from mrjob.hadoop import HadoopJobRunner\n" + JOB)
    proc = run_cli(["run", "mr_util.py", "in.txt"], cwd=job_dir, shuffle_dir=job_dir / "s")
    assert proc.returncode == 2, proc.stderr
    assert "import of mrjob.hadoop: it is not part of mrk8s's mrjob compatibility" in proc.stderr
    assert "mrk8s does not drive Hadoop" in proc.stderr
