"""The local backend: each job is ``mrk8s run`` in a process session of its own.

A job's directory (``STATE/jobs/ID/``) holds its frozen script, its log
(``driver.log``: the run's stdout and stderr, every launch appended, kept
after the job ends), the exit file the launcher writes
(:mod:`mrk8s.gateway.launch`) and its output (``output/``, text format).
Map outputs and commit records go to the shared ``STATE/shuffle/ID/``, which
is what ``mrk8s status`` reads; the run is started with ``--job-id ID``, so a
second launch of a job whose process died resumes it: its committed tasks are
skipped, not run again.

The process is the leader of a new session (so a gateway restart or a
Ctrl-C of the gateway does not reach it), and its workers are in its process
group: cancelling signals the whole group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from mrk8s.gateway.backends import Handle, Outcome
from mrk8s.gateway.forkserver import ForkServer

logger = logging.getLogger(__name__)

EXIT_FILE = "exit.json"
LOG_FILE = "driver.log"

#: Seconds a cancelled job gets to stop on SIGTERM before SIGKILL.
CANCEL_GRACE = 5.0

#: Environment variables the gateway holds that a job's (user) code must not see.
_PRIVATE_ENV = ("MRK8S_GATEWAY_TOKEN",)


class LocalBackend:
    """See the module docstring; ``shuffle_dir`` is shared by the jobs of one gateway."""

    name = "local"

    def __init__(
        self,
        shuffle_dir: Path,
        storage_options: dict[str, Any] | None = None,
        *,
        use_forkserver: bool = True,
    ) -> None:
        self.shuffle_dir = shuffle_dir
        self.storage_options = storage_options or {}
        # The processes this gateway started, to reap them (a re-attached one is not our child).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        #: Forks jobs from a process that has the driver imported (forkserver.py); None:
        #: each job is a fresh interpreter.
        self.forkserver: ForkServer | None = ForkServer() if use_forkserver else None

    def command(self, job: dict[str, Any]) -> list[str]:
        spec = job["spec"]
        job_dir = Path(job["job_dir"])
        run = [
            "run",
            spec["script_path"],
            *spec["input_paths"],
            "--job-id",
            job["id"],
            "--shuffle-dir",
            str(self.shuffle_dir),
            "-o",
            job["output_dir"],
            "--output-format",
            "text",
            "--reducers",
            str(spec["reducers"]),
            "--workers",
            str(spec["workers"]),
        ]
        if spec.get("memory_per_worker"):
            run += ["--memory-per-worker", spec["memory_per_worker"]]
        if self.storage_options:
            run += ["--storage-options", json.dumps(self.storage_options)]
        if spec.get("args"):
            run += ["--", *spec["args"]]
        exit_file = str(job_dir / EXIT_FILE)
        return [sys.executable, "-m", "mrk8s.gateway.launch", exit_file, "--", *run]

    def start(self, job: dict[str, Any]) -> Handle:
        job_dir = Path(job["job_dir"])
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / EXIT_FILE).unlink(missing_ok=True)
        argv = self.command(job)
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        launch = int(job.get("launches") or 0) + 1
        with open(job["log_path"], "ab") as log:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(f"mrk8s gateway: {when} launch {launch} of job {job['id']}\n".encode())
            log.flush()
        if self.forkserver is not None:
            try:
                pid = self.forkserver.spawn(
                    argv[3:], cwd=str(job_dir), env=env, log=job["log_path"]
                )
                return Handle(pid=pid, started=psutil.Process(pid).create_time())
            except psutil.NoSuchProcess:
                return Handle(pid=pid, started=0.0)  # already gone: poll() reads its exit file
            except OSError as exc:
                logger.warning("job %s: %s; starting a fresh interpreter", job["id"], exc)
        with open(job["log_path"], "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=job_dir,
                env=env,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0  # already gone: poll() reaps it and reads its exit file
        return Handle(pid=proc.pid, started=started)

    def _alive(self, handle: Handle) -> bool:
        assert handle.pid is not None, "a local job's handle names its process"
        child = self._children.get(handle.pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[handle.pid]
            return False
        try:
            proc = psutil.Process(handle.pid)
            if abs(proc.create_time() - handle.started) > 0.05:
                return False  # the pid was reused by another process
            return bool(proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def poll(self, job: dict[str, Any], handle: Handle) -> Outcome | None:
        if self._alive(handle):
            return None
        try:
            data = json.loads((Path(job["job_dir"]) / EXIT_FILE).read_text())
            return Outcome(exit_code=int(data["exit_code"]))
        except (OSError, ValueError, KeyError):
            return Outcome(exit_code=None)

    def cancel(self, job: dict[str, Any], handle: Handle) -> None:
        procs = self._group(handle) if handle.pid is not None else []
        for sig, wait in ((signal.SIGTERM, CANCEL_GRACE), (signal.SIGKILL, CANCEL_GRACE)):
            if not procs:
                break
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            _, procs = psutil.wait_procs(procs, timeout=wait)
        child = self._children.pop(handle.pid, None) if handle.pid is not None else None
        if child is not None:
            child.wait()

    def _group(self, handle: Handle) -> list[psutil.Process]:
        """The job's process and every process of its session (its workers, their children)."""
        assert handle.pid is not None
        found: dict[int, psutil.Process] = {}
        try:
            leader = psutil.Process(handle.pid)
            if abs(leader.create_time() - handle.started) <= 0.05:
                found[leader.pid] = leader
                for p in leader.children(recursive=True):
                    found[p.pid] = p
        except psutil.NoSuchProcess:
            pass
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == handle.pid and p.pid not in found:
                    found[p.pid] = p
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return list(found.values())

    def progress(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        from mrk8s.cli import jobs as cli_jobs
        from mrk8s.errors import MRError
        from mrk8s.tasks.run import PLAN_FILE

        if not (self.shuffle_dir / job["id"] / PLAN_FILE).exists():
            return None  # not planned yet (open_job would list every job to say so)
        try:
            store, plan = cli_jobs.open_job(job["id"], str(self.shuffle_dir))
            stages = cli_jobs.status(store, plan)
        except (MRError, OSError, ValueError, KeyError):
            return None  # not planned yet, or being cleaned up at the end
        return [
            {
                "step": st.step,
                "stage": st.stage,
                "tasks": st.tasks,
                "committed": st.committed,
                "state": st.state,
                "failures": len(st.failures),
            }
            for st in stages
        ]

    def summary(self, job: dict[str, Any]) -> dict[str, Any] | None:
        try:
            data = json.loads((Path(job["output_dir"]) / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def output(self, job: dict[str, Any]) -> Iterator[bytes]:
        parts = sorted(p for p in Path(job["output_dir"]).iterdir() if p.name.startswith("part-"))
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

    def close(self) -> None:
        """Nothing to let go of: the jobs' processes outlive the gateway on purpose."""


def progress_from_summary(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-stage progress of a finished job, from its summary.json."""
    out = []
    for name, st in summary.get("stages", {}).items():
        step, _, stage = name.partition("-")
        out.append(
            {
                "step": int(step.removeprefix("step")),
                "stage": stage,
                "tasks": st.get("tasks", 0),
                "committed": st.get("tasks", 0),
                "state": "done",
                "failures": st.get("failed_attempts", 0),
            }
        )
    return out
