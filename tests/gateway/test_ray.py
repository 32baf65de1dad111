"""The gateway's ``ray`` backend against a real Ray head, driven over HTTP.

One head for the session: ``ray start --head`` with its dashboard (which
serves the Job Submission API) on free loopback ports, in a temp directory
of its own, so it neither joins nor disturbs any other Ray on the machine.
The gateway's config names it as a ``kind: ray`` cluster; jobs go through
``POST /v1/jobs`` with ``backend: ray``, and what Ray says about them is
checked with Ray's own Job Submission client.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.dashboard", reason="the ray backend needs ray[default]")

import httpx

from tests.gateway.conftest import JOBS, follow, free_port, submit, upload, wait_until
from tests.util import make_words, parse_text_output

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BIN = Path(sys.executable).parent

#: The head requires a token, as Ray's docs advise; the gateway presents it (Ray's client
#: reads these variables). The test reads Ray's job API over HTTP with the same token.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
BEARER = {"Authorization": f"Bearer {AUTH['RAY_AUTH_TOKEN']}"}

#: A word count whose map task that meets the word ``gate`` says so (in the file --started)
#: and then waits until the file --gate exists; the Ray head runs on this machine.
GATED = """\
import os
import sys
import time

from mrk8s import MapReduce


class GatedWordCount(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--gate", required=True)
        parser.add_argument("--started", required=True)

    def mapper(self, _, line):
        words = line.split()
        print("gated mapper read a line", file=sys.stderr, flush=True)
        if "gate" in words:
            open(self.options.started, "w").close()
            while not os.path.exists(self.options.gate):
                time.sleep(0.2)
        for word in words:
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head with its dashboard; yields the Job Submission API's URL."""
    # Short: Ray puts its sockets under it, and a socket path has 107 bytes at most.
    temp = Path(tempfile.mkdtemp(prefix="mrk8s-gr-"))
    log = tmp_path_factory.mktemp("rayhead") / "head.log"
    dashboard = free_port()
    # Its jobs run `mrk8s run`: the head's PATH must find this environment's mrk8s.
    env = {**os.environ, **AUTH, "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MRK8S_RAY_LOCAL_DIR": str(temp / "nodes")}  # fmt: skip
    cmd = [
        str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--num-cpus=2",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats", "--block",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "the Ray head did not come up:\n" + (log.read_text()[-3000:])
            )
            try:
                if httpx.get(f"{url}/api/version", headers=BEARER, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # ray start --block stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_gateway(gateway: Any, ray_head: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A gateway whose one cluster, ``rayc``, is the session's Ray head (it gets the token
    through its environment, which it inherits from this process)."""
    for key, value in AUTH.items():
        monkeypatch.setenv(key, value)
    return gateway(clusters=[{"name": "rayc", "kind": "ray", "address": ray_head}])


def ray_job(head: str, submission_id: str) -> dict[str, Any]:
    """What Ray's job API says of a submission (read over HTTP, not through the gateway)."""
    r = httpx.get(f"{head}/api/jobs/{submission_id}", headers=BEARER, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_ray_job_succeeds_with_exact_counts_and_its_log_is_kept(ray_gateway, ray_head):
    text = make_words(3000, vocab=200, seed=5)
    with ray_gateway.client("alice") as c:
        script = upload(c, "gated.py", GATED)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], reducers=2, backend="ray",
                     args=["--gate", "/", "--started", os.devnull])  # fmt: skip
        assert job["cluster"] == "rayc" and job["id"].startswith("rayc-")

        events = follow(c, job["id"], timeout=300)
        done = c.get(f"/v1/jobs/{job['id']}").json()
        statuses = [e["status"] for e in events if e["event"] == "status"]
        assert statuses == ["QUEUED", "RUNNING", "SUCCEEDED"], (
            done,
            ray_gateway.service_log()[-3000:],
            c.get(f"/v1/jobs/{job['id']}/logs").text[-3000:],
        )
        assert done["exit_code"] == 0 and done["launches"] == 1
        assert {(p["stage"], p["committed"] == p["tasks"]) for p in done["progress"]} == {
            ("map", True),
            ("reduce", True),
        }
        output = c.get(done["output"])
        assert output.status_code == 200, output.text
        assert dict(parse_text_output(output.text)) == Counter(text.split())

        # Ray ran it under the job's id, and the gateway kept the Ray job's log.
        assert ray_job(ray_head, job["id"])["status"] == "SUCCEEDED"
        logs = c.get(f"/v1/jobs/{job['id']}/logs").text
        assert f"launch 1 of job {job['id']} on Ray cluster rayc" in logs
        assert f"==> Ray job {job['id']} <==" in logs
        assert "gated mapper read a line" in logs, logs[-3000:]


def test_a_failing_ray_job_is_failed_with_the_users_error(ray_gateway, ray_head):
    with ray_gateway.client("alice") as c:
        script = upload(c, "failing.py", (JOBS / "failing.py").read_bytes())
        data = upload(c, "in.txt", "fine\nboom here\nfine\n")
        job = submit(c, script=script, inputs=[data], reducers=1, backend="ray")
        assert follow(c, job["id"], timeout=300)[-1]["status"] == "FAILED"
        done = c.get(f"/v1/jobs/{job['id']}").json()
        # mrk8s run's exit status for a user error, as Ray reports the driver's.
        assert done["exit_code"] == 2, done
        assert "this line is bad: 'boom here'" in done["error"]
        assert ray_job(ray_head, job["id"])["status"] == "FAILED"


def test_a_running_ray_job_is_reattached_after_a_restart_then_cancelled(
    ray_gateway, ray_head, tmp_path
):
    gate, started = tmp_path / "gate", tmp_path / "started"
    text = make_words(500, vocab=50, seed=6) + "\ngate\n"
    with ray_gateway.client("alice") as c:
        script = upload(c, "gated.py", GATED)
        data = upload(c, "words.txt", text)
        job = submit(c, script=script, inputs=[data], backend="ray",
                     args=["--gate", str(gate), "--started", str(started)])  # fmt: skip
        wait_until(started.exists, 240, "the gated map task to start on Ray")
        # Progress comes from the job's commit records: the map stage has not committed.
        progress = wait_until(
            lambda: c.get(f"/v1/jobs/{job['id']}").json()["progress"], 30, "progress"
        )
        first = progress[0]
        assert first["stage"] == "map" and first["committed"] < first["tasks"], progress
        assert ray_job(ray_head, job["id"])["status"] == "RUNNING"

    # A gateway killed mid-job re-attaches to the Ray job; nothing is submitted again.
    ray_gateway.stop(signal.SIGKILL)
    ray_gateway.start()
    with ray_gateway.client("alice") as c:
        now = c.get(f"/v1/jobs/{job['id']}").json()
        assert now["status"] == "RUNNING" and now["launches"] == 1, now
        listed = httpx.get(f"{ray_head}/api/jobs/", headers=BEARER, timeout=30).json()
        ours = [j["submission_id"] for j in listed if j["submission_id"].startswith(job["id"])]
        assert ours == [job["id"]]

        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "CANCELLED"
        # The DELETE answers once Ray reports the job stopped.
        assert ray_job(ray_head, job["id"])["status"] == "STOPPED"
        assert not gate.exists()
        logs = c.get(f"/v1/jobs/{job['id']}/logs").text
        assert f"==> Ray job {job['id']} <==" in logs
