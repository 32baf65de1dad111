"""``mrk8s worker``: run one task of a job, as a Kubernetes pod runs it.

    mrk8s worker --job URL --step S --stage map|reduce [--index I]

``--index`` defaults to ``$JOB_COMPLETION_INDEX`` (set by an Indexed Job),
mapped through ``$MRK8S_INDEX_MAP`` when the Job runs only some of the
stage's tasks (see :mod:`scheduler.backends.k8s.indexmap`). When the map
gives a pod a batch of tasks (``--tasks-per-pod``), they run one after
another in this one process; a task that committed before (an earlier
attempt of the pod) is skipped, and the first that fails ends the pod.
``--attempt``
defaults to ``$MRK8S_ATTEMPT``, else to one more than the Job controller's
failure counts of the index (``$MRK8S_INDEX_FAILURES`` and
``$MRK8S_INDEX_IGNORED_FAILURES``, from the pod's annotations), so a retried
pod never overwrites an earlier attempt's output. A failed task ends with one
line on stderr, ``mrk8s worker: task I of step S STAGE failed (KIND):
MESSAGE``, which the Kubernetes backend reads back from the pod's log. The
task body is the same :func:`mrk8s.tasks.run.run_task` that the local
backend's long-lived workers call. Exit codes: 0 done; 2 a user error (do not
retry: the pod failure policy fails the job at once); 1 anything else (retry).
Each task done prints a JSON line on stdout: its ``index``, ``records_out``,
``seconds`` (its time in this process) and ``after_process_start`` (seconds
from the process's start, as the kernel counts it, to the task's start: for
the first task, what the interpreter, the imports and the storage clients
cost the pod).
With ``$MRK8S_SHUFFLE_SERVERS`` set, a reducer reads map outputs kept on
other nodes' disks from their shuffle servers (:mod:`shuffle.httpfs`).
``s3://`` goes through Arrow's own S3 client when ``$MRK8S_S3_CLIENT`` is
``arrow`` (:mod:`shuffle.s3native`): a task process then builds no botocore
client stack for its few requests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from scheduler.stage import TaskError

EXIT_OK = 0
EXIT_RETRY = 1
EXIT_USER_ERROR = 2


def _indexes(arg: int | None, environ: Mapping[str, str]) -> list[int]:
    if arg is not None:
        return [arg]
    value = environ.get("JOB_COMPLETION_INDEX")
    if value is None:
        raise SystemExit(
            "mrk8s worker: no --index given and $JOB_COMPLETION_INDEX is not set: pass "
            "--index I (an Indexed Job sets the variable)"
        )
    from scheduler.backends.k8s import indexmap

    spec = environ.get(indexmap.ENV)
    return indexmap.batch(spec, int(value)) if spec else [int(value)]


def _attempt(environ: Mapping[str, str]) -> int:
    if environ.get("MRK8S_ATTEMPT"):
        return int(environ["MRK8S_ATTEMPT"])
    failed = int(environ.get("MRK8S_INDEX_FAILURES") or 0)
    ignored = int(environ.get("MRK8S_INDEX_IGNORED_FAILURES") or 0)
    return 1 + failed + ignored


def _process_age() -> float | None:
    """Seconds since this process started (its start time in /proc, against the
    same boot clock), or None where there is no /proc."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    p = argparse.ArgumentParser(prog="mrk8s worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--job", required=True, metavar="URL", help="the job's directory URL")
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--stage", choices=("map", "reduce"), required=True)
    p.add_argument("--index", type=int, help="task index (default: $JOB_COMPLETION_INDEX)")
    p.add_argument("--attempt", type=int, default=_attempt(environ))
    p.add_argument("--storage-options", default=environ.get("MRK8S_STORAGE_OPTIONS", "{}"))
    args = p.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, format="mrk8s %(levelname)s %(name)s: %(message)s")
    indexes = _indexes(args.index, environ)
    payload = {
        "job_dir": args.job,
        "storage_options": json.loads(args.storage_options),
        "step": args.step,
        "stage": args.stage,
    }
    from mrk8s.tasks.run import run_task
    from shuffle import httpfs

    # Node-local shuffle on Kubernetes: other nodes' map outputs come from
    # their shuffle servers (the backend names them in the pod's environment).
    httpfs.install_from_env(environ)
    for n, index in enumerate(indexes, 1):
        if len(indexes) > 1:
            print(
                f"mrk8s worker: task {index} of step {args.step} {args.stage} "
                f"({n} of {len(indexes)} in this pod)",
                file=sys.stderr,
                flush=True,
            )
        began, age = time.perf_counter(), _process_age()
        try:
            result = run_task(payload, index, args.attempt)
        except Exception as exc:
            error = TaskError.from_exception(exc)
            print(
                f"mrk8s worker: task {index} of step {args.step} {args.stage} failed "
                f"({error.kind}): {error.message}",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR if error.user_error else EXIT_RETRY
        line: dict[str, object] = {
            "index": index,
            "records_out": result.get("records_out", 0),
            "seconds": round(time.perf_counter() - began, 4),
        }
        if age is not None:
            line["after_process_start"] = round(age, 3)
        if int(result.get("attempt") or args.attempt) != args.attempt:
            line["skipped"] = f"committed by attempt {result.get('attempt')}"
        print(json.dumps(line), flush=True)
    return EXIT_OK
