"""mrk8s: MapReduce for Python with an Arrow shuffle, on a laptop, Ray or Kubernetes.

What a user writes or catches is importable from here; everything else
(``mrk8s.*`` submodules, ``scheduler``, ``shuffle``) is internal. Importing
this package is cheap: no Ray, Kubernetes, KFP or web stack is imported.

    from mrk8s import MapReduce

    class WordCount(MapReduce):
        def mapper(self, key, line):
            for word in line.split():
                yield word, 1

        def reducer(self, word, counts):
            yield word, sum(counts)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mrk8s._version import __version__
from mrk8s.errors import (
    InputError,
    JobDefinitionError,
    JobFailedError,
    KeyEncodingError,
    MRError,
    OutputError,
    UsageError,
    UserCodeError,
    UserError,
)

if TYPE_CHECKING:
    from mrk8s.engine.driver import JobResult
    from mrk8s.engine.progress import Progress
    from mrk8s.job import MapReduce, Step

__all__ = [
    "InputError",
    "JobDefinitionError",
    "JobFailedError",
    "KeyEncodingError",
    "MRError",
    "MapReduce",
    "OutputError",
    "Step",
    "UsageError",
    "UserCodeError",
    "UserError",
    "__version__",
    "run",
]


def run(
    script: str,
    inputs: Sequence[str] = (),
    *,
    output: str | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> JobResult:
    """Run the job in ``script`` on ``inputs``; return its :class:`~mrk8s.engine.driver.JobResult`.

    ``options`` are the fields of :class:`mrk8s.engine.settings.RunSettings`
    (``reducers``, ``workers``, ``shuffle_dir``, ``job_args``, ...); sizes
    (``memory_per_worker``, ``max_split_bytes``) may be given as text like
    ``"256MiB"``, as on the command line. Without
    ``output`` the results are written to a temporary directory and can be read
    with ``result.records()``.
    """
    import tempfile

    from mrk8s.engine.driver import Driver
    from mrk8s.engine.settings import RunSettings, parse_size

    for name in ("memory_per_worker", "max_split_bytes"):
        if isinstance(options.get(name), str):
            options[name] = parse_size(options[name])
    if output is None:
        output = tempfile.mkdtemp(prefix="mrk8s-output-")
        options.setdefault("overwrite", True)
    settings = RunSettings(script=script, inputs=tuple(inputs), output=output, **options)
    return Driver(settings, progress=progress).run()


def __getattr__(name: str) -> Any:
    # MapReduce and Step load pyarrow: imported on first use, so that ``mrk8s run``
    # can start its workers before this process spends its half second on pyarrow.
    if name in ("MapReduce", "Step"):
        from mrk8s import job

        return getattr(job, name)
    raise AttributeError(f"module 'mrk8s' has no attribute {name!r}")
