"""Child processes that die with their parent and are stopped as whole groups.

Every process the test cluster starts (the four control-plane components, the
node agent, each pod's container) goes through `spawn`: it gets its own
process group, so a stop reaches whatever it started in turn, and
PR_SET_PDEATHSIG, so the kernel sends it SIGKILL when the process that started
it dies, even by `kill -9`. A crashed test run therefore leaves nothing
running.

PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so call
`spawn` from a thread that outlives the child (the main thread, or the
thread that also waits for the child).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec."""
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    # The parent may have died before prctl took effect: then nobody is left to reap us.
    if os.getppid() != parent:
        os._exit(127)


def spawn(
    argv: Sequence[str],
    *,
    log: Path | IO[bytes],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv in a new process group, stdout and stderr to log, killed if we die."""
    parent = os.getpid()
    out = open(log, "ab") if isinstance(log, Path) else log  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(parent),
        )
    finally:
        if isinstance(log, Path):
            out.close()


def stop(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> int:
    """SIGTERM the process's group, SIGKILL it after grace seconds; return the exit code."""
    _signal_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)
    return process.wait()


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a process group (members that outlived their leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


class ProcessDied(RuntimeError):
    """A process we wait for died: waiting longer cannot help."""


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str):  # type: ignore[no-untyped-def]
    """Call predicate until it returns something true, or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except ProcessDied:
            raise
        except Exception as error:  # the thing is not up yet: keep its last word
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}; last error: {last_error!r}")
