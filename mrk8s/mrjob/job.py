"""mrjob's :class:`MRJob`, as an adapter onto :class:`mrk8s.MapReduce`.

A user's ``MRJob`` subclass is an ordinary mrk8s job: the driver plans it and
workers run it like any other. What makes it behave as under mrjob is
:meth:`MRJob.engine_steps`, which wraps each :class:`~mrk8s.mrjob.step.MRStep`
function in an :class:`mrk8s.Step` function that applies the protocols at
the edges:

- first step, map side: each input line goes through ``INPUT_PROTOCOL.read``;
- between mappers/combiners and reducers, and between steps: each record is
  written with ``INTERNAL_PROTOCOL`` and travels through the shuffle as that
  line (bytes), keyed by the part before its first tab, so keys group and
  sort by their serialized form, and reducers get exactly what
  ``INTERNAL_PROTOCOL.read`` gives (tuples become lists under JSON), as under
  mrjob's runners;
- ``SORT_VALUES``: one key's lines are sorted (by their bytes) in memory before
  the reducer sees them, which is how mrjob's runners order values;
- last step: records go to the output as ``OUTPUT_PROTOCOL.write`` lines
  (:meth:`MRJob.text_line_writer`).

Options: ``configure_args()`` with :meth:`MRJob.add_passthru_arg` and
:meth:`MRJob.add_file_arg`; ``FILES``/``DIRS`` and file options are shipped
with the job and seen by tasks in their working directory
(:meth:`MRJob.job_files`). ``MyJob(args=[...]).make_runner()`` runs the job
on mrk8s (see :mod:`mrk8s.mrjob.runner`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, NoReturn

from mrk8s.errors import JobDefinitionError, UsageError
from mrk8s.job import MapReduce, Step
from mrk8s.mrjob import options
from mrk8s.mrjob.protocol import JSONProtocol, RawValueProtocol
from mrk8s.mrjob.step import COMMANDS, FUNCTIONS, MRStep
from mrk8s.mrjob.substeps import StepBuilder

__all__ = ["MRJob"]


class MRJob(MapReduce):
    """Base class of an mrjob job; see the module docstring for what it honours.

    Class attributes (mrjob's): ``INPUT_PROTOCOL`` (default
    :class:`~mrk8s.mrjob.protocol.RawValueProtocol`), ``INTERNAL_PROTOCOL``
    and ``OUTPUT_PROTOCOL`` (default
    :class:`~mrk8s.mrjob.protocol.JSONProtocol`), ``SORT_VALUES``, ``FILES``,
    ``DIRS`` (paths relative to the script's directory; ``path#name``
    renames). Hadoop-only attributes (``JOBCONF``, ``PARTITIONER`` naming a
    Java class, ``HADOOP_INPUT_FORMAT``, ``HADOOP_OUTPUT_FORMAT``,
    ``LIBJARS``, ``ARCHIVES``) are refused with a message.

    ``MRJob(args=[...])`` parses mrjob-style arguments (inputs, ``-r``, the
    job's own options); ``MRJob()`` takes every option's default. The engine
    builds jobs from an ``argparse.Namespace`` of the job's options.
    """

    INPUT_PROTOCOL: ClassVar[Any] = RawValueProtocol
    INTERNAL_PROTOCOL: ClassVar[Any] = JSONProtocol
    OUTPUT_PROTOCOL: ClassVar[Any] = JSONProtocol
    SORT_VALUES: ClassVar[bool] = False
    FILES: ClassVar[Sequence[str]] = ()
    DIRS: ClassVar[Sequence[str]] = ()
    ARCHIVES: ClassVar[Sequence[str]] = ()
    JOBCONF: ClassVar[dict[str, Any]] = {}
    HADOOP_INPUT_FORMAT: ClassVar[str | None] = None
    HADOOP_OUTPUT_FORMAT: ClassVar[str | None] = None
    LIBJARS: ClassVar[Sequence[str]] = ()
    # mrjob's PARTITIONER names a Hadoop Java class; mrk8s's a partitioning.
    PARTITIONER: ClassVar[str] = "hash"

    def __init__(self, args: Sequence[str] | argparse.Namespace | None = None) -> None:
        self.arg_parser = argparse.ArgumentParser(
            prog=type(self).__name__, description=type(self).__doc__, add_help=True
        )
        self._file_dests: set[str] = set()
        self._file_paths: dict[str, str] = {}  # dest -> path given to the driver
        self._stdin: bytes | None = None
        options.add_runner_args(self.arg_parser)
        before = {a.dest for a in self.arg_parser._actions}
        self._declare(self.arg_parser)
        self._job_dests = [a.dest for a in self.arg_parser._actions if a.dest not in before]
        if isinstance(args, argparse.Namespace):
            parsed = self._defaults()
            vars(parsed).update(vars(args))
            self._in_engine = True
        elif args is None:
            parsed = self._defaults()
            self._in_engine = False
        else:
            options.check_args(list(args))
            parsed = self.arg_parser.parse_args(list(args))
            options.check_runner_args(parsed)
            self._in_engine = False
        if self._in_engine:
            # A task sees a shipped file by its name in its working directory.
            for dest in self._file_dests:
                value = getattr(parsed, dest, None)
                if value:
                    self._file_paths[dest] = value
                    setattr(parsed, dest, _shipped_name(value))
        else:
            for dest in self._file_dests:
                value = getattr(parsed, dest, None)
                if value:
                    self._file_paths[dest] = os.path.abspath(value.split("#", 1)[0])
        super().__init__(parsed)
        if args is not None:
            self._load(parsed, args)

    def _load(self, parsed: argparse.Namespace, args: Sequence[str] | argparse.Namespace) -> None:
        """Run the job's ``load_args`` (or mrjob 0.5's ``load_options``), as mrjob's
        ``__init__`` does: in the driver and in every task, before any of its functions.

        The options are already parsed: the base :meth:`load_args` only sets
        ``self.options``. ``self.arg_parser.error(msg)`` there raises
        :class:`mrk8s.UsageError` (ValueError for ``MRJob(args=[...])``, as mrjob's).
        """
        self._parsed_options = parsed

        def error(message: str) -> NoReturn:
            if isinstance(args, argparse.Namespace):
                raise UsageError(f"{type(self).__name__}: {message}")
            raise ValueError(message)

        self.arg_parser.error = error  # type: ignore[method-assign]
        listed = [] if isinstance(args, argparse.Namespace) else list(args)
        if type(self).load_options is not MRJob.load_options:
            self.load_options(listed)
        else:
            self.load_args(listed)

    def load_args(self, args: list[str]) -> None:
        """Set ``self.options``; override it (calling ``super().load_args(args)``
        first) to derive attributes from the options, as in mrjob.

        It runs whenever the job is built with its options: in the driver and in
        every task, before ``mapper_init``. ``args`` is the argument list given
        to ``MRJob(args=[...])``; in mrk8s's own processes the options arrive
        parsed and ``args`` is empty.
        """
        self.options = self._parsed_options

    def load_options(self, args: list[str]) -> None:
        """mrjob 0.5's name for :meth:`load_args`; an override of it runs instead."""
        MRJob.load_args(self, args)

    # -- options ------------------------------------------------------------------

    def configure_args(self, parser: Any = None) -> None:
        """Declare the job's options with :meth:`add_passthru_arg` / :meth:`add_file_arg`.

        Override it (calling ``super().configure_args()`` first, as in mrjob).
        """

    def add_passthru_arg(self, *args: Any, **kwargs: Any) -> None:
        """An option the job reads as ``self.options.<dest>`` in every task."""
        self.arg_parser.add_argument(*args, **kwargs)

    def add_file_arg(self, *args: Any, **kwargs: Any) -> None:
        """An option naming a local file that is shipped with the job.

        The driver reads the path; in tasks the option's value is the file's
        name, and the file is in the task's working directory.
        """
        if kwargs.get("type", str) is not str:
            raise JobDefinitionError(f"add_file_arg{args}: a file option's type must be str")
        action = self.arg_parser.add_argument(*args, **kwargs)
        self._file_dests.add(action.dest)

    def pass_arg_through(self, opt_str: str) -> None:
        """mrjob passes a runner option to tasks; under mrk8s every option reaches them."""

    def add_job_options(self, parser: argparse.ArgumentParser) -> None:
        """For ``mrk8s run``: declare this job's own options (not mrjob's runner ones)."""
        self._declare(parser)

    def _declare(self, parser: argparse.ArgumentParser) -> None:
        saved = self.arg_parser
        self.arg_parser = parser
        try:
            self.configure_args()
        finally:
            self.arg_parser = saved

    def _defaults(self) -> argparse.Namespace:
        ns = argparse.Namespace()
        for action in self.arg_parser._actions:
            if action.dest != argparse.SUPPRESS and action.dest != "help":
                setattr(ns, action.dest, action.default)
        return ns

    @classmethod
    def adapt_cli_args(cls, argv: list[str]) -> list[str]:
        """``mrk8s run``/``python job.py``: mrjob's runner options in mrk8s's terms."""
        return options.translate_cli_args(argv)

    # -- what a job calls -----------------------------------------------------------

    def set_status(self, msg: str) -> None:
        """mrjob's task status: one line on the worker's stderr."""
        print(f"mrk8s: {type(self).__name__} status: {msg}", file=sys.stderr, flush=True)

    def input_format(self) -> str:
        """Every input is lines of text, as under mrjob, whatever the file is called:
        a ``.csv`` or ``.jsonl`` file is never parsed by its extension (``.gz`` and
        ``.bz2`` files are still decompressed); ``INPUT_PROTOCOL`` reads the lines."""
        return "text"

    # -- protocols (mrjob lets a job override these methods) ------------------------

    def input_protocol(self) -> Any:
        return self.INPUT_PROTOCOL()

    def internal_protocol(self) -> Any:
        return self.INTERNAL_PROTOCOL()

    def output_protocol(self) -> Any:
        return self.OUTPUT_PROTOCOL()

    def parse_output(self, chunks: Iterable[bytes]) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` of each output line, read with ``OUTPUT_PROTOCOL``."""
        read = self.output_protocol().read
        pending = b""
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield read(line.rstrip(b"\r"))
        if pending:
            yield read(pending.rstrip(b"\r"))

    # -- steps ------------------------------------------------------------------------

    def steps(self) -> list[MRStep]:  # type: ignore[override]
        """The job's MRSteps; by default one made of the methods the class defines."""
        if callable(getattr(self, "spark", None)):
            raise JobDefinitionError(
                f"{type(self).__name__} defines spark(): mrk8s does not run Spark; express the "
                "work as MRSteps, or as mrk8s map_batch/reduce_batch over Arrow tables"
            )
        found = {n: getattr(self, n) for n in FUNCTIONS if callable(getattr(self, n, None))}
        for name in COMMANDS:
            # As in mrjob, a *_cmd/*_pre_filter method returns the command.
            method = getattr(self, name, None)
            if callable(method):
                found[name] = method()
        if not found:
            raise JobDefinitionError(
                f"{type(self).__name__} defines no mapper, combiner or reducer: define some, "
                "or steps() returning MRSteps"
            )
        return [MRStep(**found)]

    def engine_steps(self) -> list[Step]:
        """The MRSteps as :class:`mrk8s.Step` s whose functions apply the protocols."""
        self._check_class()
        mr_steps = self.steps()
        if not mr_steps:
            raise JobDefinitionError(f"{type(self).__name__}.steps() returned no steps: add one")
        for i, mr_step in enumerate(mr_steps):
            if not isinstance(mr_step, MRStep):
                raise JobDefinitionError(
                    f"{type(self).__name__}.steps()[{i}] is {type(mr_step).__name__}: mrk8s "
                    "runs MRSteps only"
                )
        return StepBuilder(self, mr_steps).steps()

    def _check_class(self) -> None:
        name = type(self).__name__
        hadoop = {
            "JOBCONF": self.JOBCONF,
            "HADOOP_INPUT_FORMAT": self.HADOOP_INPUT_FORMAT,
            "HADOOP_OUTPUT_FORMAT": self.HADOOP_OUTPUT_FORMAT,
            "LIBJARS": self.LIBJARS,
        }
        for attr, value in hadoop.items():
            if value:
                raise JobDefinitionError(
                    f"{name}.{attr} is Hadoop configuration, which mrk8s does not read: remove "
                    "it (mrk8s runs the job itself: choose reducers with --reducers; every "
                    "input is read as text lines for INPUT_PROTOCOL, .gz and .bz2 decompressed)"
                )
        if self.PARTITIONER not in ("hash", "range"):
            raise JobDefinitionError(
                f"{name}.PARTITIONER = {self.PARTITIONER!r} names a Hadoop partitioner, which "
                "mrk8s cannot load: remove it, or define partition(self, key, num_reducers) "
                "(key is the serialized key, bytes)"
            )
        if self.ARCHIVES:
            raise JobDefinitionError(
                f"{name}.ARCHIVES: mrk8s does not unpack archives into the working directory: "
                "unpack them and list the directories in DIRS"
            )

    def text_line_writer(self) -> Callable[[Any, Any], bytes]:
        """The last step's lines: ``OUTPUT_PROTOCOL.write(key, value)`` (or, when the
        last part is a command, its lines as they are)."""
        return StepBuilder(self, self.steps()).text_line_writer()

    # -- files --------------------------------------------------------------------------

    def job_files(self) -> list[tuple[str, str]]:
        """FILES, DIRS (relative to the script's directory) and file options' files."""
        here = _script_dir(type(self))
        shipped: list[tuple[str, str]] = []
        for entry in [*self.FILES, *self.DIRS]:
            path, _, name = str(entry).partition("#")
            path = os.path.join(here, os.path.expanduser(path))
            shipped.append((path, name or os.path.basename(path.rstrip("/"))))
        for dest in sorted(self._file_dests):
            value = getattr(self.options, dest, None)
            original = self._file_paths.get(dest)
            if not value:
                continue
            path, _, name = (original or value).partition("#")
            shipped.append((os.path.abspath(path), name or os.path.basename(path)))
        return shipped

    # -- running ------------------------------------------------------------------------

    def sandbox(self, stdin: Any = None, stdout: Any = None, stderr: Any = None) -> MRJob:
        """mrjob's test helper: ``stdin`` (a binary file object) becomes the input."""
        if stdin is not None:
            self._stdin = stdin.read()
        return self

    def make_runner(self) -> Any:
        """A runner for this job, built from its arguments (``-r inline|local``, inputs, ...)."""
        from mrk8s.mrjob.runner import MRJobRunner

        return MRJobRunner(self)

    def job_args(self) -> dict[str, Any]:
        """The values of the job's own options, as the engine ships them to tasks."""
        out = {dest: getattr(self.options, dest, None) for dest in self._job_dests}
        for dest, path in self._file_paths.items():
            out[dest] = path
        return out

    @classmethod
    def run(cls, argv: Sequence[str] | None = None) -> None:
        """``python job.py INPUT ...``: runs the job as ``mrk8s run job.py INPUT ...``."""
        super().run(argv)


def _shipped_name(value: str) -> str:
    path, _, name = value.partition("#")
    return name or os.path.basename(path)


def _script_dir(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
