"""mrjob's runner options, in mrk8s's terms.

mrjob jobs are run with runner options mixed into their arguments
(``-r inline``, ``--output-dir``, ``--conf-path``, EMR and Dataproc
settings). This module declares the ones ``MRJob(args=[...])`` accepts,
rewrites the ones ``mrk8s run`` can honour into its own options
(:func:`translate_cli_args`, through :meth:`mrk8s.MapReduce.adapt_cli_args`),
and refuses the rest with a message. ``-r NAME`` itself is read by
``mrk8s run`` (see :func:`mrk8s.cli.commands._runner_names`), since there ``-r`` also
means ``--reducers``.
"""

from __future__ import annotations

import argparse
import sys

from mrk8s.errors import UsageError

#: mrjob runners that run on this machine: both become mrk8s's local backend.
LOCAL_RUNNERS = ("inline", "local")
#: mrjob runners for clusters mrk8s does not drive.
CLUSTER_RUNNERS = ("hadoop", "emr", "dataproc", "spark")

#: Option prefixes and names of mrjob's cloud runners (EMR, Dataproc) and of
#: its Hadoop settings.
_CLOUD_PREFIXES = ("--emr-", "--ec2-", "--s3-", "--gcs-", "--gcp-", "--cloud-", "--aws-")
_CLOUD_OPTIONS = frozenset(
    {
        "--region",
        "--zone",
        "--cluster-id",
        "--instance-type",
        "--core-instance-type",
        "--master-instance-type",
        "--task-instance-type",
        "--num-core-instances",
        "--num-task-instances",
        "--image-id",
        "--image-version",
        "--release-label",
        "--bootstrap",
        "--bootstrap-action",
        "--bootstrap-mrjob",
        "--max-mins-idle",
        "--project-id",
        "--subnet",
        "--iam-instance-profile",
        "--iam-service-role",
        "--tag",
        "--hadoop-streaming-jar",
        "--hadoop-bin",
        "--libjar",
        "--libjars",
        "--spark-submit-bin",
        "--jobconf",
        "--archives",
        "--setup",
        "--py-files",
    }
)


def refuse(option: str) -> UsageError:
    """The error for an mrjob cluster or Hadoop option."""
    if option == "--jobconf":
        return UsageError(
            "--jobconf sets Hadoop configuration, which mrk8s does not read: remove it "
            "(choose reducers with --reducers, workers with --workers)"
        )
    return UsageError(
        f"{option} is an option of mrjob's EMR/Dataproc/Hadoop runners, which mrk8s does not "
        "use: remove it; mrk8s runs the job itself (--backend local; Ray and Kubernetes "
        "backends are planned) and reads inputs from any fsspec URL (s3://, gs://)"
    )


def _is_cloud(option: str) -> bool:
    name = option.split("=", 1)[0]
    return name in _CLOUD_OPTIONS or name.startswith(_CLOUD_PREFIXES)


def check_runner_name(name: str) -> str:
    """mrk8s's backend for an mrjob runner name."""
    if name in LOCAL_RUNNERS:
        return "local"
    if name in CLUSTER_RUNNERS:
        raise UsageError(
            f"-r {name}: mrk8s does not run on mrjob's {name} runner; it runs the job itself: "
            "use -r inline, -r local or --backend local (Ray and Kubernetes backends are "
            "planned), and read inputs from S3 or elsewhere by giving their URLs"
        )
    raise UsageError(f"-r {name!r} is not an mrjob runner name mrk8s knows: use inline or local")


def _warn(message: str) -> None:
    print(f"mrk8s: warning: {message}", file=sys.stderr, flush=True)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """What ``MRJob(args=[...])`` accepts besides the job's own options."""
    parser.add_argument("args", nargs="*", help="input files (default: stdin)")
    parser.add_argument("-r", "--runner", default="inline", help="inline or local (both: mrk8s)")
    parser.add_argument("-o", "--output-dir", dest="output_dir", help="output directory")
    parser.add_argument("--no-output", dest="no_output", action="store_true")
    parser.add_argument("-c", "--conf-path", dest="conf_paths", action="append", default=[])
    parser.add_argument("--no-conf", dest="no_conf", action="store_true")
    parser.add_argument("--reducers", type=int, help="mrk8s: reduce tasks per step")
    parser.add_argument("--workers", type=int, help="mrk8s: worker processes")
    parser.add_argument("--backend", help="mrk8s: where tasks run (default: local)")
    parser.add_argument("--shuffle-dir", dest="shuffle_dir", help="mrk8s: shuffle directory")


def check_args(args: list[str]) -> None:
    """Refuse cluster options in ``MRJob(args=[...])`` before argparse calls them unknown."""
    for arg in args:
        if arg == "--":
            return
        if arg.startswith("--") and _is_cloud(arg):
            raise refuse(arg.split("=", 1)[0])


def check_runner_args(parsed: argparse.Namespace) -> None:
    """Validate the runner options ``MRJob(args=[...])`` parsed."""
    check_runner_name(parsed.runner)
    if parsed.conf_paths:
        _warn(f"-c/--conf-path {', '.join(parsed.conf_paths)}: mrjob config files are not read")


def translate_cli_args(argv: list[str]) -> list[str]:
    """``mrk8s run`` arguments with mrjob's runner options rewritten or refused.

    ``--output-dir D`` becomes ``-o D``; ``--no-conf`` is dropped (mrk8s reads
    no mrjob config); ``-c/--conf-path`` and ``--no-output`` are dropped with a
    warning; cluster and Hadoop options are refused. Arguments after ``--``
    are the job's own and stay as they are.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            out.extend(argv[i:])
            break
        if name == "--output-dir":
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            out += ["-o", value]
        elif arg == "--no-conf":
            pass
        elif arg == "--no-output":
            _warn("--no-output ignored: mrk8s prints results only when no -o/--output-dir is given")
        elif name in ("-c", "--conf-path"):
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            _warn(f"--conf-path {value} ignored: mrjob config files are not read")
        elif arg.startswith("--") and _is_cloud(arg):
            raise refuse(name)
        else:
            out.append(arg)
        i += 1
    return out
