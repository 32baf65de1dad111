"""Stores: every byte mrk8s reads or writes goes through an fsspec URL.

Called by the map-output writer/reader, the commit records and the job's
driver and workers. A store is a directory-like root URL (a local path,
``file://``, ``s3://``, ...) plus the fsspec storage options needed to open it.
Writes are atomic from a reader's point of view: on a local filesystem they
go to a temporary name and are renamed into place; on an object store the
object appears only when its upload completes (and a failed upload is
discarded, never completed). This module knows nothing of jobs or tasks.

``s3://`` goes through s3fs, or through Arrow's own S3 client where
``$MRK8S_S3_CLIENT`` is ``arrow`` and the storage options map onto it
(:mod:`shuffle.s3native`; off by default). Arrow's client
cannot abort an upload from Python: a failed write there is completed and then
deleted, so it can be seen for a moment under its own (attempt's) name.

Every request an s3fs store sends is counted by kind (:mod:`shuffle.storecount`);
``is_counted`` says whether this store's requests are seen at all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from typing import IO, Any, Protocol, runtime_checkable

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from shuffle import storecount
from shuffle.errors import StoreError, UserError

logger = logging.getLogger(__name__)


class OutOfSpaceError(UserError):
    """The disk behind a store is full: free space or point the store elsewhere."""


class ShortReadError(StoreError):
    """A range read returned fewer bytes than asked: the file is shorter than expected."""


#: open_write on a non-local store keeps up to this much in memory before
#: spooling to a local temporary file (commit records and plans never touch disk).
_SPOOL_IN_MEMORY = 8 * 2**20

#: An upload to S3 holds at most this many parts of this size in memory. s3fs's
#: own defaults (10 parts of 50 MiB, and a file under 100 MiB read whole) made a
#: worker's memory grow with its map output: 386 MB peak for 64 MiB outputs,
#: 809 MB for 256 MiB ones. S3's smallest part is 5 MiB; s3fs raises the part
#: size itself if a file would need more than 10,000 parts.
UPLOAD_PART_BYTES = 16 * 2**20
UPLOAD_PARTS_IN_FLIGHT = 4


class Store(Protocol):
    """What the data plane needs from a place to keep bytes."""

    def url(self, path: str) -> str: ...

    def open_read(self, path: str) -> IO[bytes]: ...

    def read_range(self, path: str, offset: int, length: int) -> bytes: ...

    def view_range(self, path: str, offset: int, length: int) -> pa.Buffer: ...

    def write_bytes(self, path: str, data: bytes) -> None: ...

    def put_file(self, local_path: str, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def list(self, path: str) -> list[str]: ...

    def remove(self, path: str, *, recursive: bool = False) -> None: ...


def join(base: str, *parts: str) -> str:
    """Join URL or path parts with ``/`` (fsspec's separator everywhere)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@runtime_checkable
class BufferReader(Protocol):
    """A filesystem that can read a range straight into an Arrow buffer (no bytes copy)."""

    def read_buffer(self, path: str, start: int, end: int) -> pa.Buffer:
        """Bytes ``[start, end)`` of ``path``; fewer only at the end of the file."""
        ...


class FsspecStore:
    """A :class:`Store` rooted at ``root_url``; paths are relative to the root.

    Parameters: ``root_url`` is any fsspec URL; ``storage_options`` are passed
    to the filesystem (credentials, ``endpoint_url``, ...).
    """

    def __init__(self, root_url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root_url = root_url.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = url_to_fs(self.root_url, self.storage_options)
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        storecount.watch(self.fs)
        #: Whether every object-store request of this store is counted (or none is sent).
        self.is_counted = storecount.is_observed(self.fs)

    def __repr__(self) -> str:
        return f"FsspecStore({self.root_url!r})"

    @property
    def _native_s3(self) -> bool:
        from shuffle import s3native

        return isinstance(self.fs, s3native.S3Wrapper)

    def _upload_options(self) -> dict[str, int]:
        """``put_file`` arguments that bound an upload's memory, where the filesystem has them."""
        if self._native_s3:
            return {}  # Arrow's uploads bound their memory themselves
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "s3" in protocols:
            return {"chunksize": UPLOAD_PART_BYTES, "max_concurrency": UPLOAD_PARTS_IN_FLIGHT}
        return {}

    def _path(self, path: str) -> str:
        return join(self.root, path) if path else self.root

    def url(self, path: str) -> str:
        """The full URL of ``path`` (for commit records and messages)."""
        return join(self.root_url, path) if path else self.root_url

    def local_path(self, path: str) -> str | None:
        """The OS path of ``path`` if this store is on local disk, else None."""
        return self._path(path) if self.is_local else None

    def open_read(self, path: str) -> IO[bytes]:
        with translate_errors(self.url(path), "open"):
            if self.is_local:
                return open(self._path(path), "rb")
            f: IO[bytes] = self.fs.open(self._path(path), "rb")
            return f

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` in one request."""
        if length <= 0:
            return b""  # some filesystems read a whole file for an empty range
        with translate_errors(self.url(path), "read"):
            if self.is_local:
                with open(self._path(path), "rb") as f:
                    f.seek(offset)
                    data = f.read(length)
            else:
                data = self.fs.cat_file(self._path(path), start=offset, end=offset + length)
        if len(data) != length:
            raise ShortReadError(
                f"short read from {self.url(path)}: wanted {length} bytes at offset {offset}, "
                f"got {len(data)}; the file was truncated or is being rewritten"
            )
        return bytes(data)

    def view_range(self, path: str, offset: int, length: int) -> pa.Buffer:
        """``length`` bytes at ``offset`` as an Arrow buffer: on local disk a view of
        the file memory-mapped (no copy, no fresh memory; it stays valid after
        the file is removed); from a filesystem that reads into Arrow buffers
        (:class:`BufferReader`, e.g. :mod:`shuffle.httpfs`) what it reads;
        elsewhere what :meth:`read_range` fetches."""
        if isinstance(self.fs, BufferReader) and length > 0:
            with translate_errors(self.url(path), "read"):
                data = self.fs.read_buffer(self._path(path), offset, offset + length)
            if data.size != length:
                raise ShortReadError(
                    f"short read from {self.url(path)}: wanted {length} bytes at offset "
                    f"{offset}, got {data.size}; the file was truncated or is being rewritten"
                )
            return data
        if not self.is_local or length <= 0:
            return pa.py_buffer(self.read_range(path, offset, length))
        with translate_errors(self.url(path), "read"), pa.memory_map(self._path(path)) as f:
            if f.size() < offset + length:
                raise ShortReadError(
                    f"short read from {self.url(path)}: wanted {length} bytes at offset "
                    f"{offset}, the file has {f.size()}; it was truncated or is being rewritten"
                )
            f.seek(offset)
            return f.read_buffer(length)  # keeps the mapping alive after close

    def _fresh(self) -> None:
        """Forget cached listings: other processes (workers) write here all the time."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def read_bytes(self, path: str) -> bytes:
        with translate_errors(self.url(path), "read"):
            try:
                return bytes(self.fs.cat_file(self._path(path)))
            except FileNotFoundError:
                if self.is_local:
                    raise
                self._fresh()  # a stale cached listing may hide a file written since
                return bytes(self.fs.cat_file(self._path(path)))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically."""
        with self.open_write(path) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing; it appears only if the block exits cleanly."""
        full = self._path(path)
        with translate_errors(self.url(path), "write"):
            if self.is_local:
                os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
                tmp = f"{full}.tmp-{uuid.uuid4().hex[:12]}"
                try:
                    with open(tmp, "wb") as f:
                        yield f
                    os.replace(tmp, full)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            else:
                # Some filesystems publish a file as soon as it is opened (memory://), so
                # the block writes to a local spool and the target is opened only after
                # a clean exit.
                with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
                    yield spool
                    if self._native_s3:
                        # The whole object again from the spool if a part fails.
                        self.fs.upload(spool, full)
                        return
                    spool.seek(0)
                    f = self.fs.open(full, "wb")
                    try:
                        shutil.copyfileobj(spool, f)
                    except BaseException:
                        # An object store commits an upload on close(); discard it
                        # instead so that nothing half-written appears.
                        discard = getattr(f, "discard", None)
                        if discard is not None:
                            discard()
                        raise
                    else:
                        f.close()

    def put_file(self, local_path: str, path: str) -> None:
        """Move (local store) or upload (remote store) a finished local file into place."""
        full = self._path(path)
        with translate_errors(self.url(path), "write"):
            if self.is_local:
                os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
                try:
                    os.replace(local_path, full)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    # Another filesystem (a spill dir on tmpfs): copy beside the
                    # target, then rename, so the target still appears whole.
                    tmp = f"{full}.tmp-{uuid.uuid4().hex[:12]}"
                    try:
                        shutil.copyfile(local_path, tmp)
                        os.replace(tmp, full)
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.unlink(tmp)
                        raise
                    os.unlink(local_path)
            elif self._native_s3:
                with open(local_path, "rb") as src:
                    self.fs.upload(src, full, chunk=UPLOAD_PART_BYTES)
                os.unlink(local_path)
            else:
                self.fs.put_file(local_path, full, **self._upload_options())
                os.unlink(local_path)

    def exists(self, path: str) -> bool:
        self._fresh()
        with translate_errors(self.url(path), "stat"):
            return bool(self.fs.exists(self._path(path)))

    def size(self, path: str) -> int:
        with translate_errors(self.url(path), "stat"):
            return int(self.fs.size(self._path(path)))

    def list(self, path: str) -> list[str]:
        """Names (not paths) of the entries directly under ``path``; [] if absent."""
        self._fresh()
        full = self._path(path)
        with translate_errors(self.url(path), "list"):
            try:
                entries = self.fs.ls(full, detail=False)
            except FileNotFoundError:
                return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def makedirs(self, path: str) -> None:
        with translate_errors(self.url(path), "mkdir"):
            self.fs.makedirs(self._path(path), exist_ok=True)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        full = self._path(path)
        with contextlib.suppress(FileNotFoundError), translate_errors(self.url(path), "remove"):
            self.fs.rm(full, recursive=recursive)

    def rename(self, src: str, dst: str) -> None:
        """Rename within the store (atomic on local disk; copy+delete on object stores)."""
        with translate_errors(self.url(src), "rename"):
            if self.is_local:
                os.replace(self._path(src), self._path(dst))
            else:
                self.fs.mv(self._path(src), self._path(dst), recursive=True)


def url_to_fs(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem and path of ``url``: Arrow's S3 client for ``s3://`` when
    asked for and the options map onto it (:mod:`shuffle.s3native`), else fsspec's."""
    if url.startswith("s3://"):
        from shuffle import s3native

        if s3native.wanted():
            fs = s3native.filesystem(storage_options)
            if fs is not None:
                return fs, url[len("s3://") :]
            logger.info("%s: storage options %s need s3fs", url, sorted(storage_options))
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options))
    return fs, path


@contextlib.contextmanager
def translate_errors(url: str, action: str) -> Iterator[None]:
    """Turn low-level I/O failures into mrk8s errors that say what to do."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space left on device" in str(exc):
            raise OutOfSpaceError(
                f"no space left on the device while trying to {action} {url}: free disk space "
                "or point --shuffle-dir/--output at a larger volume, then rerun the same "
                "command to resume"
            ) from exc
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            raise UserErrorPermission(
                f"permission denied while trying to {action} {url}: choose a location you can "
                "write to, or fix its permissions, then rerun the same command to resume"
            ) from exc
        if exc.errno == errno.EROFS:
            raise UserErrorPermission(
                f"{url} is on a read-only file system (while trying to {action} it): choose a "
                "writable --output/--shuffle-dir, then rerun the same command to resume"
            ) from exc
        raise StoreError(f"could not {action} {url}: {exc}") from exc


class UserErrorPermission(UserError):
    """A store location is not readable or writable by this process."""
