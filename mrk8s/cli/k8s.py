"""The commands for jobs on Kubernetes: ``submit``, ``logs``, ``cancel``, and ``status``'s
Kubernetes part.

Parsing and printing only: the cluster side lives in
``scheduler/backends/k8s/`` (``connect``, ``objects``, ``driverjob``), the
one room that imports the ``kubernetes`` client. Each command takes
``--kubeconfig``, ``--context`` and ``-n/--namespace`` (see
``scheduler.backends.k8s.connect`` for the defaults). Errors are
:class:`mrk8s.MRError` subclasses that ``commands.main`` prints as one
paragraph.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mrk8s.errors import UsageError

STAGES = ("driver", "map", "reduce")

SUBMIT_EPILOG = """\
Every `mrk8s run` option works as it does there; the driver runs
`mrk8s run ... --backend k8s` in the cluster, as the mrk8s-driver service
account of manifests/, so this machine may disconnect once the job is
submitted. The script's directory goes with it (at most 900 KiB: data
belongs in the inputs, which the cluster must reach, e.g. s3:// URLs).

examples:
  mrk8s submit wordcount.py s3://logs/2026/ -o s3://out/counts --shuffle-dir s3://scratch/mrk8s
  mrk8s submit top_words.py s3://corpus/ -o s3://out/top -n mrk8s --image reg.example/mrk8s:0.1.0
"""


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--kubeconfig, --context, -n/--namespace, each unless ``p`` has it already (a parser
    that extends ``mrk8s run``'s may get them from there)."""
    have = p._option_string_actions
    if "--kubeconfig" not in have:
        p.add_argument(
            "--kubeconfig",
            metavar="PATH",
            help="kubeconfig file (default: in a pod its service account, else $KUBECONFIG "
            "or ~/.kube/config)",
        )
    if "--context" not in have:
        p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    if "--namespace" not in have:
        p.add_argument(
            "-n",
            "--namespace",
            metavar="NS",
            help="namespace of the job (default: the context's, else mrk8s)",
        )
    elif "-n" not in have:
        # `mrk8s run`'s --namespace, and the short form kubectl users type.
        p.add_argument("-n", dest="namespace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def connect(args: argparse.Namespace) -> Any:
    from scheduler.backends.k8s import connect as k8s_connect

    return k8s_connect.connect(
        kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace
    )


def wants_cluster(argv: Sequence[str]) -> bool:
    """True when a cluster option was given on the command line (``mrk8s status`` then asks
    the cluster too); read from ``argv``, since ``--namespace`` may have a default."""
    options = ("--kubeconfig", "--context", "--namespace", "-n")
    return any(arg.partition("=")[0] in options for arg in argv)


def _job_id_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id (`mrk8s submit` prints it)")
    add_cluster_options(p)
    return p


# -- submit -----------------------------------------------------------------------------


def _submit_parser(run_parser: Callable[[], argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``mrk8s run``'s parser (from ``commands``, which calls in here) with submit's options."""
    p = run_parser()
    p.prog = "mrk8s submit"
    p.description = "Run a job's driver as a Job in a Kubernetes cluster, then return."
    p.epilog = SUBMIT_EPILOG
    p.add_argument("-h", "--help", action="help", help="show this help message and exit")
    add_cluster_options(p)
    return p


#: Options `mrk8s submit` reads and the driver's `mrk8s run` must not get as the user gave
#: them: the driver uses its pod's credentials, and gets the namespace, job id and image
#: explicitly.
_NOT_PASSED = ("--kubeconfig", "--context", "-n", "--namespace", "--job-id", "--image")


def driver_run_args(argv: list[str], script: str) -> tuple[list[str], list[str]]:
    """The user's ``mrk8s run`` arguments for the driver, less the script and what only
    ``submit`` reads, and the job options (from ``--`` on), which go last."""
    out: list[str] = []
    job_options: list[str] = []
    i, seen_script = 0, False
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            job_options = argv[i:]
            break
        name, eq, value = arg.partition("=")
        if name in _NOT_PASSED:
            i += 1 if eq else 2
            continue
        if name == "--backend":
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value != "k8s":
                raise UsageError(
                    f"mrk8s submit runs the job on Kubernetes (--backend k8s), not --backend "
                    f"{value}: leave --backend out, or use `mrk8s run` for another backend"
                )
            i += 1 if eq else 2
            continue
        if not seen_script and arg == script:
            seen_script = True
        else:
            out.append(arg)
        i += 1
    return out, job_options


def cmd_submit(argv: Sequence[str], run_parser: Callable[[], argparse.ArgumentParser]) -> int:
    import os

    from mrk8s.engine.driver import new_job_id
    from mrk8s.engine.settings import default_image, parse_duration
    from scheduler.backends.k8s import driverjob

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _submit_parser(run_parser).print_help()
        return 0
    parser = _submit_parser(run_parser)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, _unknown = parser.parse_known_intermixed_args(argv[:cut])
    if not os.path.isfile(args.script):
        raise UsageError(
            f"mrk8s submit: no job script at {args.script!r}: give the path of a Python file "
            "defining a MapReduce job"
        )
    if getattr(args, "dry_run", False):
        raise UsageError(
            "mrk8s submit --dry-run: submit creates the driver in the cluster; to see the "
            "manifests a job creates, run `mrk8s run ... --backend k8s --dry-run`"
        )
    job_id = args.job_id or new_job_id(args.script)
    image = args.image or default_image()
    # The driver Job stays as long as the stage Jobs do (--ttl of the k8s backend).
    ttl = parse_duration(args.ttl, "--ttl")
    user_args, job_options = driver_run_args(argv, args.script)
    with connect(args) as connection:
        # --backend, --job-id, --namespace and --image made explicit for the driver.
        run_args = [
            *user_args,
            *("--backend", "k8s", "--job-id", job_id, "--namespace", connection.namespace),
            *("--image", image),
            *job_options,
        ]
        submitted = driverjob.submit(
            connection,
            job_id=job_id,
            image=image,
            script=args.script,
            run_args=run_args,
            ttl=ttl,
            env_secrets=tuple(args.env_from_secret),
        )
        where = _where(args, connection.namespace)
        print(
            f"submitted job {submitted.job_id} to namespace {submitted.namespace} "
            f"({connection.source}): driver Job {submitted.driver_job}, "
            f"{submitted.files} file(s) of code in ConfigMap {submitted.code}"
        )
    print(f"follow the driver:  mrk8s logs {job_id}{where} --stage driver --follow")
    print(f"its Kubernetes state: mrk8s status {job_id}{where}")
    print(f"cancel it:          mrk8s cancel {job_id}{where}")
    return 0


def _where(args: argparse.Namespace, namespace: str) -> str:
    """The cluster options to repeat in a follow-up command."""
    out = f" -n {namespace}"
    if args.context:
        out += f" --context {args.context}"
    if args.kubeconfig:
        out += f" --kubeconfig {args.kubeconfig}"
    return out


# -- logs -------------------------------------------------------------------------------


def cmd_logs(argv: Sequence[str]) -> int:
    from scheduler.backends.k8s import objects

    p = _job_id_parser("mrk8s logs", "Print the logs of a job's pods, found by their labels.")
    p.add_argument("--step", type=int, metavar="S", help="only step S (1 is the first)")
    p.add_argument("--stage", choices=STAGES, help="only this stage (driver: the submitted driver)")
    p.add_argument("--index", type=int, metavar="I", help="only task I of the stage (from 0)")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing as the pods write, until they end",
    )
    args = p.parse_args(argv)
    if args.step is not None and args.step < 1:
        raise UsageError(f"--step {args.step}: steps count from 1, as `mrk8s status` shows them")
    with connect(args) as connection:
        state = objects.find(connection, args.job_id)
        step = None if args.step is None else args.step - 1
        pods = objects.select_pods(state, step=step, stage=args.stage, index=args.index)
        if not pods:
            raise UsageError(
                f"job {args.job_id} has no pod{_selection(args)} in namespace "
                f"{connection.namespace} (its pods: {_pod_summary(state)})"
            )
        for pod in pods:
            if len(pods) > 1:
                print(f"==> {pod.name} ({_describe(pod)}) <==", flush=True)
            if args.follow:
                for chunk in objects.follow_log(connection, pod.name):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                text = objects.read_log(connection, pod.name)
                sys.stdout.write("(not started yet)\n" if text is None else text)
    return 0


def _selection(args: argparse.Namespace) -> str:
    parts = []
    if args.step is not None:
        parts.append(f"step {args.step}")
    if args.stage:
        parts.append(f"stage {args.stage}")
    if args.index is not None:
        parts.append(f"index {args.index}")
    return f" of {', '.join(parts)}" if parts else ""


def _describe(pod: Any) -> str:
    what = pod.stage or "?"
    if pod.step is not None:
        what = f"step {pod.step + 1} {what}"
    if len(pod.tasks) > 1:
        what += f" tasks {', '.join(map(str, pod.tasks))}"
    elif pod.index is not None:
        what += f" task {pod.index}"
    return f"{what}, {pod.phase}" + (f" on {pod.node}" if pod.node else "")


def _pod_summary(state: Any) -> str:
    if not state.pods:
        return "none"
    return "; ".join(f"{p.name} ({_describe(p)})" for p in state.pods[:10])


# -- status -----------------------------------------------------------------------------


def render_state(state: Any) -> str:
    """The Kubernetes part of ``mrk8s status``: the owner, each Job, pods by phase."""
    lines = [f"kubernetes: namespace {state.namespace}, owner ConfigMap {state.owner or '(none)'}"]
    if state.jobs:
        lines.append(f"  {'Job':<44}{'state':<10}{'done':>8}{'active':>8}{'failed':>8}")
        for job in state.jobs:
            lines.append(
                f"  {job.name:<44}{job.state:<10}{f'{job.succeeded}/{job.completions}':>8}"
                f"{job.active:>8}{job.failed:>8}"
            )
    else:
        lines.append("  no Jobs")
    phases = state.pods_by_phase()
    pods = ", ".join(f"{phase} {n}" for phase, n in sorted(phases.items())) or "none"
    lines.append(f"  pods: {pods}")
    return "\n".join(lines)


def cluster_status(args: argparse.Namespace) -> str:
    from scheduler.backends.k8s import objects

    with connect(args) as connection:
        return render_state(objects.find(connection, args.job_id))


# -- cancel -----------------------------------------------------------------------------


def cmd_cancel(argv: Sequence[str]) -> int:
    from scheduler.backends.k8s import objects

    p = _job_id_parser(
        "mrk8s cancel",
        "Delete a job's Kubernetes objects: its owner ConfigMap, with background propagation "
        "(the garbage collector removes its Jobs and their pods).",
    )
    args = p.parse_args(argv)
    with connect(args) as connection:
        done = objects.cancel(connection, args.job_id)
    if done.owner:
        head = (
            f"cancelled job {args.job_id} in namespace {connection.namespace}: deleted ConfigMap "
            f"{done.owner} (background propagation)"
        )
    else:
        head = f"cancelled job {args.job_id} in namespace {connection.namespace} (no owner object)"
    jobs = ", ".join(done.jobs) if done.jobs else "none"
    print(f"{head}; Jobs deleted with it: {jobs}; pods: {done.pods}")
    print("its shuffle data stays: `mrk8s clean JOB_ID --shuffle-dir URL` removes it")
    return 0
