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
from collections.abc import Callable, Mapping

from shuffle.errors import CorruptSegmentError
from shuffle.store import FsspecStore, join

#: Set by a backend in its workers: this node's directory for node-local map outputs.
NODE_DIR_ENV = "MRK8S_NODE_SHUFFLE_DIR"

RemoteOpener = Callable[[str], FsspecStore]

_remote_opener: RemoteOpener | None = None
_local_root: FsspecStore | None = None


def node_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """This worker's node-local directory, if its backend gave it one."""
    return environ.get(NODE_DIR_ENV) or None


def map_output_path(directory: str, job_id: str, step: int, index: int, attempt: int) -> str:
    """Where a node-local map output goes: an absolute path under ``directory``."""
    return join(os.path.abspath(directory), job_id, f"s{step}/map-{index:05d}-a{attempt}.arrow")


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
