"""``mrk8s run --backend k8s`` without a cluster: --dry-run, and the clear errors.

Inputs live on the suite's loopback S3 server (pods could not read a path
of this machine); the kubeconfig is made absent or unreachable on purpose.
What needs the real test cluster is in tests/scheduler/k8s/.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")
import yaml

from scheduler.backends.k8s import names
from tests.s3 import S3Bucket


@pytest.fixture
def k8s_args(s3_bucket: S3Bucket, tmp_path: Path) -> list[str]:
    import s3fs

    text = tmp_path / "words.txt"
    text.write_text("a b c\nb c\nc\n" * 2000)
    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    fs.put(str(text), f"{s3_bucket.url}/in/words.txt")
    public = {"client_kwargs": {"endpoint_url": s3_bucket.endpoint}}
    return [
        f"{s3_bucket.url}/in/words.txt", "--backend", "k8s",
        "--shuffle-dir", f"{s3_bucket.url}/shuffle", "--storage-options", json.dumps(public),
    ]  # fmt: skip


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    missing = tmp_path / "no-such-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return missing


def test_dry_run_prints_every_manifest_and_needs_no_cluster(
    cli: Any, k8s_args: list[str], no_kubeconfig: Path, s3_bucket: S3Bucket
):
    out = cli(
        "run", "examples/top_words.py", *k8s_args, "--dry-run", "--job-id", "dry",
        "--namespace", "jobs", "--image", "reg.example/mrk8s:9", "--workers", "3",
        "--reducers", "4", "--ttl", "30m", "--cpu", "250m", "--memory-per-worker", "512MiB",
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "Job", "Job", "Job"]
    assert docs[0]["metadata"]["name"] == names.owner_name("dry")
    jobs = docs[1:]
    assert [j["metadata"]["name"] for j in jobs] == [
        names.stage_job_name("dry", step, stage) for step in (0, 1) for stage in ("map", "reduce")
    ]
    for job in jobs:
        assert job["metadata"]["namespace"] == "jobs"
        assert job["spec"]["ttlSecondsAfterFinished"] == 1800
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "reg.example/mrk8s:9"
        assert container["resources"]["limits"] == {"cpu": "250m", "memory": "512Mi"}
        assert container["command"][:3] == ["mrk8s", "worker", "--job"]
        assert container["command"][3] == f"{s3_bucket.url}/shuffle/dry"
        # The pods' command carries no credentials.
        assert "testing" not in json.dumps(container)
    # Step 1's 4 reducers, 2 per pod: --workers 3 pods at once run them in 2 pods.
    assert jobs[1]["metadata"]["annotations"]["mrk8s.io/task-indexes"] == "0-3/2"
    assert jobs[1]["spec"]["completions"] == 2
    assert jobs[0]["spec"]["parallelism"] == min(3, jobs[0]["spec"]["completions"])
    # Nothing was created in the store either.
    import s3fs

    assert not s3fs.S3FileSystem(**s3_bucket.storage_options).exists(f"{s3_bucket.url}/shuffle")


def test_dry_run_shows_tasks_per_pod(cli: Any, k8s_args: list[str], no_kubeconfig: Path):
    out = cli(
        "run", "examples/wordcount.py", *k8s_args, "--dry-run", "--job-id", "dry",
        "--reducers", "5", "--tasks-per-pod", "3",
    )  # fmt: skip
    refused = cli("run", "examples/wordcount.py", *k8s_args, "--dry-run", "--tasks-per-pod", "0")

    assert out.returncode == 0, out.stderr
    reduce_job = list(yaml.safe_load_all(out.stdout))[2]
    assert reduce_job["metadata"]["annotations"]["mrk8s.io/task-indexes"] == "0-4/3"
    assert (reduce_job["spec"]["completions"], reduce_job["spec"]["parallelism"]) == (2, 2)
    (container,) = reduce_job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MRK8S_INDEX_MAP"] == "0-4/3"
    assert refused.returncode == 2
    assert "--tasks-per-pod 0: give 1 or more" in refused.stderr


def test_no_kubeconfig_is_one_paragraph(cli: Any, k8s_args: list[str], no_kubeconfig: Path):
    out = cli("run", "examples/wordcount.py", *k8s_args)

    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"mrk8s: error: --backend k8s: the default kubeconfig {no_kubeconfig} does not exist, "
        "and this is not a pod in a cluster: pass --kubeconfig PATH (and --context NAME) "
        "naming your cluster, or set $KUBECONFIG"
    )


def test_an_api_server_that_cannot_be_reached(cli: Any, k8s_args: list[str], tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{port}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))

    out = cli("run", "examples/wordcount.py", *k8s_args, "--kubeconfig", str(path))

    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert (
        f"the API server at https://127.0.0.1:{port} (kubeconfig {path}, context c) cannot be "
        "reached" in out.stderr
    )
    assert "check that the cluster is up and that --kubeconfig/--context name it" in out.stderr


def test_a_local_shuffle_dir_or_output_is_refused(cli: Any, k8s_args: list[str]):
    shuffle = k8s_args.index("--shuffle-dir") + 1
    local = [*k8s_args[:shuffle], "/tmp/shuffle", *k8s_args[shuffle + 1 :]]

    out = cli("run", "examples/wordcount.py", *local)

    assert out.returncode == 2
    assert "--shuffle-dir /tmp/shuffle is a directory on this machine, which the pods of " in (
        out.stderr
    )
    assert "s3://bucket/mrk8s" in out.stderr and "node-local mode" in out.stderr
    out = cli("run", "examples/wordcount.py", *k8s_args, "-o", "out/")
    assert out.returncode == 2
    assert "-o out/ is a path on this machine, which the pods of --backend k8s cannot" in (
        out.stderr
    )


def test_speculative_is_refused_before_the_cluster_is_asked(
    cli: Any, k8s_args: list[str], no_kubeconfig: Path
):
    out = cli("run", "examples/wordcount.py", *k8s_args, "--speculative")

    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    # Refused before the (absent) kubeconfig is read.
    assert out.stderr.startswith(
        "mrk8s: error: --speculative is not implemented on --backend k8s: run without it"
    )
    assert "kubeconfig" not in out.stderr


def test_kubernetes_options_need_the_k8s_backend(cli: Any, tmp_path: Path):
    out = cli("run", "examples/wordcount.py", "x.txt", "--kubeconfig", str(tmp_path / "k"))

    assert out.returncode == 2
    assert "--kubeconfig: for --backend k8s, not --backend local" in out.stderr


def test_a_script_directory_past_the_shipping_cap_is_refused(
    cli: Any, k8s_args: list[str], tmp_path: Path, no_kubeconfig: Path
):
    job = tmp_path / "job"
    job.mkdir()
    (job / "wc.py").write_text((Path("examples") / "wordcount.py").resolve().read_text())
    (job / "big.bin").write_bytes(os.urandom(300 << 10))
    (job / ".git").mkdir()
    (job / ".git" / "pack").write_bytes(os.urandom(500 << 10))  # excluded: not counted
    env_cap = {"MRK8S_SHIP_LIMIT": "256KiB"}

    out = cli("run", str(job / "wc.py"), *k8s_args, "--dry-run", env=env_cap)

    assert out.returncode == 2
    assert f"the job script's directory {job} holds 0.3 MiB (largest: big.bin (0.3 MiB)" in (
        out.stderr
    )
    assert "that --backend k8s ships to the cluster with the script" in out.stderr
    assert "raise the limit with $MRK8S_SHIP_LIMIT" in out.stderr


def test_a_context_the_kubeconfig_lacks_is_named(cli: Any, k8s_args: list[str], tmp_path: Path):
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))

    out = cli(
        "run", "examples/wordcount.py", *k8s_args, "--kubeconfig", str(path), "--context", "prod"
    )

    assert out.returncode == 2
    assert f"cannot use kubeconfig {path} with --context prod" in out.stderr
    assert "name one of its contexts with --context" in out.stderr


@pytest.mark.parametrize("command", ["status", "clean"])
def test_status_and_clean_take_no_options_of_run(cli: Any, command: str):
    # They read a job's records: --image, --ttl, --dry-run... belong to `mrk8s run`
    # (they were offered here by mistake once, and silently ignored).
    out = cli(command, "--help")
    assert out.returncode == 0, out.stderr
    for option in ("--image", "--cpu", "--ttl", "--dry-run", "--env-from-secret"):
        assert option not in out.stdout
    refused = cli(command, "some-job", "--dry-run")
    assert refused.returncode == 2
    assert "unrecognized arguments: --dry-run" in refused.stderr
