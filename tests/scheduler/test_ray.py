"""The Ray backend's executor on a real local Ray (one node, two CPUs), shared by the module.

Stages are built from :mod:`tests.scheduler.tasks_for_tests`, as for the local
backend; the worker actors import it from the driver's ``sys.path``, which a
local Ray hands to its workers. Multi-node behaviour (placement, node-local
reads, a lost node) is in ``tests/mrk8s/test_ray_cluster.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from scheduler.backends.ray import RayExecutor, ship  # noqa: E402
from scheduler.errors import JobFailedError  # noqa: E402
from scheduler.stage import TaskEvent  # noqa: E402
from tests.scheduler.util import of_kind, runs, spec  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # A Ray of its own, not one that something else runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def executor(local_ray: None) -> Iterator[RayExecutor]:
    with RayExecutor() as ex:
        yield ex


def test_the_pool_has_one_worker_per_cpu_pinned_to_the_node(executor: RayExecutor):
    node = ray.get_runtime_context().get_node_id()

    assert executor.nodes() == {node: 2}
    assert [n for n, _ in executor.worker_actors()] == [node, node]


def test_every_task_runs_and_returns_its_result(executor: RayExecutor, tmp_path: Path):
    events: list[TaskEvent] = []

    results = executor.run_stage(
        spec(tmp_path, "echo", 5, payload={"tag": "t"}),
        indexes=range(5),
        on_event=events.append,
    )

    assert sorted(results) == [0, 1, 2, 3, 4]
    assert all(r["tag"] == "t" and r["attempt"] == 1 for r in results.values())
    assert runs(tmp_path) == {i: [1] for i in range(5)}
    assert sorted(of_kind(events, "finished")) == [(i, 1) for i in range(5)]
    # Two actors, two processes, neither of them this one.
    assert len({r["pid"] for r in results.values()}) <= 2
    assert os.getpid() not in {r["pid"] for r in results.values()}


def test_a_worker_whose_process_dies_is_replaced_and_its_task_retried(
    executor: RayExecutor, tmp_path: Path
):
    events: list[TaskEvent] = []
    before = {id(h) for _, h in executor.worker_actors()}

    results = executor.run_stage(
        spec(tmp_path, "die_on_first_attempt", 3, payload={"how": "sigkill"}),
        indexes=range(3),
        on_event=events.append,
    )

    assert sorted(results) == [0, 1, 2]
    assert all(r["attempt"] == 2 for r in results.values())
    failed = [e for e in events if e.kind == "failed"]
    assert sorted((e.index, e.attempt) for e in failed) == [(0, 1), (1, 1), (2, 1)]
    assert all(e.error is not None and e.error.kind == "WorkerLostError" for e in failed)
    assert "was lost" in failed[0].error.message  # type: ignore[union-attr]
    # Dead actors were replaced: the pool is back to two, with new handles.
    assert len(executor.worker_actors()) == 2
    assert {id(h) for _, h in executor.worker_actors()} != before


def test_a_task_that_always_kills_its_worker_fails_the_stage_after_max_attempts(
    executor: RayExecutor, tmp_path: Path
):
    with pytest.raises(JobFailedError) as info:
        executor.run_stage(spec(tmp_path, "always_die", 1, max_attempts=2), indexes=[0])

    assert "was lost" in str(info.value)
    assert "failed on all 2 attempts" in str(info.value)
    assert runs(tmp_path) == {0: [1, 2]}
    assert len(executor.worker_actors()) == 2  # the pool recovers for the next stage


def test_a_user_error_fails_at_once_with_its_message(executor: RayExecutor, tmp_path: Path):
    with pytest.raises(JobFailedError) as info:
        executor.run_stage(spec(tmp_path, "raise_user_error", 1), indexes=[0])

    assert info.value.user_error
    assert "record 7 of task 0 is not valid JSON" in str(info.value)
    assert runs(tmp_path) == {0: [1]}


def test_a_speculative_stage_is_refused_not_ignored(executor: RayExecutor, tmp_path: Path):
    with pytest.raises(JobFailedError, match="speculative attempts are not implemented"):
        executor.run_stage(spec(tmp_path, "echo", 2, speculative=True), indexes=[0, 1])
    assert runs(tmp_path) == {}  # nothing ran


def test_a_placed_task_runs_on_its_node(executor: RayExecutor, tmp_path: Path):
    node = ray.get_runtime_context().get_node_id()

    results = executor.run_stage(
        spec(tmp_path, "environ", 2, payload={"names": ["MRK8S_NODE"]}),
        indexes=[0, 1],
        placement={0: node, 1: "a-node-that-is-not-there"},  # the second falls back
    )

    assert {r["env"]["MRK8S_NODE"] for r in results.values()} == {node}


def test_a_killed_actor_between_stages_is_replaced_before_the_next(
    executor: RayExecutor, tmp_path: Path
):
    node, victim = executor.worker_actors()[0]
    ray.kill(victim, no_restart=True)
    # ray.kill returns before the actor is gone: wait until it no longer answers.
    with pytest.raises(ray.exceptions.RayActorError):
        for _ in range(100):
            ray.get(victim.ping.remote(), timeout=30)
            time.sleep(0.1)

    assert executor.nodes() == {node: 2}
    assert victim not in [h for _, h in executor.worker_actors()]
    results = executor.run_stage(spec(tmp_path, "echo", 4), indexes=range(4))
    assert sorted(results) == [0, 1, 2, 3]


# -- shipping the script's directory -------------------------------------------------


def test_ship_measures_the_directory_without_git_and_virtual_environments(tmp_path: Path):
    (tmp_path / "job.py").write_text("x = 1\n")
    (tmp_path / "helper.py").write_text("y = 2\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "pack").write_bytes(b"0" * 5000)
    env = tmp_path / "myenv"  # a virtual environment under another name
    env.mkdir()
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (env / "big.so").write_bytes(b"0" * 5000)

    package = ship.measure(str(tmp_path), limit=1000)

    assert (package.files, package.size) == (2, 12)
    assert package.paths == ("helper.py", "job.py")
    assert package.venvs == ("myenv",)
    digest, data = ship.pack(package)
    unpacked = Path(ship.unpack(digest, data, base=str(tmp_path / "unpacked")))
    assert sorted(p.name for p in unpacked.iterdir()) == ["helper.py", "job.py"]
    assert (unpacked / "helper.py").read_text() == "y = 2\n"
    # The same content unpacks to the same directory, once.
    assert ship.unpack(digest, data, base=str(tmp_path / "unpacked")) == str(unpacked)


def test_ship_refuses_a_directory_past_the_limit_naming_the_largest_entries(tmp_path: Path):
    (tmp_path / "job.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_bytes(b"w " * (1 << 20))

    with pytest.raises(ship.ShipTooLargeError) as info:
        ship.measure(str(tmp_path), limit=1 << 20)

    message = str(info.value)
    assert "2.0 MiB" in message and "data (2.0 MiB)" in message
    assert "more than the 1 MiB" in message
    assert "MRK8S_RAY_SHIP_LIMIT" in message


# -- reading another node's map outputs: the reader actor and its filesystem --------------


def test_a_reader_serves_only_its_nodes_directory(tmp_path: Path):
    from scheduler.backends.ray.actors import NodeReader, node_directory

    reader = NodeReader("node-a", str(tmp_path))
    mine = Path(node_directory(str(tmp_path), "node-a")) / "job" / "map-00000-a1.arrow"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"0123456789")
    (tmp_path / "secret").write_text("not yours")

    assert reader.read(str(mine), 2, 5) == b"23456"
    assert reader.read(str(mine), 8, 5) == b"89"  # the end of the file
    assert reader.size(str(mine)) == 10
    for outside in (tmp_path / "secret", mine.parent / ".." / ".." / ".." / "secret"):
        with pytest.raises(PermissionError, match="not under this node's shuffle directory"):
            reader.read(str(outside), 0, 4)


@pytest.fixture
def remote_file(executor: RayExecutor) -> Iterator[tuple[str, Path, bytes]]:
    """A map output on this node, and a reader for it installed as if read from another node."""
    from scheduler.backends.ray import nodefs
    from shuffle import nodelocal

    node = ray.get_runtime_context().get_node_id()
    directory = Path(executor.local_dir) / node / "job-remote-read"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "map-00000-a1.arrow"
    data = os.urandom(nodefs.PIECE_BYTES * 2 + 12345)
    path.write_bytes(data)
    nodefs.install(executor.reader_prefix, ray.get_runtime_context().namespace)
    try:
        yield node, path, data
    finally:
        nodelocal.set_remote_opener(None)
        path.unlink()
        directory.rmdir()


def test_a_remote_read_comes_straight_from_the_nodes_server_and_equals_the_file(
    remote_file: tuple[str, Path, bytes],
):
    from shuffle import nodelocal

    node, path, data = remote_file
    store, name = nodelocal.segment_store(None, node, str(path), here="another-node")  # type: ignore[arg-type]
    again, _ = nodelocal.segment_store(None, node, str(path), here="another-node")  # type: ignore[arg-type]
    fs = store.fs
    read, direct = fs.bytes_read, fs.bytes_direct

    assert store.read_range(name, 7, len(data) - 7) == data[7:]
    # Not one byte through the object store:
    assert fs.bytes_read - read == fs.bytes_direct - direct == len(data) - 7
    assert again is store  # one store per node: its segments are fetched as one batch


def test_an_unreachable_server_falls_back_to_bounded_pieces_through_the_reader_actor(
    remote_file: tuple[str, Path, bytes],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    import socket

    from scheduler.backends.ray import nodefs
    from shuffle import httpfs, nodelocal

    monkeypatch.setattr(httpfs, "BACKOFF_SECONDS", 0.01)  # give up on the server at once
    node, path, data = remote_file
    store, name = nodelocal.segment_store(None, node, str(path), here="another-node")  # type: ignore[arg-type]
    fs = store.fs
    read, direct = fs.bytes_read, fs.bytes_direct
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        client = httpfs.ShuffleServerFileSystem({node: url}, skip_instance_cache=True)
        fs._servers[node] = (client, (str(path.parent.parent), str(path.parent.parent)))

        assert store.read_range(name, 7, len(data) - 7) == data[7:]  # three pieces
    assert fs.bytes_read - read == len(data) - 7
    assert fs.bytes_direct == direct
    assert "reading them through its reader actor instead" in caplog.text
    with store.open_read(name) as f:  # streamed, a piece per cache miss
        f.seek(nodefs.PIECE_BYTES - 3)
        assert f.read(10) == data[nodefs.PIECE_BYTES - 3 : nodefs.PIECE_BYTES + 7]
    assert fs.bytes_direct == direct


def test_a_remote_read_from_a_dead_reader_names_the_map_output_to_recompute(
    executor: RayExecutor,
):
    # The last test of the module: it kills the module's reader.
    from scheduler.backends.ray import nodefs
    from shuffle import nodelocal
    from shuffle.errors import CorruptSegmentError

    node = ray.get_runtime_context().get_node_id()
    path = str(Path(executor.local_dir) / node / "job" / "map-00003-a1.arrow")
    ray.kill(executor.reader_actors()[node], no_restart=True)
    nodefs.install(executor.reader_prefix, ray.get_runtime_context().namespace)
    try:
        store, name = nodelocal.segment_store(None, node, path, here="elsewhere")  # type: ignore[arg-type]
        with pytest.raises(CorruptSegmentError, match="its map task must run again") as info:
            store.read_range(name, 0, 10)
    finally:
        nodelocal.set_remote_opener(None)

    assert info.value.data_path == path
