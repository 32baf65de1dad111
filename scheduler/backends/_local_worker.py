"""The body of a local worker process: receive a task, run it, answer.

Started by :mod:`scheduler.backends.local` with two inherited pipe file
descriptors and the executor's preloads (``module`` or ``module:function``),
which it imports (and calls) before it waits for work. Messages are JSON;
``null`` (or the driver going away) stops the worker. Errors are caught per
task and sent back as :class:`scheduler.stage.TaskError`; the process itself
survives them.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from multiprocessing.connection import Connection

from scheduler.stage import TaskError, run_task


def _die_with_parent() -> None:
    """Be killed when the driver dies, even in the middle of a task.

    A worker of a killed driver would otherwise finish its task and commit it
    while a resumed driver runs the same task again. Linux only (prctl); other
    systems fall back to noticing the closed pipe between tasks.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the driver died before prctl took effect
        os._exit(1)


def _preload(names: list[str]) -> None:
    """Import (and call) what the tasks will need, while nobody waits for them yet.

    A failure is only logged: the first task that needs the same thing meets
    the same error, and reports it as its own.
    """
    for name in names:
        module, _, function = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception as exc:  # the task reports it
            logging.getLogger(__name__).debug("preload %s failed: %r", name, exc)


def _leave_ctrl_c_to_the_driver() -> None:
    """Let Ctrl-C (SIGINT to the whole process group) stop the driver, not this worker.

    The driver stops its workers itself (a busy one is killed, an idle one
    told to exit), so the user sees one line from it and no traceback from
    here. A handler that does nothing, rather than SIG_IGN: an ignored signal
    stays ignored in the processes a task starts, a handled one does not.
    """
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: None)


def main(argv: list[str]) -> int:
    _leave_ctrl_c_to_the_driver()
    _die_with_parent()
    fd_in, fd_out = int(argv[0]), int(argv[1])
    # Keep the pipes out of any process a task starts, so that the driver sees
    # this worker's death at once even if a grandchild lives on.
    os.set_inheritable(fd_in, False)
    os.set_inheritable(fd_out, False)
    recv = Connection(fd_in, writable=False)
    send = Connection(fd_out, readable=False)
    _preload(argv[2:])
    while True:
        try:
            raw = recv.recv_bytes()
        except (EOFError, OSError):
            return 0
        message = json.loads(raw)
        if message is None:
            return 0
        try:
            result = run_task(
                message["entrypoint"], message["payload"], message["index"], message["attempt"]
            )
            reply = {"ok": True, "result": result}
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            reply = {"ok": False, "error": TaskError.from_exception(exc).to_json()}
        sys.stdout.flush()
        send.send_bytes(json.dumps(reply).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
