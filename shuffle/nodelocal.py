"""Map outputs kept on the disk of the node that wrote them (node-local shuffle).

A backend whose workers run on several machines (Ray) may keep each map
output on its own node's disk rather than in the job's shared directory. It
tells its workers where by setting :data:`NODE_DIR_ENV` in their environment
(a directory on that node) and, for reading other nodes' outputs, installs a
*remote opener* with :func:`set_remote_opener`: node name -> a store that
reads that node's files (through the node's reader, over the network).

A commit record says which kind it is: its ``data_path`` is relative to the
job directory for a shared map output, and an absolute path on the record's
``node`` for a node-local one. :func:`segment_store` turns a record's
``(node, data_path)`` into the store and path to read it through: the job
store, this node's own disk (a memory map, no copy), or the remote opener.
This module knows nodes and paths, not what a backend is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from shuffle.errors import CorruptSegmentError
from shuffle.store import FsspecStore, join

#: Set by a backend in its workers: this node's directory for node-local map outputs.
NODE_DIR_ENV = "MRK8S_NODE_SHUFFLE_DIR"

#: Set to "1" with it by a backend whose map outputs stay on the node even when
#: the job's directory is remote (Kubernetes' node-local mode: the plan, commit
#: records and output in a bucket every pod reaches, map outputs on the
#: node's hostPath). Without it, a job directory on an object store keeps the
#: map outputs too (the Ray backend with --shuffle-dir s3://...).
NODE_LOCAL_ENV = "MRK8S_NODE_LOCAL_SHUFFLE"

RemoteOpener = Callable[[str], FsspecStore]

_STEP_DIR = re.compile(r"^s\d+$")
_MAP_FILE = re.compile(r"^map-\d+-a\d+\.arrow$")

_remote_opener: RemoteOpener | None = None
_local_root: FsspecStore | None = None


def node_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """This worker's node-local directory, if its backend gave it one."""
    return environ.get(NODE_DIR_ENV) or None


def output_dir(job_dir_is_local: bool, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where this worker's map outputs go if on its node's disk, else None (the job's
    directory): the node's directory when there is one, unless the job's directory
    is remote and the backend did not ask (:data:`NODE_LOCAL_ENV`)."""
    directory = node_dir(environ)
    if directory is None or not (job_dir_is_local or environ.get(NODE_LOCAL_ENV) == "1"):
        return None
    return directory


def map_output_path(directory: str, job_id: str, step: int, index: int, attempt: int) -> str:
    """Where a node-local map output goes: an absolute path under ``directory``."""
    return join(os.path.abspath(directory), job_id, f"s{step}/map-{index:05d}-a{attempt}.arrow")


def path_in_node_dir(data_path: str) -> str:
    """The part of a node-local map output's path below its node's directory.

    ``JOB/sS/map-IIIII-aA.arrow``, the components :func:`map_output_path`
    adds: what a node's shuffle server, serving that directory, is asked for.
    The directory itself is not needed, so it may differ from node to node.
    """
    parts = data_path.rstrip("/").split("/")
    if len(parts) < 4 or not _STEP_DIR.match(parts[-2]) or not _MAP_FILE.match(parts[-1]):
        raise ValueError(f"{data_path!r} is not the path of a node-local map output")
    return "/".join(parts[-3:])


def job_directory(data_path: str, job_id: str) -> str:
    """The job's directory on its node, from a node-local map output's path."""
    cut = data_path.rfind(f"/{job_id}/")
    if cut < 0:
        raise ValueError(f"{data_path} is not a map output of job {job_id}")
    return data_path[: cut + len(job_id) + 1]


def is_node_local(data_path: str) -> bool:
    """Whether a commit record's ``data_path`` names a node-local map output."""
    return data_path.startswith("/")


def set_remote_opener(opener: RemoteOpener | None) -> None:
    """Install (or remove, with None) how this process reads another node's files."""
    global _remote_opener
    _remote_opener = opener


def segment_store(
    job_store: FsspecStore, node: str, data_path: str, here: str
) -> tuple[FsspecStore, str]:
    """The store and path to read a committed map output through.

    The path is the record's ``data_path`` itself, so an error raised while
    reading names the map output as its commit record does.
    """
    global _local_root
    if not is_node_local(data_path):
        return job_store, data_path
    if node == here:
        if _local_root is None:
            _local_root = FsspecStore("/")
        return _local_root, data_path
    if _remote_opener is None:
        error = CorruptSegmentError(
            f"map output {data_path} lives on the disk of node {node}, and this worker "
            f"(on node {here}) has no way to read another node's disk: run the job on the "
            "backend that wrote it, or give it a shared --shuffle-dir"
        )
        error.data_path = data_path
        raise error
    return _remote_opener(node), data_path
