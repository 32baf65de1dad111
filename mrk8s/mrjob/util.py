"""mrjob's ``util``: the helpers mrjob jobs call at run time.

``mr_grep.py`` builds its shell command with :func:`cmd_line`;
``mr_text_classifier.py`` names documents with :func:`file_ext`. These
behave as mrjob 0.7.4's do (written again on the standard library, without
its ``distutils`` and ``pipes`` imports). mrjob's packaging helpers
(``zip_dir``, ``unarchive``) are refused on import, with the standard
library function to use instead (see :data:`NOT_PROVIDED`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import shutil
import sys
from collections.abc import Hashable, Iterable, Iterator
from datetime import timedelta
from typing import IO, Any

from mrk8s.tasks.aliases import refusal

__all__ = [
    "NullHandler",
    "cmd_line",
    "expand_path",
    "file_ext",
    "log_to_null",
    "log_to_stream",
    "random_identifier",
    "safeeval",
    "save_current_environment",
    "save_cwd",
    "save_sys_path",
    "save_sys_std",
    "shlex_split",
    "strip_microseconds",
    "to_lines",
    "unique",
    "which",
]

#: Names of mrjob.util that mrk8s does not provide, and what to use instead.
NOT_PROVIDED = {
    "zip_dir": "shutil.make_archive(base, 'zip', root_dir=DIR)",
    "unarchive": "shutil.unpack_archive(PATH, DEST)",
}


def __getattr__(name: str) -> Any:
    if name in NOT_PROVIDED:
        raise refusal(
            ImportError(
                f"mrjob.util.{name} is not provided by mrk8s's mrjob compatibility (it packs "
                f"files for Hadoop): use {NOT_PROVIDED[name]} from the standard library instead",
                name="mrjob.util",
            )
        )
    raise AttributeError(f"module 'mrjob.util' has no attribute {name!r}")


class NullHandler(logging.Handler):
    """A logging handler that drops every record."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def cmd_line(args: Iterable[Any]) -> str:
    """A shell command line running ``args`` (each quoted as the shell needs)."""
    return " ".join(shlex.quote(str(x)) for x in args)


def expand_path(path: str | None) -> str | None:
    """``path`` with ``~`` and environment variables expanded (None stays None)."""
    if path is None:
        return None
    return os.path.expanduser(os.path.expandvars(path))


def file_ext(filename: str) -> str:
    """The extension from the first dot on (``foo.tar.gz`` -> ``.tar.gz``), leading
    dots aside (``.emacs`` -> ``''``)."""
    stripped = filename.lstrip(".")
    dot = stripped.find(".")
    return "" if dot == -1 else stripped[dot:]


def log_to_null(name: str | None = None) -> None:
    """Give the logger ``name`` a handler that drops everything."""
    logging.getLogger(name).addHandler(NullHandler())


def log_to_stream(
    name: str | None = None,
    stream: IO[str] | None = None,
    format: str | None = None,
    level: int | None = None,
    debug: bool = False,
) -> None:
    """Log ``name`` to ``stream`` (default stderr) at ``level`` (INFO, or DEBUG)."""
    if level is None:
        level = logging.DEBUG if debug else logging.INFO
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(format or "%(message)s"))
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.addHandler(handler)


def random_identifier() -> str:
    """A random 16-digit hex string."""
    return f"{random.randint(0, 2**64 - 1):016x}"


def safeeval(expr: str, globals: dict[str, Any] | None = None, locals: Any = None) -> Any:
    """Evaluate ``expr`` with no builtins but ``True``, ``False``, ``None``, ``set``
    and ``range`` (and the names in ``globals``), as mrjob's ``safeeval``."""
    names: dict[str, Any] = {"__builtins__": {}, "True": True, "False": False, "None": None}
    names.update(set=set, range=range, **(globals or {}))
    return eval(expr, names, locals)


@contextlib.contextmanager
def save_current_environment() -> Iterator[None]:
    """Restore ``os.environ`` as it was on leaving the block."""
    saved = os.environ.copy()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def save_cwd() -> Iterator[None]:
    """Return to the current working directory on leaving the block."""
    saved = os.getcwd()
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def save_sys_std() -> Iterator[None]:
    """Restore ``sys.stdin``/``stdout``/``stderr`` on leaving the block (flushing them)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        yield
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def save_sys_path() -> Iterator[None]:
    """Restore ``sys.path`` on leaving the block."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path = saved


def shlex_split(s: str) -> list[str]:
    """``shlex.split(s)``."""
    return shlex.split(s)


def strip_microseconds(delta: timedelta) -> timedelta:
    """``delta`` without its microseconds."""
    return timedelta(delta.days, delta.seconds)


def to_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (bytes, each with its ``\\n`` but the last) from chunks of bytes.

    Breaks on ``\\n`` only; an empty chunk ends the line being built (mrjob
    uses it between files). A file object is passed through.
    """
    if hasattr(chunks, "readline"):
        return chunks  # type: ignore[return-value]
    return _to_lines(chunks)


def _to_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    leftovers: list[bytes] = []
    for chunk in chunks:
        if chunk == b"":
            if leftovers:
                yield b"".join(leftovers)
                leftovers = []
            continue
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start) + 1
            if end == 0:
                leftovers.append(chunk[start:])
                break
            if leftovers:
                leftovers.append(chunk[start:end])
                yield b"".join(leftovers)
                leftovers = []
            else:
                yield chunk[start:end]
            start = end
    if leftovers:
        yield b"".join(leftovers)


def unique(items: Iterable[Hashable]) -> Iterator[Hashable]:
    """``items`` in order, each once."""
    seen = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


def which(cmd: str, path: str | None = None) -> str | None:
    """The path of the executable ``cmd`` on ``path`` (default ``$PATH``), or None."""
    return shutil.which(cmd, path=path)
