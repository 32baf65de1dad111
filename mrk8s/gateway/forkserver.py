"""A warm launcher for the local backend: one process that imported the driver forks each job.

Most of the CPU a small job costs is the Python start of its driver:
importing pyarrow, numpy, fsspec and mrk8s's engine (about 0.7 s of CPU of
the 1.4 s a tiny word count takes here). The local backend therefore asks
this process, started once per gateway with those modules imported, to
fork each job. The forked child is what ``python -m mrk8s.gateway.launch``
would have been: the leader of a new session, its output appended to the
job's log, its working directory and environment the job's, and it writes
the exit file the same way (it runs :func:`mrk8s.gateway.launch.main`).
Only the import is skipped; the job's worker processes start as before.

The protocol is one JSON line each way on the server's stdin and stdout:
``{"args", "cwd", "env", "log"}`` in, ``{"pid": N}`` or ``{"error": TEXT}``
out. The server ignores SIGCHLD, so its children are reaped by the kernel
(the gateway follows them by pid, start time and exit file, as it follows a
job it re-attached after a restart), and exits when its stdin closes, i.e.
when the gateway is gone; the jobs, in sessions of their own, go on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: What the server imports before it forks anything (what every job's driver imports).
PRELOAD = ("mrk8s.cli", "mrk8s.engine.driver", "mrk8s.gateway.launch")


def _child(request: dict[str, Any], ready: int) -> int:
    """In the forked child: become the job (see the module docstring) and run it."""
    os.setsid()
    os.close(ready)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    from mrk8s.gateway import launch

    sys.argv = [launch.__file__, *request["args"]]
    return launch.main(list(request["args"]))


def serve() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        # The child closes its end once it leads its own session: the pid is answered then,
        # so the gateway never sees the job in this server's session.
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(ready_r)
            os.close(ready_w)
            replies.write(json.dumps({"error": f"fork failed: {exc}"}).encode() + b"\n")
            replies.flush()
            continue
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                code = _child(request, ready_w)
            except BaseException:
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF: the child called setsid (or died)
        os.close(ready_r)
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()


class ForkServer:
    """The gateway's side: starts the server on first use and asks it for jobs."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def spawn(self, args: Sequence[str], *, cwd: str, env: Mapping[str, str], log: str) -> int:
        """Fork a job running ``launch.main(args)``; its pid. Raises OSError if it cannot."""
        request = {"args": list(args), "cwd": cwd, "env": dict(env), "log": log}
        with self._lock:
            proc = self._server(env)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (OSError, ValueError) as exc:
                self._stop()
                raise OSError(f"the gateway's fork server is gone: {exc}") from exc
            if not line:
                self._stop()
                raise OSError("the gateway's fork server exited")
            reply = json.loads(line)
        if "pid" not in reply:
            raise OSError(reply.get("error", "the fork server gave no pid"))
        return int(reply["pid"])

    def _server(self, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mrk8s.gateway.forkserver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=dict(env),
                start_new_session=True,
            )
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._stop()
                self._proc = None


if __name__ == "__main__":
    serve()
