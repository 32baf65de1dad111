"""The Kubernetes backend's cost on the test cluster: the same word count, local and k8s.

    python -m bench.k8s_pods [--size 2MiB] [--repeat 3] [--reducers 2]

Starts the test cluster (tests/cluster: the real control plane and the node
agent that runs pods as local processes; the image is not pulled) and a
loopback S3 server (moto), then runs ``examples/wordcount.py`` over a Zipf
corpus ``--repeat`` times with ``--backend local`` (local disk) and with
``--backend k8s`` (object-store shuffle through the S3 server), alternated;
checks every answer against ``collections.Counter``. For the k8s runs it
reads each pod's times from the API: created -> container started ->
finished (the node agent reports whole seconds; "started" is when it
starts the process, so Python's start-up and imports count as running). Prints one JSON document
(medians) and writes it to ``bench/results/k8s_pods.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _seconds(stamp: Any) -> float:
    if isinstance(stamp, datetime.datetime):
        return stamp.timestamp()
    return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def _pod_times(api: Any, namespace: str, job_id: str) -> list[dict[str, float]]:
    import kubernetes

    from scheduler.backends.k8s import names

    core = kubernetes.client.CoreV1Api(api)
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=names.job_selector(job_id)).items:
        (status,) = pod.status.container_statuses
        done = status.state.terminated
        created = _seconds(pod.metadata.creation_timestamp)
        out.append(
            {
                "created_to_started": _seconds(done.started_at) - created,
                "started_to_finished": _seconds(done.finished_at) - _seconds(done.started_at),
            }
        )
    return out


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mrk8s.cli", "run", *args, "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"mrk8s run failed:\n{proc.stderr}")
    return seconds, proc.stdout


def _counts(stdout: str) -> dict[str, int]:
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("\t")
        out[json.loads(key)] = json.loads(value)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.k8s_pods", description=__doc__)
    p.add_argument("--size", default="2MiB", help="corpus size (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--reducers", type=int, default=2)
    args = p.parse_args(argv)

    import logging

    import kubernetes
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise

    from bench.corpus import generate
    from mrk8s.engine.settings import parse_size
    from tests.cluster.controlplane import Cluster, free_port

    work = Path(tempfile.mkdtemp(prefix="mrk8s-k8s-bench-"))
    corpus = work / "corpus.txt"
    generate(str(corpus), parse_size(args.size), vocab=20_000)
    expected = dict(collections.Counter(corpus.read_text().split()))
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    cluster = Cluster(work / "cluster", nodes=3)
    cluster.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MRK8S_SHUFFLE_DIR": str(work / "shuffle"),
        }
        fs = s3fs.S3FileSystem(
            key="bench", secret="bench", client_kwargs={"endpoint_url": endpoint}
        )
        fs.mkdir("bench")
        fs.put(str(corpus), "bench/in/corpus.txt")
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        namespace = "bench"
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(
            {
                "metadata": {
                    "name": namespace,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                }
            }
        )
        kubernetes.client.SchedulingV1Api(api).create_priority_class(
            {"metadata": {"name": "mrk8s"}, "value": 1000, "preemptionPolicy": "Never"}
        )
        time.sleep(2)  # the namespace's default account and admission settle
        core.create_namespaced_service_account(
            namespace, {"metadata": {"name": "mrk8s-worker"}, "automountServiceAccountToken": False}
        )
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3"},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1",
                },
            },
        )
        common = ["examples/wordcount.py", "--reducers", str(args.reducers)]
        k8s = [
            "s3://bench/in/corpus.txt", "--backend", "k8s", "--kubeconfig",
            str(cluster.kubeconfig), "--namespace", namespace, "--image", "local",
            "--env-from-secret", "s3", "--shuffle-dir", "s3://bench/shuffle",
            "--storage-options", json.dumps({"client_kwargs": {"endpoint_url": endpoint}}),
        ]  # fmt: skip
        runs: dict[str, list[float]] = {"local": [], "k8s": []}
        pods: list[dict[str, float]] = []
        for i in range(args.repeat):
            seconds, out = _run([common[0], str(corpus), *common[1:]], env)
            assert _counts(out) == expected, "local: wrong answer"
            runs["local"].append(seconds)
            job_id = f"bench-{i}-{uuid.uuid4().hex[:4]}"
            seconds, out = _run([common[0], *k8s, *common[1:], "--job-id", job_id], env)
            assert _counts(out) == expected, "k8s: wrong answer"
            runs["k8s"].append(seconds)
            pods += _pod_times(api, namespace, job_id)
        result = {
            "size_bytes": corpus.stat().st_size,
            "repeat": args.repeat,
            "verified": True,
            "seconds_median": {k: round(statistics.median(v), 2) for k, v in runs.items()},
            "seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "ratio_k8s_to_local": round(
                statistics.median(runs["k8s"]) / statistics.median(runs["local"]), 2
            ),
            "pods": len(pods),
            "pod_created_to_started_median": statistics.median(
                p["created_to_started"] for p in pods
            ),
            "pod_started_to_finished_median": statistics.median(
                p["started_to_finished"] for p in pods
            ),
            "load_average": os.getloadavg(),
        }
    finally:
        cluster.stop()
        s3.stop()
    text = json.dumps(result, indent=1)
    print(text)
    (HERE / "results" / "k8s_pods.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
