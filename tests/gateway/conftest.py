"""The real gateway, started as a subprocess on loopback and driven over HTTP with httpx.

``gateway`` (a factory fixture) starts ``mrk8s gateway serve`` on a free
port with a state directory and a config file of the test's, waits for
``/healthz``, and can stop it (SIGTERM or SIGKILL) and start it again on the
same state directory. At the end of the test the service is stopped and
every job process it left is killed (they run in sessions of their own, so
nothing else would).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the gateway needs its extra: pip install 'mrk8s[gateway]'")

import contextlib

import httpx
import psutil
import yaml

JOBS = Path(__file__).parent / "jobs"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

TOKENS = {"alice": "alice-token", "bob": "bob-token", "root": "root-token"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}

#: Users of every test gateway: two users and an admin (bob also has a Basic password).
USERS = [
    {"name": "alice", "token": TOKENS["alice"]},
    {"name": "bob", "token": TOKENS["bob"], "password": "bob-password"},
    {"name": "root", "token": TOKENS["root"], "admin": True},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """One gateway service over one state directory; see the module docstring."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.config_path = root / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.database: str | None = config.get("database")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self.port = free_port()
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if k != "MRK8S_GATEWAY_TOKEN"}
        log = open(self.root / f"service-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "mrk8s.cli", "gateway", "serve",
                "--port", str(self.port),
                "--state-dir", str(self.state_dir),
                "--config", str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the gateway exited at start:\n{self.service_log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the gateway did not answer in {timeout} s:\n{self.service_log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the gateway did not stop on {sig!r}") from None
        self.proc = None

    def service_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("service-*")))

    def client(self, user: str | None = "alice", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)

    def job_rows(self) -> list[dict[str, Any]]:
        """The jobs table, read straight from the database (for the tests' own checks)."""
        if self.database is not None:
            import sqlalchemy as sa

            from mrk8s.gateway.state import engine_url

            engine = sa.create_engine(engine_url(self.database), poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    if not sa.inspect(conn).has_table("jobs"):
                        return []
                    return [dict(r._mapping) for r in conn.execute(sa.text("select * from jobs"))]
            finally:
                engine.dispose()
        db = self.state_dir / "gateway.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("select * from jobs")]

    def kill_jobs(self) -> None:
        for row in self.job_rows():
            if row["pid"]:
                kill_session(row["pid"])


def kill_session(pid: int) -> None:
    """SIGKILL every process of the session ``pid`` leads (a job and its workers)."""
    procs = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == pid:
                procs.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def base_config(**extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "users": USERS,
        "queues": {"default": {"max_running": 2, "default_workers": 1}},
    }
    config.update(extra)
    return config


#: The state databases a module's tests run against when it says
#: ``pytest.mark.parametrize("gateway_db", DATABASES, indirect=True)``.
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server on loopback for the whole session (tests/gateway/postgres.py)."""
    from tests.gateway.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway_db(request: pytest.FixtureRequest) -> str | None:
    """The ``database`` URL of the test's gateways: None (SQLite in the state dir) unless the
    test is parametrized with ``postgresql``, which gets a fresh database of its own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database())


@pytest.fixture
def gateway(tmp_path: Path, gateway_db: str | None) -> Iterator[Any]:
    """``gateway(**config)`` -> a started :class:`Gateway` (config merged over base_config)."""
    made: list[Gateway] = []

    def make(**config: Any) -> Gateway:
        root = tmp_path / f"gw{len(made)}"
        root.mkdir()
        if gateway_db is not None:
            config.setdefault("database", gateway_db)
        gw = Gateway(root, base_config(**config))
        made.append(gw)
        gw.start()
        return gw

    yield make
    for gw in made:
        try:
            gw.stop(signal.SIGTERM)
        finally:
            gw.kill_jobs()


def upload(client: httpx.Client, name: str, data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    r = client.post("/v1/artifacts", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    return job


def follow(client: httpx.Client, job_id: str, timeout: float = 240) -> list[dict[str, Any]]:
    """The job's server-sent events, read until the stream ends (at a terminal state)."""
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append({"event": kind, **json.loads(line.removeprefix("data: "))})
    return events


def wait_until(predicate: Any, timeout: float = 120, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen in {timeout} s")
