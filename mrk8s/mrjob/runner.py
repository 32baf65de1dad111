"""``job.make_runner()``: mrjob's programmatic API, running on mrk8s.

    job = MRWordFreqCount(args=["-r", "inline", "input.txt"])
    with job.make_runner() as runner:
        runner.run()
        for key, value in job.parse_output(runner.cat_output()):
            ...

:meth:`MRJobRunner.run` calls :func:`mrk8s.run` on the job's script with the
job's options; the output goes to ``--output-dir`` or to a temporary
directory removed by :meth:`MRJobRunner.cleanup` (on leaving the ``with``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from mrk8s.errors import UsageError
from mrk8s.mrjob import options

if TYPE_CHECKING:
    from mrk8s.engine.driver import JobResult


class RunnableJob(Protocol):
    """What the runner uses of an :class:`~mrk8s.mrjob.job.MRJob` (which imports this module)."""

    options: Namespace
    _stdin: bytes | None

    def job_args(self) -> dict[str, Any]: ...


class MRJobRunner:
    """Runs one :class:`~mrk8s.mrjob.job.MRJob` on mrk8s (the local backend)."""

    def __init__(self, job: RunnableJob) -> None:
        self.job = job
        opts = job.options
        self.backend = opts.backend or options.check_runner_name(opts.runner)
        self._tmp = tempfile.mkdtemp(prefix="mrk8s-mrjob-")
        self.output_dir: str = opts.output_dir or os.path.join(self._tmp, "output")
        self.result: JobResult | None = None

    def __enter__(self) -> MRJobRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _script(self) -> str:
        module = sys.modules.get(type(self.job).__module__)
        path = getattr(module, "__file__", None)
        if not path:
            raise UsageError(
                f"{type(self.job).__name__} is not defined in a script file: mrk8s workers "
                "import the job from its file, so define it in a .py file"
            )
        return str(path)

    def run(self) -> None:
        """Run the job to completion; raises :class:`mrk8s.JobFailedError` if it fails."""
        import mrk8s

        opts = self.job.options
        inputs = list(opts.args)
        if not inputs:
            stdin = self.job._stdin
            if stdin is None:
                raise UsageError(
                    "the job has no input: give input paths in args=[...], or data with "
                    "job.sandbox(stdin=...)"
                )
            path = os.path.join(self._tmp, "stdin.txt")
            with open(path, "wb") as f:
                f.write(stdin)
            inputs = [path]
        settings: dict[str, Any] = {
            "job_class": type(self.job).__name__,
            "job_args": self.job.job_args(),
            "backend": self.backend,
            "overwrite": True,
        }
        for name in ("reducers", "workers", "shuffle_dir"):
            if getattr(opts, name) is not None:
                settings[name] = getattr(opts, name)
        self.result = mrk8s.run(self._script(), inputs, output=self.output_dir, **settings)

    def get_output_dir(self) -> str:
        return self.output_dir

    def cat_output(self) -> Iterator[bytes]:
        """The output's lines (bytes, with their newline), part by part."""
        if self.result is None:
            raise UsageError("call runner.run() before runner.cat_output()")
        names = sorted(n for n in os.listdir(self.output_dir) if n.startswith("part-"))
        for name in names:
            with open(os.path.join(self.output_dir, name), "rb") as f:
                yield from f

    def counters(self) -> list[dict[str, dict[str, int]]]:
        """The job's counters (mrjob gives one dict per step; mrk8s totals the job's)."""
        if self.result is None:
            return []
        return [self.result.summary.get("counters", {})]

    def cleanup(self) -> None:
        """Remove the temporary directory (and the output, unless --output-dir was given)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
