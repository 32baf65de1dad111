"""The supervisor: starts queued jobs, follows running ones, re-attaches them after a restart.

One loop per gateway, started by the app's lifespan. Each pass (every
``poll_seconds``, or at once when a job is submitted) it

1. polls every running job's backend handle: a finished run becomes
   SUCCEEDED (its ``summary.json`` gives counters and timings) or FAILED (its
   log's error paragraph becomes the job's error); a run that died without an
   exit status (its process was killed, say with the machine) is launched
   again with the same job id, which resumes it, up to ``max_launches``;
2. reads running jobs' progress (commit records) and stores what changed;
3. starts queued jobs, oldest first, while their queue has room.

The database is the only memory: on start (:meth:`Supervisor.recover`) the
jobs it says are RUNNING are re-attached through the handle in their row if
their process is alive, finished if it ended meanwhile, resumed if it died.
A job claimed (QUEUED -> RUNNING) but never launched, because the gateway
died between the two writes, is launched then. Every status change is a
compare-and-set, and all of them happen under one lock, so a cancel racing a
run's end leaves exactly one outcome, and no job is ever launched twice at
once.

Passes run in a worker thread (they read the disk and the database); state
changes wake the server-sent-event streams on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mrk8s.errors import MRError
from mrk8s.gateway import state as st
from mrk8s.gateway.backends import Backend, Handle, Outcome
from mrk8s.gateway.backends.local import progress_from_summary
from mrk8s.gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

#: Lines of a failed run's log kept as the job's error when the CLI printed no paragraph.
ERROR_TAIL_LINES = 20


class Supervisor:
    """See the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        state: st.State,
        backends: dict[str, Backend],
        on_change: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.config = config
        self.state = state
        self.backends = backends
        #: Called (from the pass's thread) with a job id whenever its row changed.
        self.on_change = on_change
        self._lock = threading.Lock()
        self._handles: dict[str, Handle] = {}
        self._progress_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self.reattached = 0
        self.resumed = 0
        #: Declarative mode: removes from the cluster what the reconciler applied for a job
        #: that no backend follows (set by the app to the reconciler's ``cancel``).
        self.cancel_applied: Callable[[dict[str, Any]], None] | None = None

    # -- the loop ---------------------------------------------------------------------

    def wake(self) -> None:
        """Run a pass now (call on the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        await asyncio.to_thread(self.recover)
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                logger.exception("gateway supervisor pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)
            self._wake.clear()

    def backend(self, job: dict[str, Any]) -> Backend:
        """The backend of the cluster that holds the job (the local one: by its kind)."""
        backend = self.backends.get(job["cluster"]) or self.backends.get(job["backend"])
        if backend is None:
            raise KeyError(
                f"job {job['id']} is on cluster {job['cluster']!r}, which is not in the "
                f"gateway's config any more (its clusters: {', '.join(self.backends)})"
            )
        return backend

    def adopt(self, job_id: str, handle: Handle) -> bool:
        """Follow a run someone else started (the declarative mode's reconciler applied its
        objects): the job becomes RUNNING with this handle; False if it already ended."""
        with self._lock:
            job = self.state.job(job_id)
            if job is None or not self.state.transition(
                job_id,
                [st.QUEUED, st.RUNNING],
                st.RUNNING,
                f"following {handle.namespace}/{handle.name} on cluster {handle.cluster}",
                started_at=job["started_at"] or time.time(),
            ):
                return False
            self.state.update_job(
                job_id, handle=handle.to_json(), launches=int(job["launches"] or 0) + 1
            )
            self._handles[job_id] = handle
        self.on_change(job_id)
        return True

    def recover(self) -> None:
        with self._lock:
            for job in self.state.jobs_in([st.RUNNING]):
                handle = Handle.of(job)
                if handle is None and job.get("git_commit"):
                    continue  # declarative: applied by the reconciler, followed by no backend
                if handle is None:
                    logger.info("job %s was claimed but not launched: launching it", job["id"])
                    self._launch(job)
                    continue
                backend = self.backend(job)
                outcome = backend.poll(job, handle)
                if outcome is None:
                    what = handle.name or f"process {handle.pid}"
                    logger.info("job %s: re-attached to %s", job["id"], what)
                    self._handles[job["id"]] = handle
                    self.reattached += 1
                    self.state.transition(
                        job["id"],
                        [st.RUNNING],
                        st.RUNNING,
                        f"re-attached to {what} after a gateway restart",
                    )
                    self.on_change(job["id"])
                else:
                    self._ended(job, outcome)

    def tick(self) -> None:
        with self._lock:
            for job_id, handle in list(self._handles.items()):
                job = self.state.job(job_id)
                if job is None or job["status"] != st.RUNNING:
                    self._handles.pop(job_id, None)
                    continue
                outcome = self.backend(job).poll(job, handle)
                if outcome is not None:
                    self._handles.pop(job_id, None)
                    self._ended(job, outcome)
                else:
                    self._read_progress(job)
            self._start_queued()

    # -- starting ---------------------------------------------------------------------

    def _start_queued(self) -> None:
        running: dict[str, int] = defaultdict(int)
        for job in self.state.jobs_in([st.RUNNING]):
            running[job["queue"]] += 1
        for job in self.state.jobs_in([st.QUEUED]):
            if job.get("git_commit"):
                continue  # declarative: started by the reconciler from git, not here
            queue = self.config.queue(job["queue"])
            cap = queue.max_running if queue else 1
            if running[job["queue"]] >= cap:
                continue
            if not self.state.transition(
                job["id"], [st.QUEUED], st.RUNNING, "started", started_at=time.time()
            ):
                continue  # cancelled meanwhile
            running[job["queue"]] += 1
            fresh = self.state.job(job["id"])
            assert fresh is not None
            self._launch(fresh)
            self.on_change(job["id"])

    def _launch(self, job: dict[str, Any]) -> None:
        try:
            handle = self.backend(job).start(job)
        except (OSError, MRError, KeyError) as exc:
            self.state.transition(
                job["id"],
                [st.RUNNING],
                st.FAILED,
                "could not start",
                error=f"the gateway could not start the job on cluster {job['cluster']}: {exc}",
                finished_at=time.time(),
            )
            self.on_change(job["id"])
            return
        self.state.update_job(
            job["id"],
            pid=handle.pid,
            pid_started=handle.started,
            handle=handle.to_json(),
            launches=int(job["launches"] or 0) + 1,
        )
        self._handles[job["id"]] = handle

    # -- following ----------------------------------------------------------------------

    def _read_progress(self, job: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._progress_at.get(job["id"], 0.0) < 1.0:
            return
        self._progress_at[job["id"]] = now
        progress = self.backend(job).progress(job)
        if progress is not None and progress != job["progress"]:
            self.state.update_job(job["id"], only_if=st.RUNNING, progress=progress)
            self.on_change(job["id"])

    def _ended(self, job: dict[str, Any], outcome: Outcome) -> None:
        job_id = job["id"]
        self._progress_at.pop(job_id, None)
        now = time.time()
        if outcome.exit_code is None:
            if int(job["launches"] or 0) < self.config.max_launches:
                n = int(job["launches"] or 0) + 1
                logger.warning("job %s: its process died; resuming it (launch %d)", job_id, n)
                if self.state.transition(
                    job_id,
                    [st.RUNNING],
                    st.RUNNING,
                    f"its process died without an exit status; resuming it (launch {n})",
                ):
                    self.resumed += 1
                    self._launch(job)
            else:
                self.state.transition(
                    job_id,
                    [st.RUNNING],
                    st.FAILED,
                    "process died",
                    finished_at=now,
                    error=(
                        f"the job's process died without an exit status {job['launches']} "
                        f"time(s) (killed?); see its log. max_launches in the gateway's "
                        "config bounds the resumes"
                    ),
                )
        elif outcome.exit_code == 0:
            summary = self.backend(job).summary(job)
            self.state.transition(
                job_id,
                [st.RUNNING],
                st.SUCCEEDED,
                "finished",
                finished_at=now,
                exit_code=0,
                summary=summary,
                progress=progress_from_summary(summary) if summary else job["progress"],
            )
        else:
            self.state.transition(
                job_id,
                [st.RUNNING],
                st.FAILED,
                f"exited with status {outcome.exit_code}",
                finished_at=now,
                exit_code=outcome.exit_code,
                error=error_text(Path(job["log_path"])),
            )
        self.on_change(job_id)

    # -- cancelling -------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job (its processes are gone on return); False if ended."""
        with self._lock:
            job = self.state.job(job_id)
            if job is None or not self.state.transition(
                job_id,
                [st.QUEUED, st.RUNNING],
                st.CANCELLED,
                "cancelled",
                finished_at=time.time(),
            ):
                return False
            handle = self._handles.pop(job_id, None) or Handle.of(job)
        self.on_change(job_id)
        if handle is not None:
            self.backend(job).cancel(job, handle)
        elif job.get("git_commit") and self.cancel_applied is not None:
            self.cancel_applied(job)
        return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def error_text(log: Path) -> str:
    """The error paragraph ``mrk8s`` printed at the end of the log, else the log's tail."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "the job failed and left no log"
    # Only the last launch's lines.
    starts = [i for i, line in enumerate(lines) if line.startswith("mrk8s gateway: ")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    # The CLI's error paragraph (and the notes after it) ends the log; progress lines
    # before it carry the same prefix.
    first = next((i for i, line in enumerate(lines) if line.startswith(_ERROR_STARTS)), None)
    said = [line.removeprefix("mrk8s: ") for line in lines[first:]] if first is not None else []
    return "\n".join(said or lines[-ERROR_TAIL_LINES:]) or "the job failed without a message"


_ERROR_STARTS = ("mrk8s: error: ", "mrk8s: job failed: ")
