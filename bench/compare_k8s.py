"""The Kubernetes backend against the local backend: the same shuffle, both shuffle modes.

    python -m bench.compare_k8s [--size 1GiB] [--repeat 3] [--maps 4] [--reducers 4]

Starts the test cluster (tests/cluster: the real control plane and the node
agent that runs pods as local processes, three nodes; build it first with
``make tests/cluster/bin/controlplane``) and an S3 protocol server on loopback
(moto, in a process of its own), then runs ``mrk8s bench shuffle`` (the
same generated rows, the same maps and reducers, every partition verified)
``--repeat`` times for each contestant, interleaved in a fresh seeded order
each round (:mod:`bench.order`):

- ``local``: ``--backend local``, map outputs on local disk (two workers);
- ``local-s3``: ``--backend local`` with the shuffle under the S3 server, so
  the object-store mode below is compared with the same work;
- ``k8s-s3``: ``--backend k8s``, object-store mode (map outputs, commit
  records and the plan in the S3 server);
- ``k8s-nodelocal``: ``--backend k8s --node-local-shuffle``, map outputs on
  each node's own directory, served across nodes by the shuffle-server
  DaemonSet; the plan and commit records in the S3 server.

The k8s contestants run with ``--workers 2`` (``--k8s-workers``), the local
backend's two workers: two pods of a stage at once, each running its batch of
``ceil(tasks / 2)`` tasks in one process (``--tasks-per-pod``'s default).

Each is ``mrk8s bench shuffle``'s own run (its parser and run function, in
this process, so the answer to verify against is computed once): an
unmeasured warm-up job, then one measured job; ``seconds`` is the map plus
the reduce stage as the driver timed them. For the Kubernetes runs a watch
on the namespace's task pods notes, on this machine's clock, when each pod
appeared, was reported running (its process started) and ended; with the
stage's start (the driver's) and the task's own time (its commit record)
that splits each pod's life into: Job to pod, pod to process started,
process life, of which the task itself; the rest of the process life is the
interpreter's start, imports and exit. Each pod's log (``mrk8s worker``'s line
per task: its seconds, and when it began in the process's life) splits the
process life further: ``start_up`` (the process's start, as the kernel counts
it, to its first task: interpreter, imports, storage clients), ``tasks_wall``
and ``exit_and_report`` (the last task's end to the watch seeing the pod
ended: interpreter exit, the node agent's report). The node agent's own timestamps are
whole seconds, as a kubelet's are, and are kept beside them.

The pods run in their own virtual environment, ``bench/.image-venv`` (built
on first use, ignored by git): ``pip install .[s3,k8s]`` of this tree, the
extras manifests/Dockerfile installs and nothing else, so the node agent
(which runs pods as local processes, not from the image) does not add the
import cost of the test suite's venv (httpx, rich, click, ray, kfp...) that
a real pod would not pay. Its packages are installed again when
pyproject.toml changes; mrk8s itself is reinstalled from the tree on every
invocation. ``--pod-venv ''`` runs the pods with this interpreter instead.
``--pod-s3-client`` sets ``MRK8S_S3_CLIENT`` in the pods: ``arrow`` (the
default, as the image sets it: Arrow's own S3 client, :mod:`shuffle.s3native`)
or ``s3fs``.

Prints one JSON line per run, then the medians and ratios; writes
``bench/results/compare_k8s.json`` (with the load average before and after
each run) and a chart ``compare_k8s.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.order import run_order
from mrk8s.engine.progress import Progress
from scheduler.stage import TaskEvent

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The pods' environment: what the worker image installs (manifests/Dockerfile).
IMAGE_VENV = HERE / ".image-venv"
IMAGE_EXTRAS = "s3,k8s"

CONTESTANTS = ("local", "local-s3", "k8s-s3", "k8s-nodelocal")
NAMESPACE = "bench"
SECRET = "s3-credentials"
BUCKET = "bench"
#: Dummy credentials of the loopback S3 server.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: What each run reports from its ``mrk8s bench shuffle`` line.
KEYS = (
    "job_id", "seconds", "map_seconds", "reduce_seconds", "wall_seconds", "rows", "bytes",
    "shuffle_bytes", "shuffle_bytes_remote", "locality", "locality_best", "verified",
    "problems", "peak_rss_max",
)  # fmt: skip


def _stamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class PodClock:
    """Watches the task pods of a namespace and notes, on this machine's clock, when each
    was first seen, first reported running and first reported ended."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}  # by pod name
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pod-clock", daemon=True)

    def start(self) -> PodClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        import kubernetes

        from scheduler.backends.k8s import names

        core = kubernetes.client.CoreV1Api(self.api)
        version = None
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=names.JOB_ID_LABEL,
                    resource_version=version,
                    timeout_seconds=30,
                ):
                    self._see(event["object"], time.time())
                    version = event["object"].metadata.resource_version
            except Exception as exc:  # a 410 or a dropped connection: list again
                logging.getLogger(__name__).info("pod watch: %s; again", exc)
                version = None

    def _see(self, pod: Any, now: float) -> None:
        phase = pod.status.phase if pod.status else None
        with self.lock:
            seen = self.pods.setdefault(pod.metadata.name, {"seen": now})
            seen["pod"] = pod
            if phase in ("Running", "Succeeded", "Failed"):
                seen.setdefault("running", now)
            if phase in ("Succeeded", "Failed"):
                seen.setdefault("ended", now)

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        from scheduler.backends.k8s import names

        with self.lock:
            return [
                dict(p)
                for p in self.pods.values()
                if (p["pod"].metadata.labels or {}).get(names.JOB_ID_LABEL) == job_id
            ]


class StageClock(Progress):
    """Notes when each stage started (the driver's clock), and each finished task's own
    seconds by its pod's name (its commit record, through the task event)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.tasks: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # tasks per pod (a pod may run a batch)

    def stage_started(
        self, name: str, *, total_tasks: int, done_tasks: int, total_bytes: int
    ) -> None:
        self.stages[name.rsplit(" ", 1)[-1]] = time.time()

    def stage_finished(self, name: str) -> None:
        self.finished[name.rsplit(" ", 1)[-1]] = time.time()

    def task_event(self, event: TaskEvent) -> None:
        if event.kind == "finished" and event.worker:
            seconds = float(event.result.get("seconds", 0.0))
            self.tasks[event.worker] = self.tasks.get(event.worker, 0.0) + seconds
            self.counts[event.worker] = self.counts.get(event.worker, 0) + 1


def pod_times(
    pods: list[dict[str, Any]],
    stages: Mapping[str, float],
    tasks: Mapping[str, float],
    counts: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Each pod's life in phases (seconds), from the watch, the stages and the tasks
    (``task``: the seconds of every task the pod ran, ``tasks``: how many)."""
    from scheduler.backends.k8s import names

    out = []
    for seen in pods:
        pod = seen["pod"]
        name = pod.metadata.name
        stage = pod.metadata.labels.get(names.STAGE_LABEL)
        if "ended" not in seen or name not in tasks:
            continue
        (status,) = pod.status.container_statuses or [None]
        done = status.state.terminated if status and status.state else None
        row = {
            "pod": name,
            "stage": stage,
            "node": pod.spec.node_name,
            "stage_to_pod": round(seen["seen"] - stages[stage], 3),
            "pod_to_running": round(seen["running"] - seen["seen"], 3),
            "process": round(seen["ended"] - seen["running"], 3),
            "task": round(tasks[name], 3),
            "tasks": (counts or {}).get(name, 1),
            # The node agent's (whole-second) stamps, as a kubelet gives them.
            "api_created_to_started": (
                _stamp(done.started_at) - _stamp(pod.metadata.creation_timestamp) if done else None
            ),
            "api_started_to_finished": (
                _stamp(done.finished_at) - _stamp(done.started_at) if done else None
            ),
        }
        row["process_overhead"] = round(row["process"] - row["task"], 3)
        out.append(row)
    return out


def worker_lines(api: Any, pods: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each pod's task lines from its log (``mrk8s worker`` prints a JSON line per
    task done, with its seconds and when it began in the process's life)."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(api)
    out: dict[str, list[dict[str, Any]]] = {}
    for seen in pods:
        pod = seen["pod"]
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace)
        except kubernetes.client.ApiException:
            continue
        lines = []
        for text in log.splitlines():
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(text))
        out[pod.metadata.name] = [x for x in lines if "after_process_start" in x]
    return out


def split_process(row: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """Split a pod's process life with its own task lines: ``start_up`` (process
    start to its first task: interpreter, imports, storage clients), ``tasks_wall``
    (its tasks as the process timed them) and ``exit_and_report`` (last task's end
    to the pod reported ended: interpreter exit, the node agent's report, the watch)."""
    if not lines:
        return
    first, last = lines[0], lines[-1]
    row["start_up"] = round(first["after_process_start"], 3)
    row["tasks_wall"] = round(sum(x["seconds"] for x in lines), 3)
    row["exit_and_report"] = round(
        row["process"] - last["after_process_start"] - last["seconds"], 3
    )


def stage_tail(
    pods: list[dict[str, Any]], clock: PodClock, line: Mapping[str, Any], stages: StageClock
) -> dict[str, float]:
    """Per stage: from the last of its pods seen ended to the driver's end of the stage
    (the Job controller marking the Job complete, the driver's watch seeing it)."""
    ended = {p["pod"].metadata.name: p for p in clock.of_job(line["job_id"])}
    out = {}
    for stage, finished in stages.finished.items():
        last = [ended[p["pod"]]["ended"] for p in pods if p["stage"] == stage]
        if last:
            out[stage] = round(finished - max(last), 3)
    return out


def _medians(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = round(statistics.median(values), 3)
    return out


POD_KEYS = (
    "stage_to_pod", "pod_to_running", "process", "task", "process_overhead",
    "start_up", "tasks_wall", "exit_and_report",
    "api_created_to_started", "api_started_to_finished",
)  # fmt: skip


def image_venv(path: Path) -> Path:
    """A venv with this tree installed as the image installs it (``pip install
    .[s3,k8s]``, not editable); returns its ``bin`` directory. Built once and kept;
    the dependencies again when pyproject.toml changed, mrk8s itself every time."""
    import hashlib

    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    stamp = path / "pyproject.sha256"
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest() + IMAGE_EXTRAS
    try:
        if not stamp.exists() or stamp.read_text() != want:
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
            subprocess.run([*pip, f"{REPO}[{IMAGE_EXTRAS}]"], check=True)
            stamp.write_text(want)
        else:
            subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO)], check=True)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(path, ignore_errors=True)
        raise SystemExit(
            f"could not build the pods' venv {path} ({error}); run again with network access "
            "to the package index, or pass --pod-venv '' to run the pods with this interpreter"
        ) from error
    return path / "bin"


@contextlib.contextmanager
def s3_server(work: Path) -> Iterator[str]:
    """moto in server mode on a free loopback port, in a process of its own."""
    from tests.cluster.controlplane import free_port

    port = free_port()
    log = (work / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(
                        f"the S3 server did not start: see {work / 'moto.log'}"
                    ) from None
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def prepare_namespace(api: Any, pod_env: Mapping[str, str]) -> None:
    """The namespace as manifests/ and manifests/node-local/ make it: the worker account,
    the PriorityClass, the S3 credentials, the shuffle token and the shuffle servers."""
    import kubernetes
    import yaml

    from scheduler.backends.k8s import nodeshuffle
    from tests.cluster import kube
    from tests.cluster.controlplane import free_port
    from tests.cluster.shuffleserver import server_daemonset

    core = kubernetes.client.CoreV1Api(api)
    # hostPath volumes need the privileged level (as manifests/node-local/ sets it).
    core.create_namespace(
        {
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            }
        }
    )
    priority = yaml.safe_load((REPO / "manifests" / "base" / "priorityclass.yaml").read_text())
    kubernetes.client.SchedulingV1Api(api).create_priority_class(priority)
    kube.wait_until(
        lambda: any(
            a.metadata.name == "default"
            for a in core.list_namespaced_service_account(NAMESPACE).items
        ),
        timeout=60,
        what="the namespace's default service account",
    )
    core.create_namespaced_service_account(
        NAMESPACE, {"metadata": {"name": "mrk8s-worker"}, "automountServiceAccountToken": False}
    )
    core.create_namespaced_secret(
        NAMESPACE, {"metadata": {"name": SECRET}, "stringData": {**CREDENTIALS, **pod_env}}
    )
    core.create_namespaced_secret(
        NAMESPACE,
        {
            "metadata": {"name": nodeshuffle.TOKEN_SECRET},
            "stringData": {nodeshuffle.TOKEN_KEY: secrets.token_urlsafe(16)},
        },
    )
    kubernetes.client.AppsV1Api(api).create_namespaced_daemon_set(
        NAMESPACE, server_daemonset(free_port())
    )

    def serving() -> bool:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=nodeshuffle.SERVER_SELECTOR).items
        running = [p for p in pods if p.status.phase == "Running"]
        return len(running) == len(kube.ready_nodes(api)) and all(
            "listening on" in core.read_namespaced_pod_log(p.metadata.name, NAMESPACE)
            for p in running
        )

    kube.wait_until(serving, timeout=120, what="a listening shuffle server on every node")


def contestant_args(
    name: str, *, kubeconfig: str, endpoint: str, local_dir: Path, k8s_workers: int = 0
) -> list[str]:
    """The ``mrk8s bench shuffle`` options that make a contestant."""
    s3 = [
        "--shuffle-dir", f"s3://{BUCKET}/shuffle",
        "--storage-options", json.dumps({"client_kwargs": {"endpoint_url": endpoint}}),
    ]  # fmt: skip
    k8s = [
        "--backend", "k8s", "--kubeconfig", kubeconfig, "--namespace", NAMESPACE,
        "--image", "mrk8s:bench", "--env-from-secret", SECRET,
        *(["--workers", str(k8s_workers)] if k8s_workers else []),
    ]  # fmt: skip
    return {
        "local": ["--backend", "local", "--shuffle-dir", str(local_dir)],
        "local-s3": ["--backend", "local", *s3],
        "k8s-s3": [*k8s, *s3],
        "k8s-nodelocal": [*k8s, "--node-local-shuffle", *s3],
    }[name]


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r["contestant"] == name and r.get("verified")]
        if not mine:
            continue
        medians[name] = _medians(mine, ("seconds", "map_seconds", "reduce_seconds"))
        medians[name]["runs"] = len(mine)
        pods = [p for r in mine for p in r.get("pods", [])]
        if pods:
            medians[name]["pods"] = {
                stage: _medians([p for p in pods if p["stage"] == stage], POD_KEYS)
                for stage in ("map", "reduce")
            }

    def ratio(a: str, b: str) -> float | None:
        if a in medians and b in medians:
            return round(medians[a]["seconds"] / medians[b]["seconds"], 2)
        return None

    return {
        "medians": medians,
        "ratios": {
            "k8s-nodelocal / local": ratio("k8s-nodelocal", "local"),
            "k8s-s3 / local-s3": ratio("k8s-s3", "local-s3"),
            "k8s-s3 / local": ratio("k8s-s3", "local"),
            "local-s3 / local": ratio("local-s3", "local"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_k8s", description=__doc__)
    p.add_argument("--size", default="1GiB", help="bytes of rows (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default: %(default)s)")
    p.add_argument("--maps", type=int, default=4, help="map tasks (default: %(default)s)")
    p.add_argument("--reducers", type=int, default=4, help="reducers (default: %(default)s)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS))
    p.add_argument(
        "--k8s-workers",
        type=int,
        default=2,
        help="--workers of the k8s contestants, pods of a stage at once, each running "
        "ceil(tasks / N) tasks (default: %(default)s, as many as the local backend's "
        "workers on this 2-core machine; 0: every task at once, one per pod)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "compare_k8s.json"))
    p.add_argument(
        "--pod-s3-client",
        choices=("s3fs", "arrow"),
        default="arrow",
        help="the pods' $MRK8S_S3_CLIENT (shuffle/s3native.py; default: %(default)s)",
    )
    p.add_argument(
        "--pod-venv",
        default=str(IMAGE_VENV),
        help="the venv the pods run in, built with only the image's extras "
        "(default: %(default)s); '' for this interpreter's",
    )
    args = p.parse_args(argv)
    names = [n for n in args.contestants.split(",") if n]
    unknown = sorted(set(names) - set(CONTESTANTS))
    if unknown:
        p.error(f"unknown contestants {unknown}: pick from {', '.join(CONTESTANTS)}")

    import kubernetes
    import s3fs

    from mrk8s.bench import shuffle_bench
    from tests.cluster.controlplane import Cluster

    logging.basicConfig(level=logging.WARNING)
    os.environ.update(CREDENTIALS)  # the driver's own S3 credentials (the pods': the Secret)
    work = Path(tempfile.mkdtemp(prefix="mrk8s-compare-k8s-"))
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    pod_bin = image_venv(Path(args.pod_venv)) if args.pod_venv else None
    cluster = Cluster(work / "cluster", nodes=3, pod_bin=pod_bin)
    with s3_server(work) as endpoint:
        fs = s3fs.S3FileSystem(
            key="bench", secret="bench", client_kwargs={"endpoint_url": endpoint}
        )
        fs.mkdir(BUCKET)
        cluster.start()
        try:
            api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
            prepare_namespace(api, {"MRK8S_S3_CLIENT": args.pod_s3_client})
            clock = PodClock(api, NAMESPACE).start()
            for run in range(1, args.repeat + 1):
                for name in run_order(names, run):
                    os.sync()
                    time.sleep(1.0)
                    bench_args = [
                        "--size", args.size, "--maps", str(args.maps),
                        "--reducers", str(args.reducers), "--repeat", "1",
                        *contestant_args(
                            name, kubeconfig=str(cluster.kubeconfig), endpoint=endpoint,
                            local_dir=work / "shuffle", k8s_workers=args.k8s_workers,
                        ),
                    ]  # fmt: skip
                    settings = shuffle_bench.settings_from_args(
                        shuffle_bench.shuffle_parser().parse_args(bench_args),
                        json.loads(bench_args[bench_args.index("--storage-options") + 1])
                        if "--storage-options" in bench_args
                        else {},
                    )
                    stages = StageClock()
                    row: dict[str, Any] = {
                        "contestant": name,
                        "run": run,
                        "size": args.size,
                        "maps": args.maps,
                        "reducers": args.reducers,
                        "load_before": [round(x, 2) for x in os.getloadavg()],
                    }
                    try:
                        with contextlib.redirect_stdout(sys.stderr):
                            (line,) = shuffle_bench.run_shuffle_bench(settings, stages)
                        row.update({k: line.get(k) for k in KEYS})
                        if name.startswith("k8s"):
                            time.sleep(1.0)  # the watch's last events
                            row["pods"] = pod_times(
                                clock.of_job(line["job_id"]),
                                stages.stages,
                                stages.tasks,
                                stages.counts,
                            )
                            logs = worker_lines(api, clock.of_job(line["job_id"]))
                            for pod in row["pods"]:
                                split_process(pod, logs.get(pod["pod"], []))
                            row["stage_tail"] = stage_tail(row["pods"], clock, line, stages)
                            row["pod_medians"] = {
                                stage: _medians(
                                    [p for p in row["pods"] if p["stage"] == stage], POD_KEYS
                                )
                                for stage in ("map", "reduce")
                            }
                    except Exception as exc:  # report it and go on with the others
                        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                    row["load_after"] = [round(x, 2) for x in os.getloadavg()]
                    print(json.dumps({k: v for k, v in row.items() if k != "pods"}), flush=True)
                    runs.append(row)
            clock.stop()
        finally:
            cluster.stop()
            # The cluster's state: the nodes' directories with the map outputs kept there.
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs, names)
    print(json.dumps(summary, indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        # Relative to the repository (no path of this machine in the results).
        "pod_python": (
            os.path.relpath(pod_bin / "python", REPO) if pod_bin else "the suite's .venv"
        ),
        "pod_s3_client": args.pod_s3_client,
        "k8s_workers": args.k8s_workers,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    out.write_text(
        json.dumps({"machine": machine, "runs": runs, "summary": summary}, indent=1) + "\n"
    )
    try:
        plot(summary, names, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return 0


def _pod_phases(pods: list[Mapping[str, float]]) -> list[tuple[str, Any]]:
    """A pod's life as stacked phases: with the pods' own task lines (start_up...),
    the process split into start-up, task setup, tasks and exit; else as the watch
    alone sees it (process overhead and task)."""
    phases: list[tuple[str, Any]] = [
        ("stage to pod", lambda p: p.get("stage_to_pod", 0)),
        ("pod to process", lambda p: p.get("pod_to_running", 0)),
    ]
    if all("start_up" in p for p in pods):
        return [
            *phases,
            ("start-up: interpreter, imports, clients", lambda p: p["start_up"]),
            ("tasks (their own time)", lambda p: p["task"]),
            ("per-task setup", lambda p: max(p["tasks_wall"] - p["task"], 0)),
            ("exit and report", lambda p: max(p["exit_and_report"], 0)),
        ]
    return [
        *phases,
        ("process overhead", lambda p: p.get("process_overhead", 0)),
        ("task", lambda p: p.get("task", 0)),
    ]


def plot(summary: Mapping[str, Any], names: list[str], path: Path) -> None:
    """Median seconds per contestant (map and reduce stacked), and the k8s pods' phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = summary["medians"]
    names = [n for n in names if n in med]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), width_ratios=[3, 2])
    maps = [med[n].get("map_seconds", 0) for n in names]
    reduces = [med[n].get("reduce_seconds", 0) for n in names]
    left.barh(names, maps, color="tab:blue", label="map stage")
    bars = left.barh(names, reduces, left=maps, color="tab:orange", label="reduce stage")
    left.bar_label(bars, labels=[f"{med[n]['seconds']:.1f} s" for n in names], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("seconds, median (lower is better)")
    left.legend(fontsize=8)
    k8s = [(n, s) for n in names for s in ("map", "reduce") if med[n].get("pods", {}).get(s)]
    labels = [f"{n} {s}" for n, s in k8s]
    start = [0.0] * len(k8s)
    for label, phase in _pod_phases([med[n]["pods"][s] for n, s in k8s]):
        values = [phase(med[n]["pods"][s]) for n, s in k8s]
        right.barh(labels, values, left=start, label=label)
        start = [a + b for a, b in zip(start, values, strict=True)]
    right.invert_yaxis()
    right.set_xlabel("seconds per pod, median")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.suptitle("mrk8s bench shuffle: local backend against --backend k8s (test cluster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
