"""The mrk8s components and pipelines, and ``mrk8s kfp compile|component`` (see mrk8s.kfp)."""

# No `from __future__ import annotations`: KFP reads the component's annotations at run time.
import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from kfp import compiler, dsl

from mrk8s.engine.settings import default_image
from mrk8s.errors import UsageError

#: The worker image (``manifests/Dockerfile``) of this release, as for ``--backend k8s``;
#: ``--image`` overrides it.
DEFAULT_IMAGE = default_image()

#: Largest script ``mrk8s kfp compile`` embeds in a pipeline (KFP keeps the
#: whole pipeline spec in its database; a bigger job belongs in the image or a URL).
MAX_EMBEDDED_SCRIPT = 256 << 10


# The component functions. KFP embeds each function's source in the component
# and calls it by name, so each is a plain module-level function whose body
# imports what it uses. kfp.local (2.16) needs every declared input artifact
# connected, so the Dataset input and the script artifact each have a
# component of their own rather than optional inputs.


def mapreduce(
    input_dataset: dsl.Input[dsl.Dataset],
    output: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    script: str = "",
    script_source: str = "",
    inputs: list[str] = [],  # noqa: B006  (KFP reads the default; it is never mutated)
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    storage_options: dict[str, Any] = {},  # noqa: B006
    args: list[str] = [],  # noqa: B006
) -> None:
    """Run an mrk8s job over a Dataset (and URLs); output its directory and its counters."""
    given = dict(locals())
    from mrk8s.kfp.step import run_step

    run_step(**given)


def mapreduce_urls(
    inputs: list[str],
    output: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    script: str = "",
    script_source: str = "",
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    storage_options: dict[str, Any] = {},  # noqa: B006
    args: list[str] = [],  # noqa: B006
) -> None:
    """Run an mrk8s job over URLs (files, directories, globs); output its directory and counters."""
    given = dict(locals())
    from mrk8s.kfp.step import run_step

    run_step(**given)


def mapreduce_script_file(
    script_file: dsl.Input[dsl.Artifact],
    input_dataset: dsl.Input[dsl.Dataset],
    output: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    inputs: list[str] = [],  # noqa: B006
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    storage_options: dict[str, Any] = {},  # noqa: B006
    args: list[str] = [],  # noqa: B006
) -> None:
    """Run the job script an earlier step produced over a Dataset; output directory and counters."""
    given = dict(locals())
    from mrk8s.kfp.step import run_step

    run_step(**given)


def make_component(image: str = DEFAULT_IMAGE, *, over: str = "dataset") -> Any:
    """The mrk8s component with its steps running in ``image``.

    ``over``: ``"dataset"`` (an input Dataset, plus optional URLs), ``"urls"``
    (URLs only) or ``"script_file"`` (the script and the data as artifacts).
    """
    functions = {"dataset": mapreduce, "urls": mapreduce_urls, "script_file": mapreduce_script_file}
    return dsl.component(functions[over], base_image=image)


#: The component over an input Dataset, in the released worker image.
mapreduce_op = make_component()
#: ... over URLs only.
mapreduce_urls_op = make_component(over="urls")
#: ... running a script that an earlier step produced (an Artifact) over a Dataset.
mapreduce_script_file_op = make_component(over="script_file")


def make_pipeline(
    script: str,
    *,
    image: str = DEFAULT_IMAGE,
    inputs: Sequence[str] = (),
    reducers: int = 0,
    backend: str = "local",
    shuffle_dir: str = "",
    output_format: str = "text",
    args: Sequence[str] = (),
) -> Any:
    """A pipeline of one mrk8s step running ``script`` (embedded), its parameters exposed.

    The defaults of the pipeline's parameters are the values given here. The
    script's text is a constant of the step, not a pipeline parameter: KFP
    2.16 writes every parameter's default into the YAML's header comment,
    and a default of several lines breaks out of the comment into the YAML.
    """
    with open(script, encoding="utf-8") as f:
        source = f.read()
    if len(source.encode()) > MAX_EMBEDDED_SCRIPT:
        raise UsageError(
            f"{script} is {len(source.encode())} bytes, more than the {MAX_EMBEDDED_SCRIPT} "
            "that a pipeline embeds: put the script in the image or at a URL and pass it as "
            "the script parameter of the mrk8s component"
        )
    component = make_component(image, over="urls")
    name = "mrk8s-" + os.path.splitext(os.path.basename(script))[0].replace("_", "-").lower()

    @dsl.pipeline(name=name, description=f"mrk8s job {os.path.basename(script)}")  # type: ignore[untyped-decorator]
    def pipeline(
        inputs: list[str] = list(inputs),  # noqa: B006  (read by KFP as the default)
        reducers: int = reducers,
        backend: str = backend,
        shuffle_dir: str = shuffle_dir,
        output_format: str = output_format,
        args: list[str] = list(args),  # noqa: B006
    ) -> None:
        component(
            script_source=source,
            inputs=inputs,
            reducers=reducers,
            backend=backend,
            shuffle_dir=shuffle_dir,
            output_format=output_format,
            args=args,
        )

    return pipeline


def _check_job(script: str, args: Sequence[str]) -> None:
    """Refuse a script or job options that ``mrk8s run`` would refuse, before any YAML exists."""
    if not os.path.isfile(script):
        raise UsageError(f"{script}: no such job script (give the path of a .py file)")
    from mrk8s.cli.commands import parse_run_args

    parse_run_args([script, "-o", "unused", *args])


def main(argv: Sequence[str]) -> int:
    """``mrk8s kfp compile|component``; returns the exit status."""
    p = argparse.ArgumentParser(prog="mrk8s kfp", description="mrk8s in Kubeflow Pipelines")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "compile",
        help="a ready-to-upload pipeline of one mrk8s step",
        description="Compile a pipeline of one mrk8s step running SCRIPT (embedded in the "
        "pipeline). Options after -- are the job's own (as for mrk8s run).",
    )
    c.add_argument("script", help="the job script (a MapReduce subclass)")
    c.add_argument("-o", "--output", required=True, metavar="FILE", help="pipeline YAML to write")
    c.add_argument("--image", default=DEFAULT_IMAGE, help="the step's image (%(default)s)")
    c.add_argument("--input", dest="inputs", action="append", default=[], metavar="URL")
    c.add_argument("-r", "--reducers", type=int, default=0, metavar="R")
    c.add_argument("--backend", choices=("local", "k8s"), default="local")
    c.add_argument("--shuffle-dir", default="", metavar="URL")
    c.add_argument("--output-format", choices=("text", "jsonl", "parquet"), default="text")
    k = sub.add_parser("component", help="the reusable mrk8s component, as YAML")
    k.add_argument("-o", "--output", required=True, metavar="FILE", help="component YAML to write")
    k.add_argument("--image", default=DEFAULT_IMAGE, help="the step's image (%(default)s)")
    k.add_argument(
        "--over",
        choices=("dataset", "urls", "script_file"),
        default="dataset",
        help="the component's inputs: a Dataset (and URLs), URLs only, or the script and the "
        "data as artifacts (default: %(default)s)",
    )
    argv = list(argv)
    job_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, job_args = argv[:cut], argv[cut + 1 :]
    ns = p.parse_args(argv)
    if ns.command == "compile":
        if ns.reducers < 0:
            raise UsageError(f"--reducers {ns.reducers}: give at least 1 (or 0 for the default)")
        _check_job(ns.script, job_args)
        spec = make_pipeline(
            ns.script,
            image=ns.image,
            inputs=ns.inputs,
            reducers=ns.reducers,
            backend=ns.backend,
            shuffle_dir=ns.shuffle_dir,
            output_format=ns.output_format,
            args=job_args,
        )
    else:
        spec = make_component(ns.image, over=ns.over)
    _compile_atomically(spec, ns.output)
    print(f"mrk8s kfp: wrote {ns.output}", file=sys.stderr)
    return 0


def _compile_atomically(spec: Any, path: str) -> None:
    """Compile ``spec`` to ``path`` through a temporary file, so no half-written YAML appears."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mrk8s-kfp-", suffix=".yaml", dir=directory)
    os.close(fd)
    try:
        compiler.Compiler().compile(spec, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
