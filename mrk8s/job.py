"""The job API: what a user subclasses.

A job is a :class:`MapReduce` subclass with record functions (``mapper``,
``combiner``, ``reducer`` and their ``_init``/``_final`` hooks, mrjob
semantics) and/or columnar functions (``map_batch``, ``reduce_batch`` over
Arrow tables), or a ``steps()`` method returning several :class:`Step`.

Called by the user's script (``MyJob.run()``), by the driver (to plan) and by
every worker (which instantiates the job with the same options and looks up
the step's functions by name). Nothing here runs a job; see
:mod:`mrk8s.engine.driver`.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import pyarrow as pa

Record = tuple[Any, Any]

#: The functions a step may name, in the order a user would list them.
STEP_FUNCTIONS = (
    "mapper_init",
    "mapper",
    "mapper_raw",
    "mapper_final",
    "map_batch",
    "combiner_init",
    "combiner",
    "combiner_final",
    "combine_batch",
    "reducer_init",
    "reducer",
    "reducer_final",
    "reduce_batch",
)


@dataclass(frozen=True)
class Step:
    """One MapReduce step: the functions it runs (any may be None).

    Record functions follow mrjob: ``mapper(key, value)``, ``combiner(key,
    values)`` and ``reducer(key, values)`` are generators of ``(key, value)``;
    ``*_init``/``*_final`` take no arguments and may yield records too (the
    ``_final`` ones). ``mapper_raw(path, url)`` replaces ``mapper`` in a
    job's first step: each input file is one whole map task, and the function
    gets a local path to the file's bytes (as stored: not decompressed) and
    the URL it was listed as. Columnar functions take and return ``pyarrow.Table``;
    a table a map function returns has a ``key`` column. ``combine_batch``
    is a columnar combiner: it gets what a map task buffered (whole tables of
    map output, any keys, in no particular order) each time the task spills,
    and returns a table of the same columns that the reduce side treats as
    it would the original rows. ``reducers`` overrides the job's number of
    reducers for this step.
    """

    mapper: Callable[..., Iterable[Record] | None] | None = None
    mapper_raw: Callable[[str, str], Iterable[Record] | None] | None = None
    mapper_init: Callable[[], Iterable[Record] | None] | None = None
    mapper_final: Callable[[], Iterable[Record] | None] | None = None
    map_batch: Callable[[pa.Table], pa.Table] | None = None
    combiner: Callable[..., Iterable[Record] | None] | None = None
    combiner_init: Callable[[], Iterable[Record] | None] | None = None
    combiner_final: Callable[[], Iterable[Record] | None] | None = None
    combine_batch: Callable[[pa.Table], pa.Table] | None = None
    reducer: Callable[..., Iterable[Record] | None] | None = None
    reducer_init: Callable[[], Iterable[Record] | None] | None = None
    reducer_final: Callable[[], Iterable[Record] | None] | None = None
    reduce_batch: Callable[[pa.Table], pa.Table] | None = None
    reducers: int | None = None

    def __post_init__(self) -> None:
        from mrk8s.errors import JobDefinitionError

        if self.mapper is not None and self.map_batch is not None:
            raise JobDefinitionError(
                "a step has both mapper and map_batch: keep one of them (a step maps either "
                "record by record or a table at a time)"
            )
        map_sides = [n for n in ("mapper", "mapper_raw", "map_batch") if getattr(self, n)]
        if len(map_sides) > 1 and "mapper_raw" in map_sides:
            raise JobDefinitionError(
                f"a step has both {map_sides[0]} and {map_sides[1]}: keep one of them "
                "(mapper_raw reads a whole input file itself)"
            )
        if self.reducer is not None and self.reduce_batch is not None:
            raise JobDefinitionError("a step has both reducer and reduce_batch: keep one of them")
        if self.combiner is not None and self.combine_batch is not None:
            raise JobDefinitionError("a step has both combiner and combine_batch: keep one of them")
        for name in ("combiner", "combine_batch"):
            if getattr(self, name) is not None and not self.has_reduce:
                raise JobDefinitionError(
                    f"a step has a {name} but no reducer: a combiner only makes sense before "
                    f"a reduce; add a reducer or drop the {name}"
                )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "reducers" and value is not None and not callable(value):
                raise JobDefinitionError(
                    f"Step({f.name}=...) must be a function or method, got {value!r}"
                )

    @property
    def has_reduce(self) -> bool:
        return self.reducer is not None or self.reduce_batch is not None


class MapReduce:
    """Base class of a job. Subclass it and define some of its functions.

    Class attributes:
      ``PARTITIONER``: ``"hash"`` (default) or ``"range"`` (sampled boundaries,
      so the concatenation of the outputs ``part-00000..`` is globally sorted).
      Define ``partition(self, key, num_reducers) -> int`` for your own.
      ``SORT_KEYS``: True (default): each reducer gets its keys in sorted
      order. False: a hash shuffle without sorting, for a columnar reducer
      that does not need order (the cheapest shuffle: the map side neither
      sorts nor merges; a reducer whose partition exceeds 32 MiB gets it in
      several ``reduce_batch`` calls, every key's rows within one call).
      Needs ``reduce_batch`` and the hash partitioner.
      ``REDUCE_BATCH_PIECES``: False (default): with sorted keys, a step's
      ``reduce_batch`` is called once per partition with all of it, one table
      sorted by key (its memory grows with the partition). True: it is called
      several times per partition, each time with a table sorted by key that
      holds every row of its keys (no key's rows in two calls), the calls in
      key order; each table is at most a quarter of ``--memory-per-worker``
      or 32 MiB, whichever is less, unless one key's rows alone are more (that
      key is then a call of its own). The calls' results are written in that
      order. Needs a step with ``reduce_batch``; with ``SORT_KEYS = False``
      it changes nothing (an unsorted reducer always gets pieces).

    Instance attributes: ``options`` holds the values of the options declared
    in :meth:`configure_args` (an ``argparse.Namespace``); ``input_url`` is,
    in a map task of the first step, the URL of the input file it reads (else
    None).
    """

    PARTITIONER: ClassVar[str] = "hash"
    SORT_KEYS: ClassVar[bool] = True
    REDUCE_BATCH_PIECES: ClassVar[bool] = False

    def __init__(self, options: argparse.Namespace | None = None) -> None:
        self.options = options if options is not None else argparse.Namespace()
        self.input_url: str | None = None
        self._counters: collections.defaultdict[str, collections.Counter[str]] = (
            collections.defaultdict(collections.Counter)
        )

    # -- what a user overrides ------------------------------------------------

    def configure_args(self, parser: argparse.ArgumentParser) -> None:
        """Declare the job's own command-line options (``parser.add_argument``).

        They are given after the inputs (``python job.py in.txt --top 5``) or
        after ``--`` (``mrk8s run job.py in.txt -- --top 5``) and read as
        ``self.options.top`` in every function.
        """

    def steps(self) -> list[Step]:
        """The job's steps; by default one step made of the functions defined."""
        found = {name: getattr(self, name) for name in STEP_FUNCTIONS if hasattr(self, name)}
        return [Step(**found)]

    # -- hooks for adapters (mrk8s.mrjob); a MapReduce job need not touch them ---

    def engine_steps(self) -> list[Step]:
        """The steps the engine runs: :meth:`steps`. The driver and every task call
        this, never ``steps()`` directly, so that an adapter whose users write
        their own kind of ``steps()`` can translate them here."""
        return self.steps()

    def add_job_options(self, parser: argparse.ArgumentParser) -> None:
        """Declare the job's options on the command line's parser: :meth:`configure_args`."""
        self.configure_args(parser)

    @classmethod
    def adapt_cli_args(cls, argv: list[str]) -> list[str]:
        """Rewrite ``mrk8s run``'s arguments before they are parsed (default: as they are)."""
        return argv

    def input_format(self) -> str | None:
        """The format every input file is read as, whatever its name (one of
        :data:`mrk8s.inputs.FORMATS`); None (the default) reads each file by
        its name (``.csv`` as CSV, ``.jsonl`` as JSON lines, ...). Called by
        the driver while planning."""
        return None

    def text_line_writer(self) -> Callable[[Any, Any], bytes | str] | None:
        """A function formatting one output record as one text line (no newline),
        used for the last step's ``text`` output instead of ``json TAB json``;
        None (the default) keeps the default format. Called once per task."""
        return None

    def job_files(self) -> list[tuple[str, str]]:
        """Local files or directories to ship with the job: ``(path, name)`` pairs.

        Every task then runs in a working directory holding each of them
        under ``name`` (a directory with its whole tree). Called by the driver
        only. Default: none.
        """
        return []

    # -- what a user calls ----------------------------------------------------

    def increment_counter(self, group: str, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``group``/``name``; totals go to summary.json."""
        self._counters[str(group)][str(name)] += int(amount)

    @classmethod
    def run(cls, argv: Sequence[str] | None = None) -> None:
        """Run this job from the command line (``python job.py INPUT ...``).

        Same options as ``mrk8s run job.py``; exits with the command's status.
        """
        import importlib
        import sys

        # The job API sits below the command line in the package's layers: a
        # script hands over to the command line by name, as the `mrk8s` console
        # script does, so that no import runs from here up to the CLI.
        cli = importlib.import_module("mrk8s.cli")
        module = sys.modules[cls.__module__]
        script = getattr(module, "__file__", None)
        if script is None:
            raise SystemExit("MapReduce.run() needs a job defined in a script file")
        args = list(sys.argv[1:] if argv is None else argv)
        sys.exit(cli.main(["run", script, "--job-class", cls.__name__, *args]))

    # -- used by the framework -----------------------------------------------

    def take_counters(self) -> dict[str, dict[str, int]]:
        """The counters incremented since the last call, then reset them."""
        out = {group: dict(c) for group, c in self._counters.items() if c}
        self._counters.clear()
        return out

    @classmethod
    def has_custom_partition(cls) -> bool:
        return callable(getattr(cls, "partition", None))


def as_records(result: Iterable[Record] | None, *, what: str) -> Iterator[Record]:
    """Iterate what a user function returned (a generator, a list or None)."""
    if result is None:
        return iter(())
    try:
        return iter(result)
    except TypeError:
        from mrk8s.errors import JobDefinitionError

        raise JobDefinitionError(
            f"{what} returned {type(result).__name__}, not an iterable of (key, value) pairs: "
            "use `yield key, value` in it"
        ) from None
