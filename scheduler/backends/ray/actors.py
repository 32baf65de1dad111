"""The Ray backend's actors: task workers and per-node readers.

Created by :class:`scheduler.backends.ray.executor.RayExecutor`, each pinned
to one node (``NodeAffinitySchedulingStrategy``, not soft):

- :class:`TaskWorker` runs tasks, one at a time, by calling
  :func:`scheduler.stage.run_task`, the function every backend's worker calls.
  It tells the task code where it is: ``$MRK8S_NODE`` (the Ray node id, which
  the commit records name) and ``$MRK8S_NODE_SHUFFLE_DIR`` (its node's
  directory for map outputs, see :mod:`shuffle.nodelocal`), and it installs
  the remote opener through which a reducer reads other nodes' map outputs.
- :class:`NodeReader` serves ranged reads of its node's map outputs to
  reducers on other nodes, and only under its node's directory: directly,
  through the shuffle server it starts on its node (:mod:`shuffle.server`,
  the server ``mrk8s shuffle-server`` runs on Kubernetes nodes, in a thread
  of the actor, with a bearer token of its own; reducers ask the actor for
  its address), or a bounded piece per actor call when that server cannot
  be reached (see :mod:`scheduler.backends.ray.nodefs`).

These classes are plain; the executor wraps them with ``ray.remote``. Errors
in a task come back as :class:`scheduler.stage.TaskError` JSON, as from a
local worker; a dead actor is the executor's to notice.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.stage import TaskError, run_task
from shuffle import nodelocal, server

logger = logging.getLogger(__name__)


#: A node's own say in where its disk is (e.g. a Kubernetes emptyDir), read by
#: the actors on that node; it wins over the base the driver passes.
LOCAL_DIR_ENV = "MRK8S_RAY_LOCAL_DIR"


def node_directory(base: str, node_id: str) -> str:
    """A node's directory for node-local map outputs: ``base/node_id``.

    On a real cluster ``base`` is on each node's own disk; on a cluster
    simulated on one machine the node ids keep the nodes' directories apart.
    """
    return os.path.join(os.path.abspath(base), node_id)


def _node_base(local_dir: str) -> str:
    return os.environ.get(LOCAL_DIR_ENV) or local_dir


#: Where a reader's shuffle server is: (base URL, bearer token, the node
#: directory's spellings: as the workers name it, and with symlinks resolved).
Address = tuple[str, str, tuple[str, str]]


def resolve_under(root: str, path: str) -> str:
    """The real path of ``path``, refused unless it is under ``root`` (a real path)."""
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep):
        raise PermissionError(f"{path} is not under this node's shuffle directory {root}")
    return real


class TaskWorker:
    """Runs tasks on one node; see the module docstring.

    Parameters: ``node_id`` (where it was pinned), ``local_dir`` (the base of
    node directories), ``reader_prefix`` (name prefix of the reader actors),
    ``namespace`` (theirs), ``env`` (set before anything loads, e.g.
    ``OMP_NUM_THREADS``), ``preload`` (``module`` or ``module:function``
    to import and call first, as a local worker does) and ``code`` (the
    shipped script directory: its digest and, wrapped in a list so that Ray
    passes the reference rather than the value, the zip's object reference).
    """

    def __init__(
        self,
        node_id: str,
        local_dir: str,
        reader_prefix: str,
        namespace: str,
        env: Mapping[str, str],
        preload: Sequence[str],
        code: tuple[str, list[Any]] | None = None,
    ) -> None:
        os.environ.update(env)
        if code is not None:
            # The job script's directory, shipped (see ship.py): the working
            # directory, and first on sys.path, as when the script runs alone.
            import ray

            from scheduler.backends.ray import ship

            digest, (ref,) = code
            directory = ship.unpack(digest, ray.get(ref))
            os.chdir(directory)
            sys.path.insert(0, directory)
        os.environ["MRK8S_NODE"] = node_id
        os.environ[nodelocal.NODE_DIR_ENV] = node_directory(_node_base(local_dir), node_id)
        # A user's print() must never mix with results on the driver's stdout:
        # Ray forwards what a worker writes to stderr to the driver's stderr.
        sys.stdout = sys.stderr
        from scheduler.backends.ray import nodefs

        nodefs.install(reader_prefix, namespace)
        for name in preload:
            module, _, function = name.partition(":")
            try:
                loaded = importlib.import_module(module)
                if function:
                    getattr(loaded, function)()
            except Exception as exc:  # the first task meets it again and reports it
                logger.debug("preload %s failed: %r", name, exc)

    def ping(self) -> int:
        """The process id, once the actor is up (and a liveness check)."""
        return os.getpid()

    def mark_output(self, marker: str) -> None:
        """Write ``marker`` to stdout and stderr, after all its tasks wrote there: the
        driver waits for it to know that their output reached it (see
        :func:`scheduler.backends.ray.logdrain.drain`)."""
        for stream in (sys.stdout, sys.stderr):
            print(marker, file=stream, flush=True)

    def run(
        self, entrypoint: str, payload: Mapping[str, Any], index: int, attempt: int
    ) -> dict[str, Any]:
        """Run one attempt; ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``."""
        try:
            return {"ok": True, "result": run_task(entrypoint, payload, index, attempt)}
        except Exception as exc:
            return {"ok": False, "error": TaskError.from_exception(exc).to_json()}
        finally:
            sys.stderr.flush()


class NodeReader:
    """Serves ranged reads of one node's map outputs (see the module docstring).

    State: ``root``, the node's directory; paths outside it are refused, so
    the actor cannot be used to read anything else on the node.
    """

    def __init__(self, node_id: str, local_dir: str) -> None:
        self.directory = node_directory(_node_base(local_dir), node_id)
        os.makedirs(self.directory, exist_ok=True)
        # Resolved, as the paths asked for are (a temp dir may be behind a symlink).
        self.root = os.path.realpath(self.directory)
        self._server: Any = None

    def _checked(self, path: str) -> str:
        return resolve_under(self.root, path)

    def address(self) -> Address:
        """Where reducers read this node's map outputs directly (see :data:`Address`).

        The server starts on the first call, on this node's address as Ray
        knows it, on a free port, with a new random token.
        """
        if self._server is None:
            import ray

            host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            settings = server.ServerSettings(
                root=self.root, host=host, port=0, token=secrets.token_hex(16)
            )
            self._server = server.make_server(settings)
            threading.Thread(
                target=self._server.serve_forever, name="mrk8s-shuffle-server", daemon=True
            ).start()
        return self._server.url, self._server.token, (self.directory, self.root)

    def size(self, path: str) -> int:
        return os.path.getsize(self._checked(path))

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        with open(self._checked(path), "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def remove_jobs(self, job_ids: Sequence[str]) -> list[str]:
        """Remove these jobs' node-local map outputs; the directories removed."""
        removed = []
        for job_id in job_ids:
            path = os.path.join(self.root, job_id)
            if job_id and os.sep not in job_id and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed
