"""The ``mrk8s`` command line: ``run`` a job, or run one ``worker`` task.

This is an entry point: it is the only place (with the worker entry point)
that configures logging and turns errors into exit codes. A user mistake
(any :class:`mrk8s.UserError`, or a job whose task failed because of one)
prints one clear paragraph and exits 2; other mrk8s errors exit 1; an
unexpected exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from mrk8s._version import __version__
from mrk8s.errors import JobFailedError, MRError, UsageError, UserError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1

RUN_EPILOG = """\
Job options (declared by the job's configure_args) go after the inputs or
after `--`. Sizes accept units: 512MiB, 2GB, 64m.

examples:
  mrk8s run examples/wordcount.py examples/data/sample.txt
  mrk8s run wordcount.py 'logs/*.gz' -o out/ --reducers 8
  mrk8s run top_words.py corpus/ -- --top 20
"""


BENCH_USAGE = """\
usage: mrk8s bench SUBCOMMAND [OPTIONS]

subcommands:
  shuffle   shuffle throughput through the real engine, verified (mrk8s bench shuffle --help)"""


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from mrk8s.engine.settings import default_shuffle_dir

    p.add_argument("-o", "--output", metavar="URL", help="output directory (default: stdout)")
    p.add_argument(
        "--output-format",
        choices=("text", "jsonl", "parquet"),
        default="text",
        help="format of the part files (default: text, i.e. json(key) TAB json(value))",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("-r", "--reducers", type=int, metavar="R", help="reduce tasks per step")
    p.add_argument(
        "-w", "--workers", type=int, metavar="N", help="worker processes (default: CPUs)"
    )
    p.add_argument(
        "--backend",
        default="local",
        help="where tasks run: local, ray or k8s (default: local)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster for --backend ray: auto, host:port or ray://host:port "
        "(default: start a local Ray)",
    )
    k8s = p.add_argument_group("--backend k8s (each stage an Indexed Job; --workers: pods at once)")
    k8s.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig of the cluster (default: the in-cluster config, else $KUBECONFIG "
        "or ~/.kube/config)",
    )
    k8s.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    k8s.add_argument(
        "--namespace", metavar="NS", default="mrk8s", help="namespace (default: %(default)s)"
    )
    k8s.add_argument(
        "--image", metavar="IMG", help="worker image (default: the released mrk8s image)"
    )
    k8s.add_argument(
        "--cpu", metavar="Q", default="1", help="CPU request and limit of a pod (default: 1)"
    )
    k8s.add_argument(
        "--ttl",
        metavar="DURATION",
        default="1h",
        help="how long finished Jobs and pods stay for kubectl (default: %(default)s)",
    )
    k8s.add_argument(
        "--env-from-secret",
        metavar="SECRET",
        action="append",
        default=[],
        help="a Secret whose keys become the pods' environment, e.g. AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY for S3 (repeatable)",
    )
    k8s.add_argument(
        "--node-local-shuffle",
        action="store_true",
        help="map outputs on each node's own disk, served to other nodes by the "
        "mrk8s-shuffle-server DaemonSet (manifests/node-local/); reducers placed where "
        "their data is (default: map outputs under --shuffle-dir)",
    )
    k8s.add_argument(
        "--tasks-per-pod",
        type=int,
        metavar="N",
        help="tasks each pod runs one after another in one process, each committed on "
        "its own (default: as many as keep --workers pods busy, ceil(tasks / --workers); "
        "1 without --workers)",
    )
    k8s.add_argument(
        "--dry-run",
        action="store_true",
        help="print every manifest the job would create, as YAML; needs no cluster",
    )
    p.add_argument(
        "--shuffle-dir",
        metavar="URL",
        default=default_shuffle_dir(),
        help="where map outputs, commit records and the plan live (default: %(default)s)",
    )
    p.add_argument("--job-id", metavar="ID", help="job name; rerun with the same id to resume")
    p.add_argument("--job-class", metavar="NAME", help="which MapReduce subclass of the script")
    p.add_argument(
        "--memory-per-worker",
        metavar="SIZE",
        default="1GiB",
        help="memory budget of a worker: sort buffer and merge (default: %(default)s)",
    )
    p.add_argument(
        "--split-size",
        metavar="SIZE",
        default="128MiB",
        help="largest input split (default: %(default)s)",
    )
    p.add_argument(
        "--max-attempts", type=int, default=3, help="attempts per task before failing (default: 3)"
    )
    p.add_argument(
        "--retry-user-errors", action="store_true", help="also retry tasks whose own code raised"
    )
    p.add_argument(
        "--keep-shuffle", action="store_true", help="keep the job's shuffle data after success"
    )
    p.add_argument(
        "--speculative",
        action="store_true",
        help="give a task running far longer than the rest of its stage a second attempt",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="start the job over even if its --job-id exists with another script or input",
    )
    p.add_argument(
        "--storage-options",
        metavar="JSON",
        default="{}",
        help='fsspec options for every URL, e.g. \'{"endpoint_url": "http://..."}\'',
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _run_parser(job_parser_hook: Any = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mrk8s run",
        description="Run a MapReduce job script.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=job_parser_hook is not None,
    )
    p.add_argument("script", help="Python file defining a MapReduce subclass")
    p.add_argument("inputs", nargs="*", help="input files, directories or globs (default: stdin)")
    _add_run_options(p)
    if job_parser_hook is not None:
        job_parser_hook(p)
    return p


def _kubernetes_settings(args: argparse.Namespace) -> Any:
    """The --backend k8s options as KubernetesSettings (refused with another backend)."""
    from mrk8s.engine.settings import KubernetesSettings, parse_duration

    given = [
        f"--{name.replace('_', '-')}"
        for name in ("kubeconfig", "context", "image")
        if getattr(args, name) is not None
    ]
    if args.env_from_secret:
        given.append("--env-from-secret")
    if args.node_local_shuffle:
        given.append("--node-local-shuffle")
    if args.tasks_per_pod is not None:
        given.append("--tasks-per-pod")
        if args.tasks_per_pod < 1:
            raise UsageError(f"--tasks-per-pod {args.tasks_per_pod}: give 1 or more")
    if given and args.backend != "k8s":
        raise UsageError(f"{', '.join(given)}: for --backend k8s, not --backend {args.backend}")
    options: dict[str, Any] = {}
    if args.image:
        options["image"] = args.image
    ttl = parse_duration(args.ttl, "--ttl")
    if ttl < 0:
        raise UsageError(f"--ttl {args.ttl}: give 0 or more")
    return KubernetesSettings(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        cpu=args.cpu,
        ttl_seconds=ttl,
        env_secrets=tuple(args.env_from_secret),
        dry_run=args.dry_run,
        node_local=args.node_local_shuffle,
        tasks_per_pod=args.tasks_per_pod,
        **options,
    )


def _cmd_run(argv: Sequence[str]) -> int:
    from mrk8s.engine.executors import check_options, make_executor
    from mrk8s.engine.settings import parse_size
    from scheduler.backends.local import LocalExecutor

    argv = _runner_names(list(argv))
    if not argv or argv[0] in ("-h", "--help"):
        _run_parser(lambda p: None).print_help()
        return 0
    # Phase 1: find the script (and --job-class) without knowing the job's options.
    known, _ = _run_parser().parse_known_intermixed_args(
        [a for a in argv if a not in ("-h", "--help")]
    )
    from mrk8s.engine.settings import check_reachable_by_workers

    kubernetes = _kubernetes_settings(known)
    check_reachable_by_workers(known.backend, known.shuffle_dir, known.output)
    if known.dry_run:
        if known.backend != "k8s":
            raise UsageError(f"--dry-run is for --backend k8s, not --backend {known.backend}")
        executor = make_executor(
            "k8s",
            known.workers,
            kubernetes=kubernetes,
            memory_per_worker=parse_size(known.memory_per_worker, "--memory-per-worker"),
        )
        return _run_job(argv, executor)
    check_options(known.backend, speculative=known.speculative)
    # Started before this process loads pyarrow and the job (half a second here), so
    # that the workers' own start-up runs alongside.
    executor = make_executor(
        known.backend,
        known.workers,
        ray_address=known.ray_address,
        script=known.script,
        kubernetes=kubernetes,
        memory_per_worker=parse_size(known.memory_per_worker, "--memory-per-worker"),
    )
    with executor:
        if isinstance(executor, LocalExecutor):
            executor.start()
        return _run_job(argv, executor)


def parse_run_args(argv: list[str]) -> tuple[Any, argparse.Namespace]:
    """``mrk8s run``'s arguments (after ``run``) -> (RunSettings, parsed options), validated.

    Loads the script's job class for its own options; a bad argument exits as
    argparse does (status 2, usage on stderr), a bad value raises UsageError.
    """
    from mrk8s.engine.settings import DEFAULT_SHIP_LIMIT, RunSettings, parse_size
    from mrk8s.tasks import loader

    known, _ = _run_parser().parse_known_intermixed_args(
        [a for a in argv if a not in ("-h", "--help")]
    )
    job_class = loader.load_job_class(known.script, known.job_class)
    argv = job_class.adapt_cli_args(argv)
    job_defaults: dict[str, Any] = {}

    def add_job_options(p: argparse.ArgumentParser) -> None:
        group = p.add_argument_group(f"options of {job_class.__name__}")
        before = {a.dest for a in p._actions}
        job_class().add_job_options(group)  # type: ignore[arg-type]
        for action in p._actions:
            if action.dest not in before:
                job_defaults[action.dest] = action.default

    # Phase 2: parse everything, the job's options included (`--` separates them).
    parser = _run_parser(add_job_options)
    if "--" in argv:
        cut = argv.index("--")
        argv = argv[:cut] + argv[cut + 1 :]
    args = parser.parse_intermixed_args(argv)
    storage_options = _storage_options(args)
    settings = RunSettings(
        script=args.script,
        inputs=tuple(args.inputs),
        output=args.output,
        job_class=args.job_class or job_class.__name__,
        job_args={k: getattr(args, k) for k in job_defaults},
        backend=args.backend,
        ray_address=args.ray_address,
        workers=args.workers,
        reducers=args.reducers,
        shuffle_dir=args.shuffle_dir,
        job_id=args.job_id,
        output_format=args.output_format,
        overwrite=args.overwrite,
        memory_per_worker=parse_size(args.memory_per_worker, "--memory-per-worker"),
        max_split_bytes=parse_size(args.split_size, "--split-size"),
        max_attempts=args.max_attempts,
        retry_user_errors=args.retry_user_errors,
        keep_shuffle=args.keep_shuffle,
        restart=args.restart,
        speculative=args.speculative,
        storage_options=storage_options,
        kubernetes=_kubernetes_settings(args),
        ship_limit=parse_size(os.environ.get("MRK8S_SHIP_LIMIT") or DEFAULT_SHIP_LIMIT),
    )
    _validate(settings)
    return settings, args


def _run_job(argv: list[str], executor: Any) -> int:
    from mrk8s.engine import progress
    from mrk8s.engine.driver import Driver

    settings, args = parse_run_args(argv)
    _setup_logging(args.verbose)
    report = progress.Progress() if args.quiet else progress.for_stream(sys.stderr)
    if settings.kubernetes.dry_run:
        Driver(settings, progress=report).dry_run(executor, sys.stdout)
        return 0
    result = Driver(settings, progress=report).run(executor)
    if args.output and not args.quiet:
        report.message(f"output written to {args.output} ({result.summary['seconds']} s)")
    return 0


def _runner_names(argv: list[str]) -> list[str]:
    """``-r inline``/``-r local`` (mrjob's runner flag) mean ``--backend local``.

    ``-r`` followed by a number stays --reducers; other mrjob runner names are
    refused with a message. Only arguments before ``--`` are read.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in ("-r", "--runner") and i + 1 < len(argv) and not argv[i + 1].isdigit():
            name, i = argv[i + 1], i + 2
        elif arg.startswith("--runner="):
            name, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        from mrk8s.mrjob.options import check_runner_name

        out += ["--backend", check_runner_name(name)]
    return out


def _validate(settings: Any) -> None:
    if settings.reducers is not None and settings.reducers < 1:
        raise UsageError(f"--reducers {settings.reducers}: give at least 1")
    if settings.max_attempts < 1:
        raise UsageError(f"--max-attempts {settings.max_attempts}: give at least 1")
    if settings.max_split_bytes < 1:
        raise UsageError(
            f"--split-size {settings.max_split_bytes} bytes: give a positive size, e.g. 64MiB "
            "(the default is 128MiB)"
        )
    if settings.memory_per_worker < 16 << 20:
        raise UsageError(
            f"--memory-per-worker {settings.memory_per_worker} bytes is too small: give at "
            "least 16MiB"
        )


def _job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from mrk8s.engine.settings import default_shuffle_dir

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("job_id", metavar="JOB_ID", help="the job's --job-id")
    p.add_argument(
        "--shuffle-dir",
        metavar="URL",
        default=default_shuffle_dir(),
        help="the shuffle directory the job ran with (default: %(default)s)",
    )
    p.add_argument("--storage-options", metavar="JSON", default="{}")
    return p


def _cmd_status(argv: Sequence[str]) -> int:
    from mrk8s.cli import jobs, k8s

    parser = _job_parser(
        "mrk8s status",
        "Show a job's progress from its commit records; with --namespace, --context or "
        "--kubeconfig, also its Jobs and pods on Kubernetes.",
    )
    k8s.add_cluster_options(parser)
    args = parser.parse_args(argv)
    on_cluster = k8s.wants_cluster(argv)
    try:
        store, plan = jobs.open_job(args.job_id, args.shuffle_dir, _storage_options(args))
    except UsageError as exc:
        if not on_cluster:
            raise
        # A submitted job may not have written its plan yet, or ran with another shuffle dir.
        print(f"shuffle dir: {exc}")
    else:
        print(jobs.render(plan, jobs.status(store, plan)))
    if on_cluster:
        print(k8s.cluster_status(args))
    return 0


def _cmd_submit(argv: Sequence[str]) -> int:
    from mrk8s.cli import k8s

    return k8s.cmd_submit(argv, _run_parser)


def _cmd_logs(argv: Sequence[str]) -> int:
    from mrk8s.cli import k8s

    return k8s.cmd_logs(argv)


def _cmd_cancel(argv: Sequence[str]) -> int:
    from mrk8s.cli import k8s

    return k8s.cmd_cancel(argv)


def _cmd_clean(argv: Sequence[str]) -> int:
    from mrk8s.cli import jobs

    p = _job_parser("mrk8s clean", "Remove a job's shuffle data.")
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster a --backend ray job ran on, to remove the map outputs it "
        "kept on other machines' disks (those on this machine need none)",
    )
    args = p.parse_args(argv)
    store, plan = jobs.open_job(args.job_id, args.shuffle_dir, _storage_options(args))
    cleaned = jobs.clean(store, plan, ray_address=args.ray_address)
    print(f"removed job {args.job_id} from {args.shuffle_dir}")
    if cleaned.removed:
        print(f"removed its map outputs kept on nodes' disks: {', '.join(cleaned.removed)}")
    for node, (directory, why) in sorted(cleaned.left.items()):
        print(f"could not remove its map outputs on node {node} ({directory}): {why}")
    return 1 if cleaned.left else 0


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    try:
        options = json.loads(args.storage_options)
        if not isinstance(options, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise UsageError(
            f"--storage-options {args.storage_options!r} is not a JSON object ({exc}): write "
            "e.g. '{\"anon\": true}'"
        ) from exc
    return options


def _cmd_bench(argv: Sequence[str]) -> int:
    from mrk8s.bench import shuffle_bench as bench
    from mrk8s.engine import progress

    if not argv or argv[0] in ("-h", "--help"):
        # Without a subcommand there is nothing to run: say what there is, as a usage error.
        print(BENCH_USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] != "shuffle":
        raise UsageError(f"mrk8s bench {argv[0]!r}: the only benchmark is 'shuffle'")
    args = bench.shuffle_parser().parse_args(argv[1:])
    settings = bench.settings_from_args(args, _storage_options(args))
    _setup_logging(False)
    report = progress.Progress() if args.quiet else progress.for_stream(sys.stderr)
    results = bench.run_shuffle_bench(settings, report)
    verified = all(r["verified"] and r.get("output", {}).get("verified", True) for r in results)
    return 0 if verified else bench.EXIT_UNVERIFIED


def _cmd_worker(argv: Sequence[str]) -> int:
    from mrk8s.cli import worker

    return worker.main(argv)


def _cmd_kfp(argv: Sequence[str]) -> int:
    # mrk8s.kfp sits above the CLI (its step runs `mrk8s run`): reached by name.
    import importlib

    try:
        kfp_room = importlib.import_module("mrk8s.kfp.components")
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "kfp":
            raise
        raise UsageError(
            f"mrk8s kfp needs Kubeflow Pipelines: pip install 'mrk8s[kfp]' ({exc})"
        ) from exc
    status: int = kfp_room.main(argv)
    return status


def _cmd_shuffle_server(argv: Sequence[str]) -> int:
    from mrk8s.cli import shuffleserver

    return shuffleserver.main(argv)


def _cmd_gateway(argv: Sequence[str]) -> int:
    # mrk8s.gateway sits above the CLI (its jobs run `mrk8s run`): reached by name.
    import importlib

    try:
        gateway_cli = importlib.import_module("mrk8s.gateway.cli")
        if argv and argv[0] not in ("-h", "--help"):
            importlib.import_module("mrk8s.gateway.app")
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "mrk8s":
            raise
        raise UsageError(
            f"mrk8s gateway needs the web stack: pip install 'mrk8s[gateway]' ({exc})"
        ) from exc
    status: int = gateway_cli.main(argv)
    return status


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="mrk8s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mrk8s`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "run": _cmd_run,
        "status": _cmd_status,
        "clean": _cmd_clean,
        "submit": _cmd_submit,
        "logs": _cmd_logs,
        "cancel": _cmd_cancel,
        "worker": _cmd_worker,
        "bench": _cmd_bench,
        "kfp": _cmd_kfp,
        "shuffle-server": _cmd_shuffle_server,
        "gateway": _cmd_gateway,
    }
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"mrk8s {__version__}: MapReduce with an Arrow shuffle\n\n"
            "usage: mrk8s COMMAND [ARGS]\n\n"
            "commands:\n"
            "  run SCRIPT [INPUT ...]   run a job (mrk8s run --help)\n"
            "  status JOB_ID            a job's progress, attempts, failures, Kubernetes state\n"
            "  clean JOB_ID             remove a job's shuffle data\n"
            "  submit SCRIPT [INPUT ...] run a job's driver in a Kubernetes cluster and return\n"
            "  logs JOB_ID              logs of a Kubernetes job's pods (mrk8s logs -h)\n"
            "  cancel JOB_ID            delete a Kubernetes job's objects\n"
            "  worker --job URL ...     run one task of a job (what a pod runs)\n"
            "  bench shuffle            shuffle throughput, verified (mrk8s bench shuffle -h)\n"
            "  kfp compile|component    mrk8s as a Kubeflow Pipelines step (mrk8s kfp -h)\n"
            "  shuffle-server --root D  serve a node's map outputs over HTTP (a DaemonSet)\n"
            "  gateway serve            the job gateway, a REST service (mrk8s gateway -h)\n"
        )
        return 0
    if argv[0] == "--version":
        print(f"mrk8s {__version__}")
        return 0
    command = commands.get(argv[0])
    if command is None:
        print(
            f"mrk8s: unknown command {argv[0]!r}; commands: {', '.join(commands)}",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    try:
        return command(argv[1:])
    except KeyboardInterrupt as exc:
        # One line: what the job kept (the driver's note) goes on it.
        print("; ".join(["mrk8s: interrupted", *_notes(exc)]), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except JobFailedError as exc:
        _print_error(f"job failed: {exc}", exc)
        return EXIT_USER_ERROR if exc.user_error else EXIT_FAILURE
    except UserError as exc:
        _print_error(f"error: {exc}", exc)
        return EXIT_USER_ERROR
    except MRError as exc:
        _print_error(f"error: {exc}", exc)
        return EXIT_FAILURE


def _notes(exc: BaseException) -> list[str]:
    """The lines the driver added to an error (what the job kept, and why)."""
    return [str(note) for note in getattr(exc, "__notes__", ())]


def _print_error(text: str, exc: BaseException) -> None:
    for line in [text, *_notes(exc)]:
        print(f"mrk8s: {line}", file=sys.stderr)
