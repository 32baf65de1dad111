"""mrjob's command steps: records piped through a shell command, as lines.

An mrjob step part may be a command instead of a Python function
(``mapper_cmd``, ``combiner_cmd``, ``reducer_cmd``), or a Python function
whose input first goes through a command (``*_pre_filter``). mrjob's local
runner runs them so (``mrjob/bin.py``, ``_substep_args``):

- ``*_cmd``: the command string is split with ``shlex`` and run without a
  shell; its stdin is the part's input lines, its stdout lines are the part's
  output (read with no protocol: raw lines). A non-zero exit fails the task.
- ``*_pre_filter``: ``sh -ex -c 'FILTER | python job.py --mapper'``: the
  filter's output lines are the Python part's input. The pipeline's status is
  the Python part's, so a filter's own exit status is ignored (``grep``
  finding nothing exits 1); mrk8s still fails the task when the filter could
  not run at all (126, 127) or was killed, which mrjob would have turned into
  silently empty input.

:class:`CommandPipe` is one running command: lines are written to its stdin
while threads drain its stdout and stderr, so neither side can block the
other however much flows (no deadlock on large inputs), and output comes
back as it is produced, without holding the whole input. Called by the
adapter's step wrappers (:mod:`mrk8s.mrjob.job`), in the task's own working
directory and environment (``mapreduce_map_input_file`` and the shipped
files are there, as under mrjob).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from mrk8s.errors import UserError

__all__ = ["CommandError", "CommandPipe", "LineSpool", "command_argv", "sorted_lines"]

#: Bytes of a failed command's stderr shown in the error (its end).
STDERR_TAIL_BYTES = 2048

#: A chunk read from a command's stdout at a time.
_READ_BYTES = 1 << 16

#: Exit statuses of ``sh`` for a command that could not run (not executable, not found).
_COULD_NOT_RUN = (126, 127)


class CommandError(UserError):
    """A step's command failed (or could not start): a user error, not retried."""


def command_argv(command: str | Sequence[str], *, pre_filter: bool) -> list[str]:
    """The argv to run: a ``*_cmd`` split as mrjob splits it, a pre-filter through ``sh``."""
    if pre_filter:
        return ["/bin/sh", "-c", str(command)]
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def _drain(stream: IO[bytes], out: collections.deque[bytes]) -> None:
    """Move everything ``stream`` gives into ``out`` until it ends (a thread's body).

    A function of the stream and the deque only, never of the pipe object, so a
    pipe that is dropped mid-task can be garbage-collected (and its process killed).
    """
    with stream:
        while True:
            chunk = stream.read1(_READ_BYTES) if hasattr(stream, "read1") else stream.read()
            if not chunk:
                return
            out.append(chunk)


class CommandPipe:
    """One running step command; see the module docstring.

    ``what`` names the step part for errors (``mapper_cmd of step 1``). A
    ``*_cmd`` fails on any non-zero exit; a ``pre_filter`` only when it could
    not run or was killed (see the module docstring).
    """

    def __init__(self, command: str | Sequence[str], *, what: str, pre_filter: bool) -> None:
        self.command = command if isinstance(command, str) else shlex.join(map(str, command))
        self.what = what
        self.pre_filter = pre_filter
        argv = command_argv(command, pre_filter=pre_filter)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise CommandError(
                f"{what} `{self.command}` could not start: {exc.strerror or exc}; check that "
                "the program is installed on every worker and on its PATH"
            ) from None
        self._out: collections.deque[bytes] = collections.deque()
        self._err: collections.deque[bytes] = collections.deque()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._partial = b""
        self._input_closed = False  # the command stopped reading (e.g. `head -1`)

    def feed(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """Write ``lines`` (without newlines) to the command; yield the lines it has
        output so far (without newlines)."""
        stdin = self.proc.stdin
        assert stdin is not None
        for line in lines:
            if not self._input_closed:
                try:
                    stdin.write(line + b"\n")
                except (BrokenPipeError, ValueError):
                    # It exited or closed its stdin: the rest of the input is not read,
                    # as under mrjob; its exit status decides.
                    self._input_closed = True
            if self._out:
                yield from self._lines()

    def close(self) -> Iterator[bytes]:
        """End the command's input; yield the rest of its output; check its exit."""
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        self._threads[0].join()
        yield from self._lines()
        if self._partial:
            last, self._partial = self._partial, b""
            yield last
        status = self.proc.wait()
        self._threads[1].join()
        self._check(status)

    def _lines(self) -> Iterator[bytes]:
        chunks = [self._partial]
        while self._out:
            chunks.append(self._out.popleft())
        *lines, self._partial = b"".join(chunks).split(b"\n")
        return iter(lines)

    def _check(self, status: int) -> None:
        if status == 0:
            return
        if self.pre_filter and status > 0 and status not in _COULD_NOT_RUN:
            return
        tail = b"".join(self._err)[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        hint = (
            "it could not run: check that the program is installed on every worker"
            if status in _COULD_NOT_RUN
            else "run it by hand on a sample of the input to see why"
        )
        said = f"; its stderr ends: {tail}" if tail else "; it wrote nothing to stderr"
        raise CommandError(f"{self.what} `{self.command}` {how}{said} ({hint})")

    def kill(self) -> None:
        """Stop the command now (a task that failed or was abandoned)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


class LineSpool:
    """Lines kept in a temporary file until the task's input ends, then read back.

    A combiner command (or pre-filter) reads the whole sorted output of its map
    task, and a reducer pre-filter its whole partition, as under mrjob;
    spooling to disk keeps a task's memory bounded, and the ``sort`` program
    (``LC_ALL=C``, the byte order mrjob's local runner uses) sorts files larger
    than memory.
    """

    def __init__(self) -> None:
        # Closed by sorted_lines()/lines()/discard(), not by a with block: it outlives
        # the call that opens it.
        self._file = tempfile.NamedTemporaryFile(prefix="mrk8s-spool-", delete=False)  # noqa: SIM115
        self.path = self._file.name

    def add(self, line: bytes) -> None:
        self._file.write(line + b"\n")

    def sorted_lines(self, *, whole_line: bool) -> Iterator[bytes]:
        """The lines sorted by key (the bytes before the first tab, stably), or by
        whole line (``SORT_VALUES``); the file is removed afterwards."""
        self._file.close()
        try:
            yield from sorted_lines(self.path, whole_line=whole_line)
        finally:
            os.unlink(self.path)

    def lines(self) -> Iterator[bytes]:
        """The lines in the order they were added; the file is removed afterwards."""
        self._file.close()
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    yield line[:-1]
        finally:
            os.unlink(self.path)

    def discard(self) -> None:
        self._file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def sorted_lines(path: str, *, whole_line: bool) -> Iterator[bytes]:
    """The lines of ``path`` (without newlines) sorted as mrjob's local runner sorts."""
    sort = shutil.which("sort")
    if sort is not None:
        args = [sort] if whole_line else [sort, "-t", "\t", "-k", "1,1", "-s"]
        env = dict(os.environ, LC_ALL="C", TMPDIR=os.path.dirname(path))
        proc = subprocess.Popen([*args, path], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                yield line[:-1] if line.endswith(b"\n") else line
        if proc.wait() == 0:
            return
        raise CommandError(f"sorting a map task's output for its combiner failed ({args})")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    if whole_line:
        lines.sort()
    else:
        lines.sort(key=lambda line: line.partition(b"\t")[0])
    yield from lines
