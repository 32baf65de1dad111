"""``s3://`` through Arrow's own S3 client (C++), for short-lived worker processes.

s3fs builds an aiobotocore session and client on first use: in a fresh
``mrk8s worker`` process that is ~0.3 CPU-s of imports and ~0.2 s more for the
first request, for a task that needs a few GETs and PUTs. ``pyarrow.fs.S3FileSystem``
is already loaded with pyarrow and makes its client in milliseconds. This
module maps s3fs's storage options onto it, faithfully or not at all:
:func:`filesystem` returns None for any option it cannot map (the caller then
uses s3fs), so a job configured for s3fs never runs with a different meaning.

Used when ``$MRK8S_S3_CLIENT`` is ``arrow``, as the worker image sets it
(manifests/Dockerfile); elsewhere the default is s3fs. Arrow's client retries
a request itself (:data:`RETRIES`, the SDK's standard strategy) but not a
part of an upload: :meth:`S3Wrapper.upload` uploads the whole object again
from its local copy after a transient failure, and reads retry the same way
(:func:`with_retries`). tests/mrk8s/test_s3.py (a 503, a 500 or a dropped
connection on every 4th request) passes with either client.
Credentials not given in the options come from the same places for both
clients: the ``AWS_*`` environment variables, then the AWS config files and
the pod's web identity or instance role.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

from fsspec.implementations.arrow import ArrowFSWrapper, wrap_exceptions

#: The environment variable that picks the S3 client: ``arrow`` or ``s3fs``.
ENV = "MRK8S_S3_CLIENT"
#: s3fs options mapped here, and the client_kwargs ones.
_OPTIONS = {"key", "secret", "token", "anon", "endpoint_url", "client_kwargs"}
_CLIENT_KWARGS = {"endpoint_url", "region_name"}
#: Tries of one request.
RETRIES = 6
#: Tries of a whole-object upload or read that failed past the client's own retries.
OBJECT_TRIES = 5
#: Seconds to connect, and of a stalled request (no byte moving), before a retry.
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0


_T = TypeVar("_T")
#: Words of Arrow's S3 errors that no retry can mend.
_PERMANENT = ("ACCESS_DENIED", "NO_SUCH", "INVALID_ACCESS_KEY", "SIGNATURE", "RESOURCE_NOT_FOUND")


def _transient(exc: BaseException) -> bool:
    """Whether an error of Arrow's S3 client may pass on a retry (a 5xx, a throttle,
    a dropped or stalled connection), not a missing object or a refused credential."""
    if not isinstance(exc, OSError) or isinstance(exc, FileNotFoundError | PermissionError):
        return False
    text = str(exc)
    return "AWS Error" in text and not any(word in text for word in _PERMANENT)


def with_retries(what: str, call: Callable[[], _T], tries: int = OBJECT_TRIES) -> _T:
    """``call()``, again after a transient failure (:func:`_transient`), with jittered
    exponential backoff; the last failure is raised."""
    for attempt in range(1, tries + 1):
        try:
            return call()
        except OSError as exc:
            if attempt == tries or not _transient(exc):
                raise
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """True if ``$MRK8S_S3_CLIENT`` asks for Arrow's client; an unknown value is an error."""
    value = environ.get(ENV, "s3fs").strip().lower()
    if value not in ("arrow", "s3fs"):
        raise ValueError(f"${ENV}={value!r} is not a known S3 client: set it to arrow or s3fs")
    return value == "arrow"


class S3Wrapper(ArrowFSWrapper):  # type: ignore[misc]
    """Arrow's S3 filesystem as fsspec's, with s3fs's meaning of ``makedirs``:
    S3 has no directories, so making one inside a bucket writes nothing (Arrow
    would write an empty ``dir/`` marker object per level); and ranges read with
    a HEAD and one ranged GET (fsspec's wrapper would seek on an unseekable stream);
    and removal leaves no empty prefix behind (Arrow writes a ``parent/`` marker
    object when a delete would empty a directory; s3fs, and S3, have none)."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        if "/" in self._strip_protocol(path).strip("/"):
            return
        super().makedirs(path, exist_ok=exist_ok)

    def rm(self, path: str, recursive: bool = False, maxdepth: int | None = None) -> None:
        super().rm(path, recursive=recursive, maxdepth=maxdepth)
        self._drop_empty_parents(self._strip_protocol(path).rstrip("/"))

    def rm_file(self, path: str) -> None:
        super().rm_file(path)
        self._drop_empty_parents(self._strip_protocol(path).rstrip("/"))

    def _drop_empty_parents(self, path: str) -> None:
        """Delete the markers Arrow wrote for the parents a delete emptied, up to the
        bucket (each delete of a marker may write the next one up: deleted in turn)."""
        from pyarrow.fs import FileSelector

        parent = path.rsplit("/", 1)[0]
        while "/" in parent:
            try:
                if self.fs.get_file_info(FileSelector(parent)):
                    return  # not empty: nothing was written for it
            except FileNotFoundError:
                return  # no marker either
            self.fs.delete_dir(parent)
            parent = parent.rsplit("/", 1)[0]

    def upload(self, source: IO[bytes], path: str, *, chunk: int = 8 << 20) -> None:
        """Write ``source`` (seekable; read from its start) to ``path`` as one object.

        Arrow's client does not retry a part of an upload (a 500 or a dropped
        connection on UploadPart fails the stream), so on a transient failure
        the whole object is uploaded again from ``source``. A failed stream is
        never completed (Arrow completes an upload only when every part
        succeeded), so nothing half-written appears; if every try fails, what
        the last one left is deleted.
        """
        path = self._strip_protocol(path)

        def once() -> None:
            source.seek(0)
            stream = self.fs.open_output_stream(path)
            try:
                while block := source.read(chunk):
                    stream.write(block)
            except BaseException:
                with contextlib.suppress(Exception):  # the failure is already being raised
                    stream.close()
                raise
            stream.close()

        try:
            with_retries(f"upload {path}", once)
        except BaseException:
            with contextlib.suppress(Exception):  # nothing there, or the store unreachable
                self.fs.delete_file(path)
            raise

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        import io

        self.upload(io.BytesIO(value), path)

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        with open(lpath, "rb") as source:
            self.upload(source, rpath)

    @wrap_exceptions  # type: ignore[untyped-decorator]
    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        return with_retries(f"read {path}", lambda: self._cat_once(path, start, end))

    def _cat_once(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        if not start and end is None:
            with self.fs.open_input_stream(path, compression=None) as f:
                return bytes(f.read())
        with self.fs.open_input_file(path) as f:  # knows the size: one HEAD
            size = f.size()
            first = max(0, size + start) if start and start < 0 else min(start or 0, size)
            last = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
            return bytes(f.read_at(max(0, last - first), first))


def filesystem(storage_options: Mapping[str, Any]) -> S3Wrapper | None:
    """An fsspec filesystem for ``s3://`` on Arrow's client, or None when an option
    has no faithful equivalent there (the caller falls back to s3fs)."""
    options = dict(storage_options)
    client_kwargs = dict(options.pop("client_kwargs", None) or {})
    if set(options) - _OPTIONS or set(client_kwargs) - _CLIENT_KWARGS:
        return None
    endpoint = client_kwargs.get("endpoint_url") or options.get("endpoint_url")
    if endpoint is None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
            return None  # a path-style prefix or an odd URL: leave it to s3fs
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    region = client_kwargs.get("region_name") or os.environ.get("AWS_DEFAULT_REGION")
    region = region or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    elif not endpoint:
        return None  # AWS itself with no region: s3fs finds the bucket's region, Arrow may not
    if options.get("anon"):
        kwargs["anonymous"] = True
    elif options.get("key") or options.get("secret"):
        if not (options.get("key") and options.get("secret")):
            return None  # s3fs would complain in its own words
        kwargs["access_key"] = options["key"]
        kwargs["secret_key"] = options["secret"]
        if options.get("token"):
            kwargs["session_token"] = options["token"]
    elif options.get("token"):
        return None
    from pyarrow import fs as pafs

    # As many tries as s3fs gives a request (its retries=5), the SDK's backoff between.
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=RETRIES)
    kwargs["connect_timeout"] = CONNECT_TIMEOUT
    kwargs["request_timeout"] = REQUEST_TIMEOUT
    return S3Wrapper(pafs.S3FileSystem(**kwargs))
