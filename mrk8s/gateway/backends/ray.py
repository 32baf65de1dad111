"""The ``ray`` backend: a job's driver is a Ray job, submitted through Ray's Job Submission API.

One :class:`RayBackend` serves one cluster of the gateway's config (its
``address``: the URL of the Ray dashboard, e.g. ``http://head:8265``, which
serves the Job Submission API; it needs ``ray[default]`` on the head).

- **start** submits ``mrk8s run SCRIPT INPUTS --backend ray --ray-address
  auto --job-id ID ...`` with a ``working_dir`` holding the job's script and
  the inputs uploaded to the gateway (URLs are passed as they are). The
  submission id is the job id (``ID-launchN`` for a resumed launch: Ray never
  takes an id twice), and it is looked up before submitting, so a gateway
  that died between submitting and recording the handle submits nothing
  again on restart.
- **status** is read from Ray's job API (``get_job_info``) on each pass of
  the supervisor. This is a poll: Ray 2.60's Job Submission API has no
  stream of status changes (its only stream, ``tail_job_logs``, carries log
  lines, not states).
- **logs**: when the Ray job ends (or is cancelled), ``get_job_logs`` is
  appended to the job's log in the gateway's state, so it is served after
  the Ray cluster forgot the job or went away.
- **cancel** is ``stop_job``, then waits until Ray reports the job STOPPED
  (or otherwise ended).
- **progress, summary, output** are read as the local backend reads them:
  the shuffle directory (commit records) and the output directory are paths
  of the gateway's state directory, so the Ray cluster must see that
  directory (the same machine, or a shared filesystem).

``ray`` is imported only when a job of the cluster is started or followed.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrk8s.errors import UsageError
from mrk8s.gateway.backends import Handle, Outcome
from mrk8s.gateway.backends.local import LocalBackend
from mrk8s.gateway.config import Cluster

logger = logging.getLogger(__name__)

#: Seconds a cancel waits for Ray to report the job stopped.
CANCEL_TIMEOUT = 60.0
#: Seconds between two looks at a stopping job.
WAIT_STEP = 0.5
#: Bytes of uploaded inputs a job may carry in its working_dir (Ray refuses large ones).
SHIP_LIMIT = 100 << 20
#: The working_dir of a job's Ray submission, in its job directory.
CODE_DIR = "code"


def submission_id(job: dict[str, Any], launch: int) -> str:
    """The Ray submission id of a launch of ``job``."""
    return job["id"] if launch <= 1 else f"{job['id']}-launch{launch}"


class RayBackend:
    """Runs the jobs of one Ray cluster of the config; see the module docstring."""

    name = "ray"

    def __init__(self, cluster: Cluster, shuffle_dir: Path) -> None:
        if not cluster.address:
            raise UsageError(
                f"cluster {cluster.name!r} (kind ray) has no address: give the URL of its "
                "dashboard, which serves the Job Submission API (e.g. http://head:8265)"
            )
        self.cluster = cluster
        self.address = cluster.address
        self.shuffle_dir = shuffle_dir
        # Progress, summary and output are read from the gateway's disk, as for local jobs.
        self._files = LocalBackend(shuffle_dir, use_forkserver=False)
        self._client: Any = None
        self._unreachable_logged = 0.0

    def client(self) -> Any:
        """The Job Submission client (made on first use; ConnectionError if unreachable)."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def _info(self, sid: str) -> Any:
        """Ray's record of submission ``sid``; None if Ray does not know it."""
        try:
            return self.client().get_job_info(sid)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    # -- the interface ------------------------------------------------------------------

    def start(self, job: dict[str, Any]) -> Handle:
        launch = int(job.get("launches") or 0) + 1
        sid = submission_id(job, launch)
        handle = Handle(cluster=self.cluster.name, name=sid)
        try:
            if self._info(sid) is not None:
                return handle  # submitted by a gateway that died before recording it
        except OSError as exc:
            raise OSError(self._unreachable(exc)) from exc
        code = Path(job["job_dir"]) / CODE_DIR
        spec = job["spec"]
        inputs = self._ship_inputs(code, spec["input_paths"])
        run = [
            "mrk8s",
            "run",
            os.path.basename(spec["script_path"]),
            *inputs,
            *("--backend", "ray", "--ray-address", "auto", "--job-id", job["id"]),
            *("--shuffle-dir", str(self.shuffle_dir)),
            *("-o", job["output_dir"], "--output-format", "text"),
            *("--reducers", str(spec["reducers"]), "--workers", str(spec["workers"])),
        ]
        if spec.get("memory_per_worker"):
            run += ["--memory-per-worker", spec["memory_per_worker"]]
        if spec.get("args"):
            run += ["--", *spec["args"]]
        with open(job["log_path"], "ab") as log:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(
                f"mrk8s gateway: {when} launch {launch} of job {job['id']} on Ray cluster "
                f"{self.cluster.name} ({self.address}), submission {sid}\n".encode()
            )
        try:
            self.client().submit_job(
                entrypoint=shlex.join(run),
                submission_id=sid,
                runtime_env={"working_dir": str(code)},
                metadata={"mrk8s_job_id": job["id"], "user": str(job.get("user") or "")},
            )
        except OSError as exc:
            raise OSError(self._unreachable(exc)) from exc
        except RuntimeError as exc:
            raise OSError(f"Ray refused the job's submission {sid}: {exc}") from exc
        return handle

    def _ship_inputs(self, code: Path, paths: list[str]) -> list[str]:
        """The job's inputs as its driver names them: URLs as they are, files of the gateway
        copied into the working_dir (``inputs/``) and named relative to it."""
        local = [p.removeprefix("file://") for p in paths if "://" not in p or p[:7] == "file://"]
        size = sum(os.path.getsize(p) for p in local)
        if size > SHIP_LIMIT:
            raise UsageError(
                f"the job's uploaded inputs are {size / 2**20:.0f} MiB, more than the "
                f"{SHIP_LIMIT >> 20} MiB a Ray job's working_dir carries: put them in object "
                "storage the Ray cluster reads and give their URLs as inputs"
            )
        out = []
        for i, path in enumerate(paths):
            if "://" in path and not path.startswith("file://"):
                out.append(path)
                continue
            src = path.removeprefix("file://")
            name = f"inputs/{i:04d}-{os.path.basename(src)}"
            dst = code / name
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            out.append(name)
        return out

    def poll(self, job: dict[str, Any], handle: Handle) -> Outcome | None:
        from ray.job_submission import JobStatus

        try:
            info = self._info(handle.name)
        except (OSError, RuntimeError) as exc:
            # Not reachable now (e.g. the head restarts): the job stays RUNNING; try again.
            now = time.monotonic()
            if now - self._unreachable_logged > 60:
                self._unreachable_logged = now
                logger.warning("%s", self._unreachable(exc))
            return None
        if info is None:
            # Ray forgot it (its head restarted): _SUCCESS in the output says if it finished.
            if (Path(job["output_dir"]) / "_SUCCESS").exists():
                return Outcome(exit_code=0)
            self._note(job, f"Ray has no job {handle.name} any more (its head restarted?)")
            return Outcome(exit_code=None)
        if info.status in (JobStatus.PENDING, JobStatus.RUNNING):
            return None
        self.keep_logs(job, handle.name)
        if info.status == JobStatus.SUCCEEDED:
            return Outcome(exit_code=0)
        if info.status == JobStatus.STOPPED:
            self._note(
                job,
                f"mrk8s: error: the Ray job {handle.name} was stopped outside the gateway "
                "(ray job stop?); submit the job again to run it",
            )
            return Outcome(exit_code=1)
        code = getattr(info, "driver_exit_code", None)
        if code is None:
            # The driver died without an exit status (its node or supervisor died).
            self._note(job, f"Ray: job {handle.name} failed: {info.message}")
            return Outcome(exit_code=None)
        return Outcome(exit_code=int(code) or 1)

    def cancel(self, job: dict[str, Any], handle: Handle) -> None:
        from ray.job_submission import JobStatus

        try:
            if self._info(handle.name) is None:
                return
            self.client().stop_job(handle.name)
            deadline = time.monotonic() + CANCEL_TIMEOUT
            while True:
                status = self.client().get_job_status(handle.name)
                if status.is_terminal():
                    break
                if time.monotonic() > deadline:
                    raise OSError(
                        f"Ray job {handle.name} on cluster {self.cluster.name} is still "
                        f"{status} {CANCEL_TIMEOUT:.0f} s after it was stopped: see `ray job "
                        f"status {handle.name} --address {self.address}`"
                    )
                time.sleep(WAIT_STEP)
        except OSError as exc:
            raise OSError(self._unreachable(exc)) from exc
        if status != JobStatus.STOPPED:
            logger.info("job %s: Ray job %s ended %s before it stopped", job["id"], handle, status)
        self.keep_logs(job, handle.name)

    def keep_logs(self, job: dict[str, Any], sid: str) -> None:
        """Append the ended Ray job's log to the job's log, once (see the module docstring)."""
        marker = Path(job["job_dir"]) / f"ray-{sid}.logged"
        if marker.exists():
            return
        try:
            text = self.client().get_job_logs(sid)
        except (OSError, RuntimeError) as exc:
            text = f"(the Ray job's log could not be read: {exc})\n"
        with open(job["log_path"], "a") as log:
            log.write(f"==> Ray job {sid} <==\n{text}")
            if text and not text.endswith("\n"):
                log.write("\n")
        marker.touch()

    def _note(self, job: dict[str, Any], line: str) -> None:
        with open(job["log_path"], "a") as log:
            log.write(line + "\n")

    def _unreachable(self, exc: BaseException) -> str:
        return (
            f"cluster {self.cluster.name}: cannot reach Ray's Job Submission API at "
            f"{self.address} ({exc}): check that the head runs with its dashboard "
            "(ray start --head --include-dashboard true, ray[default] installed) and that "
            "address is its URL (http://HOST:8265)"
        )

    def progress(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        return self._files.progress(job)

    def summary(self, job: dict[str, Any]) -> dict[str, Any] | None:
        return self._files.summary(job)

    def output(self, job: dict[str, Any]) -> Iterator[bytes]:
        return self._files.output(job)

    def close(self) -> None:
        """Nothing to let go of: the Ray jobs run on without the gateway."""
        self._client = None
