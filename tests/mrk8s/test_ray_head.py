"""``mrk8s`` against a Ray cluster started the way an operator starts one: ``ray start --head``.

One head node for the module, a subprocess (``ray start --head --block``) on
free loopback ports, with its Ray client server on and its own temp
directory (``RAY_TMPDIR``), so it neither joins nor disturbs any other Ray
on the machine; its actors keep node-local map outputs under the module's
``nodes/`` (``MRK8S_RAY_LOCAL_DIR`` in the head's environment). Jobs run as
a user runs them, through the CLI in a subprocess, and every output is
compared with ``collections.Counter``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tests.conftest import EXAMPLES, REPO
from tests.util import make_words, parse_text_output

pytestmark = pytest.mark.timeout(300)

RAY = str(Path(sys.executable).with_name("ray"))

#: The head requires a token, as Ray's own docs advise; a driver connecting to
#: it says so and presents the token (Ray does neither by itself).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _first_client(address: str, attempts: int = 3) -> None:
    """Wait until a ``ray://`` client gets through the head's client server.

    The client server forks a server of its own for each client. In the first
    second or so after it starts listening, its gRPC threads are still busy,
    and the forked child can die of SIGSEGV before it runs the server (strace
    of the client server: the child ``killed by SIGSEGV`` right after the fork;
    its log: "Other threads are currently calling into gRPC, skipping fork()
    handlers"). That client then fails after Ray's 30 s channel timeout. This
    happened to 2 of 6 clients that connected as soon as the port listened,
    and to none of 6 that waited 2 s. A first client that gets through shows
    the head is past that window.
    """
    probe = f"import ray; ray.init({address!r}); ray.shutdown()"
    for attempt in range(1, attempts + 1):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, **AUTH},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0:
            return
        assert attempt < attempts, f"no ray:// client got through:\n{done.stderr[-3000:]}"


@dataclass(frozen=True)
class Head:
    address: str  # host:port of its GCS
    client: str  # ray://127.0.0.1:PORT
    temp: Path  # its RAY_TMPDIR
    nodes: Path  # where its actors keep node-local map outputs


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    # Short: Ray puts its sockets under it, and a socket path has 107 bytes at most.
    temp = Path(tempfile.mkdtemp(prefix="mrk8s-rh-"))
    nodes = tmp_path_factory.mktemp("nodes")
    log = tmp_path_factory.mktemp("head") / "head.log"
    gcs, client = _free_port(), _free_port()
    env = {**os.environ, **AUTH, "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0",
           "MRK8S_RAY_LOCAL_DIR": str(nodes)}  # fmt: skip
    cmd = [
        RAY, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
        "--block",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        current = temp / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 180
        while not (current.exists() and _listening(gcs) and _listening(client)):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "ray start --head did not come up:\n" + (log.read_text()[-3000:])
            )
            time.sleep(0.5)
        with client_ports():
            _first_client(f"ray://127.0.0.1:{client}")
        yield Head(current.read_text().strip(), f"ray://127.0.0.1:{client}", temp, nodes)
    finally:
        proc.send_signal(signal.SIGTERM)  # ray start --block stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def mrk8s(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **AUTH, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mrk8s.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=environ, timeout=timeout)  # fmt: skip


def counts(out: Path) -> dict[object, object]:
    return dict(parse_text_output("".join(p.read_text() for p in sorted(out.glob("part-*")))))


@contextlib.contextmanager
def client_ports() -> Iterator[None]:
    """Hold the machine's lock on Ray's per-client server ports for the block.

    A ``ray://`` client gets a server of its own from the head's client
    server, on the first port from 23000 up that it can bind at that moment
    (``MIN_SPECIFIC_SERVER_PORT`` in Ray 2.60's ``ray/util/client/server/
    proxier.py``; neither ``ray start`` nor an environment variable moves
    the range). Two heads on one machine handing out a port at the same
    moment can both pick the same one, and a client then reaches the other
    cluster's server. Every run of this test on the machine takes this lock
    first, so only one hands out a port at a time.
    """
    with open(os.path.join(tempfile.gettempdir(), "mrk8s-ray-client-ports.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def test_a_job_runs_through_a_ray_client_address(head: Head, tmp_path: Path):
    sample = EXAMPLES / "data" / "sample.txt"

    with client_ports():
        result = mrk8s(
            "run", str(EXAMPLES / "wordcount.py"), str(sample), "--backend", "ray",
            "--ray-address", head.client, "-o", str(tmp_path / "out"),
            "--shuffle-dir", str(tmp_path / "shuffle"), "-q",
        )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert counts(tmp_path / "out") == dict(collections.Counter(sample.read_text().split()))
    assert "Traceback" not in result.stderr


def test_backend_ray_starts_its_own_ray_even_when_one_runs_on_the_machine(
    head: Head, tmp_path: Path
):
    # RAY_TMPDIR shows this process the head as "the Ray running on this
    # machine"; ray.init() with no address would join it.
    sample = EXAMPLES / "data" / "sample.txt"

    result = mrk8s(
        "run", str(EXAMPLES / "wordcount.py"), str(sample), "--backend", "ray", "-w", "1",
        "-o", str(tmp_path / "out"), "--shuffle-dir", str(tmp_path / "shuffle"), "-q",
        env={"RAY_TMPDIR": str(head.temp)},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert counts(tmp_path / "out") == dict(collections.Counter(sample.read_text().split()))


SLOW_REDUCERS = """
import os, time
from mrk8s import MapReduce

FAST = {fast!r}

class WordCount(MapReduce):
    def mapper(self, _, line):
        for w in line.split():
            yield w, 1

    def reducer_init(self):
        if not os.path.exists(FAST):
            time.sleep(1.5)

    def reducer(self, w, ones):
        yield w, sum(ones)
"""


def commit_files(job_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (job_dir / "commits").glob("s0-*.json")
    }


def test_a_killed_driver_resumes_on_ray_without_rerunning_committed_tasks(
    head: Head, tmp_path: Path
):
    code = tmp_path / "code"
    code.mkdir()
    script = code / "slow_reducers.py"
    script.write_text(SLOW_REDUCERS.format(fast=str(tmp_path / "fast")))
    src = tmp_path / "words.txt"
    text = make_words(30_000, vocab=500, seed=7)
    src.write_text(text)
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "run", str(script), str(src), "--backend", "ray",
        "--ray-address", head.address, "-o", str(tmp_path / "out"), "--job-id", "resumable",
        "--reducers", "6", "--split-size", "32KiB", "--shuffle-dir", str(tmp_path / "shuffle"),
        "--keep-shuffle",
    ]  # fmt: skip
    env = {**os.environ, **AUTH, "RAY_USAGE_STATS_ENABLED": "0"}
    job_dir = tmp_path / "shuffle" / "resumable"
    log = tmp_path / "first-run.log"
    with log.open("w") as err:
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 180
        while not list((job_dir / "commits").glob("s0-reduce-*.json")):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no reducer committed:\n" + log.read_text()[-3000:]
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = commit_files(job_dir)
    n_maps = len(json.loads((job_dir / "plan.json").read_text())["steps"][0]["splits"])
    reduced = [n for n in before if n.startswith("s0-reduce-")]
    assert 1 <= len(reduced) < 6, "the driver was not killed mid-reduce"
    assert len(before) - len(reduced) == n_maps  # every map task had committed
    assert not (tmp_path / "out").exists()
    (tmp_path / "fast").touch()

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)

    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming job resumable" in again.stderr
    assert counts(tmp_path / "out") == dict(collections.Counter(text.split()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    maps, reduces = summary["stages"]["step0-map"], summary["stages"]["step0-reduce"]
    # The map outputs stayed on the head node's disk, under the same node id.
    assert (maps["tasks_run"], maps["tasks_skipped"]) == (0, n_maps)
    assert reduces["tasks_skipped"] == len(reduced)
    assert reduces["tasks_run"] == 6 - len(reduced)
    # No task that had committed ran again: its commit record was not rewritten.
    after = commit_files(job_dir)
    assert {name: after[name] for name in before} == before


def kept_job(head: Head, tmp_path: Path, job_id: str) -> Path:
    """Run wordcount on the head with --keep-shuffle; the job's directory on the node."""
    result = mrk8s(
        "run", str(EXAMPLES / "wordcount.py"), str(EXAMPLES / "data" / "sample.txt"),
        "--backend", "ray", "--ray-address", head.address, "-o", str(tmp_path / job_id),
        "--shuffle-dir", str(tmp_path / "shuffle"), "--job-id", job_id, "--keep-shuffle", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (on_node,) = head.nodes.glob(f"*/{job_id}")  # the head's one node
    assert list(on_node.glob("s0/map-*.arrow"))
    return on_node


def test_clean_removes_the_map_outputs_kept_on_nodes_disks(head: Head, tmp_path: Path):
    on_node = kept_job(head, tmp_path, "kept")

    result = mrk8s("clean", "kept", "--shuffle-dir", str(tmp_path / "shuffle"))

    assert result.returncode == 0, result.stderr
    assert f"removed its map outputs kept on nodes' disks: {on_node}" in result.stdout
    assert not on_node.exists()
    assert not (tmp_path / "shuffle" / "kept").exists()


def test_clean_says_which_node_outputs_it_cannot_reach_without_the_cluster(
    head: Head, tmp_path: Path
):
    on_node = kept_job(head, tmp_path, "far")
    # As if the node were another machine: its directory is not on this one.
    elsewhere = tmp_path / "the-other-machine"
    on_node.rename(elsewhere)
    node = on_node.parent.name

    result = mrk8s("clean", "far", "--shuffle-dir", str(tmp_path / "shuffle"))

    assert result.returncode == 1, result.stderr
    assert (
        f"could not remove its map outputs on node {node} ({on_node}): it is on another "
        "machine: pass --ray-address to remove it through the Ray cluster"
    ) in result.stdout
    assert not (tmp_path / "shuffle" / "far").exists()  # the rest is removed all the same


def test_the_cluster_removes_a_jobs_directories_on_every_node(head: Head, tmp_path: Path):
    on_node = kept_job(head, tmp_path, "everywhere")
    node = on_node.parent.name
    code = (
        "import json, sys\n"
        "from scheduler.backends.ray.cleanup import remove_job\n"
        "print(json.dumps(remove_job(sys.argv[1], [sys.argv[2]], sys.argv[3])))\n"
    )

    proc = subprocess.run(
        [sys.executable, "-c", code, head.address, str(head.nodes), "everywhere"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, **AUTH, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {node: [str(on_node)]}
    assert not on_node.exists()
