"""Reading another node's map outputs through its reader actor, as an fsspec filesystem.

Installed in every task worker (:func:`install`), so that the reduce task's
ordinary read path (:mod:`shuffle.mapfile` over an
:class:`shuffle.store.FsspecStore`) reads a remote node's segment the way it
reads one from object storage: ``mrk8s-node://NODE_ID`` is the root, the
map output's absolute path the path. Every read is a ranged read of the
node's :class:`scheduler.backends.ray.actors.NodeReader`: straight from the
HTTP server the reader runs on its node (:mod:`scheduler.backends.ray.rangeserver`;
the address is asked of the actor once per node), so the bytes never pass
through Ray's object store. When that server cannot be reached (a network
that lets only Ray's own ports through), the read falls back to actor calls,
cut into pieces of at most :data:`PIECE_BYTES` with at most
:data:`PIECES_IN_FLIGHT` outstanding: a map output never passes through the
object store whole, only the requested range, a few pieces at a time.

A reader that is gone (its node died) makes the read raise
:class:`shuffle.errors.CorruptSegmentError` naming the map output, so that
the reducer recomputes the map task, as it does for a damaged output.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import ray
from fsspec import AbstractFileSystem, register_implementation
from fsspec.spec import AbstractBufferedFile

from scheduler.backends.ray import rangeserver
from shuffle import nodelocal
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
        #: Each node's range server (None: unreachable, read through actor calls).
        self._servers: dict[str, rangeserver.Address | None] = {}
        self._lock = threading.Lock()
        #: Bytes read through this filesystem (what a reducer fetched from other nodes)...
        self.bytes_read = 0
        #: ...and how many of them came straight from a node's range server.
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

    def _server(self, node: str, local: str) -> rangeserver.Address | None:
        if node not in self._servers:
            address = self._call(node, local, lambda r: r.address.remote())
            with self._lock:
                self._servers[node] = tuple(address)
        return self._servers[node]

    def _direct(self, node: str, local: str, begin: int, stop: int) -> bytes | None:
        """The range from the node's server, or None if it cannot be reached."""
        address = self._server(node, local)
        if address is None:
            return None
        try:
            return rangeserver.fetch(address, local, begin, stop)
        except FileNotFoundError as exc:
            raise _lost(node, local, "the file is gone from the node") from exc
        except PermissionError:
            raise
        except OSError as exc:
            # Unreachable, or gone with its node: the actor path tells which.
            logger.warning(
                "cannot read node %s's map outputs directly from %s:%d (%s); "
                "reading them through its reader actor instead",
                node,
                address[0],
                address[1],
                exc,
            )
            with self._lock:
                self._servers[node] = None
            return None

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        node, local = self._split(path)
        begin = start or 0
        stop = end if end is not None else self.info(path)["size"]
        direct = self._direct(node, local, begin, stop)
        if direct is not None:
            with self._lock:
                self.bytes_read += len(direct)
                self.bytes_direct += len(direct)
            return direct
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
        data = b"".join(pieces)
        with self._lock:
            self.bytes_read += len(data)
        return data

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
