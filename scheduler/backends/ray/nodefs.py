"""Reading another node's map outputs through its reader actor, as an fsspec filesystem.

Installed in every task worker (:func:`install`), so that the reduce task's
ordinary read path (:mod:`shuffle.mapfile` over an
:class:`shuffle.store.FsspecStore`) reads a remote node's segment the way it
reads one from object storage: ``mrk8s-node://NODE_ID`` is the root, the
map output's absolute path the path. Every read is a ranged read of the
node's :class:`scheduler.backends.ray.actors.NodeReader`: straight from the
shuffle server the reader runs on its node (:mod:`shuffle.server`, read
through its client :mod:`shuffle.httpfs`, into Arrow buffers; the address is
asked of the actor once per node), so the bytes never pass through Ray's
object store. Why not through the actor: its reply travels through the
object store (put on the reader's node, pulled to the reducer's node in
chunks, copied out), which moved about 300 MB/s on the simulated three-node
cluster, against about 2 GB/s for the same bytes over a socket. When that
server cannot be reached (a network that lets only Ray's own ports
through), the read falls back to actor calls,
cut into pieces of at most :data:`PIECE_BYTES` with at most
:data:`PIECES_IN_FLIGHT` outstanding: a map output never passes through the
object store whole, only the requested range, a few pieces at a time.

A reader that is gone (its node died) makes the read raise
:class:`shuffle.errors.CorruptSegmentError` naming the map output, so that
the reducer recomputes the map task, as it does for a damaged output.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any

import pyarrow as pa
import ray
from fsspec import AbstractFileSystem, register_implementation
from fsspec.spec import AbstractBufferedFile

from shuffle import httpfs, nodelocal
from shuffle.errors import CorruptSegmentError
from shuffle.store import FsspecStore

logger = logging.getLogger(__name__)

PROTOCOL = "mrk8s-node"

#: Largest piece of a map output one reader call returns: big enough that a
#: call's overhead (a few hundred microseconds) vanishes, small enough that a
#: reducer's reads hold little of the object store.
PIECE_BYTES = 4 << 20

#: Pieces a read keeps outstanding at once, hiding each call's round trip.
PIECES_IN_FLIGHT = 4


def reader_name(prefix: str, node_id: str) -> str:
    """The name of the reader actor of ``node_id``."""
    return f"{prefix}{node_id}"


class NodeFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only files of other nodes, addressed as ``NODE_ID/absolute/path``."""

    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, reader_prefix: str = "", namespace: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reader_prefix = reader_prefix
        self.namespace = namespace
        self._readers: dict[str, Any] = {}
        #: Each node's shuffle server: a client of it and the node directory's two
        #: spellings (None: unreachable, read through actor calls).
        self._servers: dict[str, tuple[httpfs.ShuffleServerFileSystem, tuple[str, str]] | None]
        self._servers = {}
        self._lock = threading.Lock()
        #: Bytes read through this filesystem (what a reducer fetched from other nodes)...
        self.bytes_read = 0
        #: ...and how many of them came straight from a node's shuffle server.
        self.bytes_direct = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith(PROTOCOL + "://"):
            path = path[len(PROTOCOL) + 3 :]
        return path.rstrip("/")

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        node, _, rest = NodeFileSystem._strip_protocol(path).partition("/")
        return node, "/" + rest

    def _reader(self, node: str, path: str) -> Any:
        with self._lock:
            reader = self._readers.get(node)
            if reader is None:
                try:
                    reader = ray.get_actor(
                        reader_name(self.reader_prefix, node), namespace=self.namespace
                    )
                except ValueError as exc:
                    raise _lost(node, path, "it has no reader (the node is gone)") from exc
                self._readers[node] = reader
            return reader

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        node, local = self._split(path)
        size = self._call(node, local, lambda r: r.size.remote(local))
        return {"name": self._strip_protocol(path), "size": int(size), "type": "file"}

    def _call(self, node: str, local: str, submit: Any) -> Any:
        try:
            return ray.get(submit(self._reader(node, local)))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            with self._lock:
                self._readers.pop(node, None)
            raise _lost(node, local, f"its reader died ({type(exc).__name__})") from exc
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            if isinstance(cause, FileNotFoundError):
                raise _lost(node, local, "the file is gone from the node") from exc
            raise

    def _server(
        self, node: str, local: str
    ) -> tuple[httpfs.ShuffleServerFileSystem, tuple[str, str]] | None:
        if node not in self._servers:
            url, token, roots = self._call(node, local, lambda r: r.address.remote())
            client = httpfs.ShuffleServerFileSystem(
                {node: url}, token=token, skip_instance_cache=True
            )
            with self._lock:
                self._servers[node] = (client, tuple(roots))
        return self._servers[node]

    def read_buffer(self, path: str, start: int, end: int) -> pa.Buffer:
        """Bytes ``[start, end)`` of ``path`` (fewer only at the end of the file)."""
        node, local = self._split(path)
        server = self._server(node, local)
        if server is not None:
            client, roots = server
            try:
                direct = client.read_buffer(f"{node}/{_under(local, roots)}", start, end)
            except CorruptSegmentError as exc:
                # The server is unreachable, or the file is gone, or the node with it:
                # the actor path tells which (it raises in the last two cases).
                data = self._through_actor(node, local, start, end)
                logger.warning(
                    "cannot read node %s's map outputs directly from %s (%s); "
                    "reading them through its reader actor instead",
                    node,
                    client.servers[node],
                    exc,
                )
                with self._lock:
                    self._servers[node] = None
                    self.bytes_read += len(data)
                return pa.py_buffer(data)
            with self._lock:
                self.bytes_read += direct.size
                self.bytes_direct += direct.size
            return direct
        data = self._through_actor(node, local, start, end)
        with self._lock:
            self.bytes_read += len(data)
        return pa.py_buffer(data)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        begin = start or 0
        stop = end if end is not None else self.info(path)["size"]
        data: bytes = self.read_buffer(path, begin, stop).to_pybytes()
        return data

    def _through_actor(self, node: str, local: str, begin: int, stop: int) -> bytes:
        """The range through the reader actor, a few bounded pieces in flight."""
        reader = self._reader(node, local)
        pieces: list[bytes] = []
        pending: deque[Any] = deque()
        offset = begin
        try:
            while offset < stop or pending:
                while offset < stop and len(pending) < PIECES_IN_FLIGHT:
                    n = min(PIECE_BYTES, stop - offset)
                    pending.append(reader.read.remote(local, offset, n))
                    offset += n
                ref = pending.popleft()
                pieces.append(self._call(node, local, lambda _r, ref=ref: ref))
        finally:
            for ref in pending:  # an error part-way: do not leave pieces behind
                ray.cancel(ref)
        return b"".join(pieces)

    def _open(
        self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any
    ) -> Any:
        if mode != "rb":
            raise PermissionError(f"{PROTOCOL}:// is read-only (asked to open {path} as {mode})")
        return _NodeFile(self, path, mode, block_size=block_size or PIECE_BYTES)


class _NodeFile(AbstractBufferedFile):  # type: ignore[misc]
    """A remote map output opened for streaming: each cache miss is one ranged read."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self.fs.cat_file(self.path, start, end)
        return data


def _under(path: str, roots: tuple[str, str]) -> str:
    """``path`` relative to its node's directory (as the workers name it, or resolved)."""
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return path[len(root.rstrip(os.sep)) + 1 :]
    raise PermissionError(f"{path} is not under this node's shuffle directory {roots[1]}")


def _lost(node: str, path: str, why: str) -> CorruptSegmentError:
    error = CorruptSegmentError(
        f"map output {path} on node {node} cannot be read: {why}; its map task must run again"
    )
    error.data_path = path
    return error


def install(reader_prefix: str, namespace: str) -> None:
    """Make this process read other nodes' map outputs through their reader actors."""
    register_implementation(PROTOCOL, NodeFileSystem, clobber=True)
    options = {"reader_prefix": reader_prefix, "namespace": namespace}
    stores: dict[str, FsspecStore] = {}

    def open_node(node: str) -> FsspecStore:
        # One store per node: a reducer's segments on one node are then read
        # as one batch, several at once (mapfile.read_segments), not one by one.
        if node not in stores:
            stores[node] = FsspecStore(f"{PROTOCOL}://{node}", options)
        return stores[node]

    nodelocal.set_remote_opener(open_node)
