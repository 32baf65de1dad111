"""How an mrjob job's MRSteps become mrk8s Steps: protocols at the edges, commands as pipes.

Called by :meth:`mrk8s.mrjob.job.MRJob.engine_steps` (in the driver and in
every task) and :meth:`~mrk8s.mrjob.job.MRJob.text_line_writer`. Each part
of an MRStep (mapper, combiner, reducer) runs as mrjob's runners run it:

- a *script* part (Python functions, maybe behind a ``*_pre_filter``
  command) reads its input lines with a protocol and writes its output with
  one. As in mrjob (``MRJob.pick_protocols``), the script parts are counted
  in order over the whole job: the first reads with ``INPUT_PROTOCOL``, the
  last writes with ``OUTPUT_PROTOCOL``, all others use ``INTERNAL_PROTOCOL``;
  a combiner reads and writes what its mapper writes (raw lines after a
  command mapper);
- a *command* part (``*_cmd``) gets the lines and gives lines, with no
  protocol (:mod:`mrk8s.mrjob.commands`);
- a missing mapper (in a step after the first) passes records through.

Between parts, a record is one line (bytes) keyed by the bytes before its
first tab, so keys group and sort by their serialized form, as under
mrjob's runners. A record the job yields that its protocol cannot write on
its way to the next part is a :class:`ProtocolError` (a user error naming
the record, the protocol and the function; the task adds the step), never a
crash of mrk8s; the job's output lines are written by the part writer, which
names what ``OUTPUT_PROTOCOL`` cannot write and the part file.

Steps without commands take the direct path (:meth:`StepBuilder._plain_step`,
the one the word count runs through); a step with a command or pre-filter
wraps its map and reduce sides in :class:`_MapSide` / :class:`_ReduceSide`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Protocol

from mrk8s.errors import UserError
from mrk8s.job import Record, Step, as_records
from mrk8s.mrjob import compat
from mrk8s.mrjob.commands import CommandPipe, LineSpool
from mrk8s.mrjob.protocol import RawValueProtocol, TextValueProtocol
from mrk8s.mrjob.step import MRStep


class MRJobLike(Protocol):
    """What the builder uses of :class:`mrk8s.mrjob.job.MRJob` (typed here, not
    imported: the job module imports this one)."""

    SORT_VALUES: ClassVar[bool]
    input_url: str | None

    def input_protocol(self) -> Any: ...

    def internal_protocol(self) -> Any: ...

    def output_protocol(self) -> Any: ...


__all__ = ["ProtocolError", "StepBuilder"]

Encoder = Callable[[Any, Any], Record]
Reader = Callable[[bytes], tuple[Any, Any]]

_COMBINER_COMMANDS = ("combiner_cmd", "combiner_pre_filter")

#: mrjob's names of protocol classes that mrk8s defines under another (JSONProtocol is
#: StandardJSONProtocol, RawProtocol is TextProtocol, ...).
_MRJOB_NAMES = {
    "StandardJSONProtocol": "JSONProtocol",
    "StandardJSONValueProtocol": "JSONValueProtocol",
}

#: Characters of a key or value shown in an error.
_SHOWN = 80


class ProtocolError(UserError):
    """A record an mrjob job yielded that its protocol cannot write (or not a pair)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def line_record(line: bytes) -> Record:
    """A line as a shuffle record: keyed by its bytes before the first tab."""
    return line.partition(b"\t")[0], line


def _line_bytes(line: bytes | str) -> bytes:
    return line.encode() if isinstance(line, str) else line


def writer(protocol: Any, label: str, what: str) -> Callable[[Any, Any], bytes]:
    """``protocol.write`` giving bytes; what mrk8s's own protocols cannot encode is a
    :class:`ProtocolError`. A job's own protocol class raises as user code does."""
    write = protocol.write
    name = _MRJOB_NAMES.get(type(protocol).__name__, type(protocol).__name__)
    ours = type(protocol).__module__ == "mrk8s.mrjob.protocol"

    def encode(key: Any, value: Any) -> bytes:
        try:
            return _line_bytes(write(key, value))
        except Exception as exc:
            if not ours:
                raise
            raise ProtocolError(
                f"{what} yielded key {_short(key)} with value {_short(value)}, which "
                f"{label} ({name}) cannot encode ({type(exc).__name__}: {exc}): yield what "
                f"{name} can write (e.g. a list, not a set), or set {label} to a protocol that "
                "can (PickleProtocol, ReprProtocol)"
            ) from None

    return encode


def not_a_pair(record: Any, what: str) -> ProtocolError:
    return ProtocolError(
        f"{what} yielded {_short(record)}, not a (key, value) pair: write `yield key, value`"
    )


def _pairs(records: Iterable[Any] | None, what: str) -> Iterator[tuple[Any, Any]]:
    for record in as_records(records, what=what):
        try:
            key, value = record
        except (TypeError, ValueError):
            raise not_a_pair(record, what) from None
        yield key, value


def _encoded(records: Iterable[Any] | None, encode: Encoder | None, what: str) -> Iterator[Record]:
    if encode is None:
        yield from as_records(records, what=what)
        return
    # Unpacked here, not through _pairs: one generator less per record (the hot path).
    for record in as_records(records, what=what):
        try:
            key, value = record
        except (TypeError, ValueError):
            raise not_a_pair(record, what) from None
        yield encode(key, value)


def _identity(key: Any, value: Any) -> Iterator[Record]:
    yield key, value


def _identity_reducer(key: Any, values: Iterable[Any]) -> Iterator[Record]:
    for value in values:
        yield key, value


class StepBuilder:
    """The engine steps of one job instance; see the module docstring."""

    def __init__(self, job: MRJobLike, mr_steps: list[MRStep]) -> None:
        self.job = job
        self.mr_steps = mr_steps
        n = len(mr_steps)
        scripts = []
        for i, s in enumerate(mr_steps):
            for part in ("mapper", "reducer"):
                if s.kind(part, first=i == 0) == "script":
                    scripts.append((i, part))
        #: (step, part) -> ((read protocol, its name), (write protocol, its name))
        self.protocols: dict[tuple[int, str], tuple[tuple[Any, str], tuple[Any, str]]] = {}
        for k, key in enumerate(scripts):
            read = (
                (job.input_protocol(), "INPUT_PROTOCOL")
                if k == 0
                else (job.internal_protocol(), "INTERNAL_PROTOCOL")
            )
            write = (
                (job.output_protocol(), "OUTPUT_PROTOCOL")
                if k == len(scripts) - 1
                else (job.internal_protocol(), "INTERNAL_PROTOCOL")
            )
            self.protocols[key] = (read, write)
        last = mr_steps[-1]
        last_part = "reducer" if last.has_reducer() else "mapper"
        #: Whether the job's output lines come from a command (written as they are).
        self.output_from_command = last.kind(last_part, first=n == 1) == "cmd"
        self.sort_values = bool(job.SORT_VALUES)

    def steps(self) -> list[Step]:
        n = len(self.mr_steps)
        return [self.step(i, first=i == 0, last=i == n - 1) for i in range(n)]

    def step(self, i: int, *, first: bool, last: bool) -> Step:
        s = self.mr_steps[i]
        fields = self._plain_step(i, s, first=first, last=last)
        if any(s[n] for n in ("mapper_cmd", "mapper_pre_filter", *_COMBINER_COMMANDS)):
            m = _MapSide(self, i, s, first=first, last=last)
            fields.update(
                mapper=m.feed if m.kind and not s["mapper_raw"] else None,
                mapper_raw=m.feed_raw if s["mapper_raw"] else None,
                mapper_init=m.init if m.kind else None,
                mapper_final=m.final if m.kind else None,
            )
            if m.spools_combiner:
                # The map side runs it over the task's sorted output (see _MapSide).
                fields.update(combiner=None, combiner_init=None, combiner_final=None)
        if s["reducer_cmd"] or s["reducer_pre_filter"]:
            r = _ReduceSide(self, i, s, last=last)
            fields.update(reducer=r.feed, reducer_init=r.init, reducer_final=r.final)
        return Step(**fields)

    # -- protocols of a part ------------------------------------------------------------

    def read_of(self, i: int, part: str) -> Reader:
        read: Reader = self.protocols[(i, part)][0][0].read
        return read

    def encoder_of(self, i: int, part: str, what: str) -> Encoder:
        """(key, value) -> a shuffle record, written with the part's write protocol."""
        protocol, label = self.protocols[(i, part)][1]
        write = writer(protocol, label, what)
        return lambda key, value: line_record(write(key, value))

    def combiner_protocol(self, i: int, s: MRStep, first: bool) -> tuple[Any, str]:
        """What a combiner reads and writes: its mapper's output protocol (raw lines
        after a command mapper), as mrjob's ``pick_protocols`` chooses."""
        if s.kind("mapper", first=first) == "script":
            return self.protocols[(i, "mapper")][1]
        return RawValueProtocol(), "RawValueProtocol"

    # -- steps without commands -----------------------------------------------------

    def _plain_step(self, i: int, s: MRStep, *, first: bool, last: bool) -> dict[str, Any]:
        """The fields of the step's :class:`mrk8s.Step` when no part is a command."""
        has_reduce = s.has_reducer()
        mapper_script = s.kind("mapper", first=first) == "script"
        reducer_script = s.kind("reducer") == "script"
        # What the map side yields: shuffle records, or (last map-only step) the records
        # themselves, which the output protocol writes (text_line_writer).
        map_out: Encoder | None = None
        if mapper_script and not (last and not has_reduce):
            map_out = self.encoder_of(i, "mapper", "mapper")
        reduce_out = None
        if reducer_script and not last:
            reduce_out = self.encoder_of(i, "reducer", "reducer")
        combine = None
        if s["combiner"]:
            protocol, label = self.combiner_protocol(i, s, first)
            combine_read: Reader = protocol.read
            combine_write = writer(protocol, label, "combiner")

            def combine_out(key: Any, value: Any) -> Record:
                return line_record(combine_write(key, value))

            combine = (combine_read, combine_out)
        mapper_raw = s["mapper_raw"]
        mapper = None
        if mapper_script and not mapper_raw:
            mapper = self._map_function(s, first, map_out, self.read_of(i, "mapper"))
        return dict(
            mapper=mapper,
            mapper_raw=self._wrap_raw(mapper_raw, map_out) if mapper_raw else None,
            mapper_init=self._wrap_hook(s["mapper_init"], map_out, "mapper_init", first=first),
            mapper_final=self._wrap_hook(s["mapper_final"], map_out, "mapper_final"),
            combiner=self._wrap_grouped(
                s["combiner"],
                combine[0] if combine else None,
                combine[1] if combine else None,
                "combiner",
            ),
            combiner_init=self._wrap_hook(
                s["combiner_init"], combine[1] if combine else None, "combiner_init"
            ),
            combiner_final=self._wrap_hook(
                s["combiner_final"], combine[1] if combine else None, "combiner_final"
            ),
            reducer=self._wrap_grouped(
                s["reducer"] or (_identity_reducer if reducer_script else None),
                self.read_of(i, "reducer") if reducer_script else None,
                reduce_out,
                "reducer",
                sort_values=self.sort_values,
            ),
            reducer_init=self._wrap_hook(s["reducer_init"], reduce_out, "reducer_init"),
            reducer_final=self._wrap_hook(s["reducer_final"], reduce_out, "reducer_final"),
        )

    def _map_function(
        self, s: MRStep, first: bool, encode: Encoder | None, read: Reader
    ) -> Callable[..., Iterable[Record]]:
        user = s["mapper"]
        if first:
            protocol = getattr(read, "__self__", None)
            if type(protocol) is TextValueProtocol:
                # The engine already gives text lines; skip a re-encode per line.
                def decode(_: Any, line: Any) -> tuple[Any, Any]:
                    return None, line
            else:

                def decode(_: Any, line: Any) -> tuple[Any, Any]:
                    key, value = read(line.encode() if isinstance(line, str) else line)
                    return key, value
        else:

            def decode(_: Any, line: Any) -> tuple[Any, Any]:
                return read(line)

        if user is None:

            def mapper(key: Any, line: Any) -> Iterator[Record]:
                yield from _encoded([decode(key, line)], encode, "mapper")

        elif encode is None:

            def mapper(key: Any, line: Any) -> Iterator[Record]:
                yield from as_records(user(*decode(key, line)), what="mapper")

        else:

            def mapper(key: Any, line: Any) -> Iterator[Record]:
                for record in as_records(user(*decode(key, line)), what="mapper"):
                    try:
                        k, v = record
                    except (TypeError, ValueError):
                        raise not_a_pair(record, "mapper") from None
                    yield encode(k, v)

        return mapper

    def _wrap_raw(self, user: Callable[..., Any], encode: Encoder | None) -> Callable[..., Any]:
        def mapper_raw(path: str, url: str) -> Iterator[Record]:
            yield from _encoded(user(path, url), encode, "mapper_raw")

        return mapper_raw

    def _wrap_hook(
        self,
        user: Callable[..., Any] | None,
        encode: Encoder | None,
        what: str,
        first: bool = False,
    ) -> Callable[[], Iterator[Record]] | None:
        job = self.job
        if first:
            # Every first-step map task says which file it reads, as Hadoop does.
            def init() -> Iterator[Record]:
                compat.set_input_file(job.input_url)
                if user is not None:
                    yield from _encoded(user(), encode, what)

            return init
        if user is None:
            return None

        def hook() -> Iterator[Record]:
            yield from _encoded(user(), encode, what)

        return hook

    def _wrap_grouped(
        self,
        user: Callable[..., Any] | None,
        read: Reader | None,
        encode: Encoder | None,
        what: str,
        sort_values: bool = False,
    ) -> Callable[[Any, Iterator[Any]], Iterator[Record]] | None:
        if user is None or read is None:
            return None

        def grouped(_: Any, lines: Iterator[Any]) -> Iterator[Record]:
            if sort_values:
                # mrjob's runners sort a key's lines by their bytes; in memory here.
                lines = iter(sorted(lines))
            first_line = next(lines)
            key, value = read(first_line)

            def values() -> Iterator[Any]:
                yield value
                for line in lines:
                    yield read(line)[1]

            yield from _encoded(user(key, values()), encode, what)

        return grouped

    # -- the job's output lines ---------------------------------------------------------

    def text_line_writer(self) -> Callable[[Any, Any], bytes]:
        """The last part's records as output lines: a command's lines as they are;
        a script's records written with ``OUTPUT_PROTOCOL`` (what it cannot write
        raises as it does, for the part writer to name the key and the part file)."""
        if self.output_from_command:
            return lambda key, line: _line_bytes(line)
        write = self.job.output_protocol().write
        return lambda key, value: _line_bytes(write(key, value))


def _groups(pairs: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Iterator[Any]]]:
    """Consecutive pairs with equal keys as ``(key, values)``, as mrjob's script reads them."""
    for key, group in itertools.groupby(pairs, key=lambda kv: kv[0]):
        yield key, (value for _, value in group)


class _MapSide:
    """A map task of a step with a command on its map side (mapper or combiner).

    The mapper part is a command (``mapper_cmd``), or Python behind an optional
    ``mapper_pre_filter``: the task's input lines are piped through the command
    as they come. A combiner command or pre-filter reads the task's whole map
    output sorted by key, as under mrjob: the lines are spooled to a file, then
    sorted and piped through it when the task's input ends.
    """

    def __init__(self, builder: StepBuilder, i: int, s: MRStep, *, first: bool, last: bool):
        self.b = builder
        self.s = s
        self.i = i
        self.first = first
        self.kind = s.kind("mapper", first=first)
        #: A last map-only step: its records are the job's output.
        self.to_output = last and not s.has_reducer()
        self.spools_combiner = bool(s["combiner_cmd"] or s["combiner_pre_filter"])
        self.pipe: CommandPipe | None = None
        self.spool: LineSpool | None = None
        if self.kind == "script":
            self.read = builder.read_of(i, "mapper")
            self.encode: Encoder | None = (
                None if self.to_output else builder.encoder_of(i, "mapper", "mapper")
            )
        self.command = s["mapper_cmd"] or s["mapper_pre_filter"]
        self.what = "mapper_cmd" if s["mapper_cmd"] else "mapper_pre_filter"

    # -- engine hooks -------------------------------------------------------------------

    def init(self) -> Iterator[Record]:
        if self.first:
            compat.set_input_file(self.b.job.input_url)
        if self.command:
            step = f" of step {self.i + 1}"
            self.pipe = CommandPipe(
                self.command, what=self.what + step, pre_filter=self.what.endswith("filter")
            )
        if self.spools_combiner:
            self.spool = LineSpool()
        if self.kind == "script" and self.s["mapper_init"]:
            yield from self._script_out(self.s["mapper_init"](), "mapper_init")

    def feed(self, key: Any, value: Any) -> Iterator[Record]:
        line = value.encode() if isinstance(value, str) else value
        if self.pipe is not None:
            for out in self.pipe.feed([line]):
                yield from self._after_command(out)
        else:
            yield from self._script(line)

    def feed_raw(self, path: str, url: str) -> Iterator[Record]:
        yield from self._script_out(self.s["mapper_raw"](path, url), "mapper_raw")

    def final(self) -> Iterator[Record]:
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            for out in pipe.close():
                yield from self._after_command(out)
        if self.kind == "script" and self.s["mapper_final"]:
            yield from self._script_out(self.s["mapper_final"](), "mapper_final")
        if self.spool is not None:
            spool, self.spool = self.spool, None
            yield from self._combine(spool.sorted_lines(whole_line=self.b.sort_values))

    # -- the mapper part --------------------------------------------------------------

    def _after_command(self, line: bytes) -> Iterator[Record]:
        if self.kind == "cmd":
            yield from self._line_out(line)
        else:
            yield from self._script(line)

    def _script(self, line: bytes) -> Iterator[Record]:
        key, value = self.read(line)
        yield from self._script_out((self.s["mapper"] or _identity)(key, value), "mapper")

    def _script_out(self, records: Iterable[Any] | None, what: str) -> Iterator[Record]:
        if self.encode is None:
            yield from as_records(records, what=what)
            return
        for key, value in _pairs(records, what):
            yield from self._line_out(self.encode(key, value)[1])

    def _line_out(self, line: bytes) -> Iterator[Record]:
        if self.spool is not None:
            self.spool.add(line)
        elif self.to_output:
            yield None, line
        else:
            yield line_record(line)

    # -- a combiner command or pre-filter ---------------------------------------------

    def _combine(self, lines: Iterator[bytes]) -> Iterator[Record]:
        s = self.s
        step = f" of step {self.i + 1}"
        if s["combiner_cmd"]:
            pipe = CommandPipe(s["combiner_cmd"], what="combiner_cmd" + step, pre_filter=False)
            for out in itertools.chain(pipe.feed(lines), pipe.close()):
                yield line_record(out)
            return
        pipe = CommandPipe(
            s["combiner_pre_filter"], what="combiner_pre_filter" + step, pre_filter=True
        )
        protocol, label = self.b.combiner_protocol(self.i, s, self.first)
        write = writer(protocol, label, "combiner")
        read = protocol.read
        filtered = itertools.chain(pipe.feed(lines), pipe.close())
        combiner = s["combiner"] or _identity_reducer
        if s["combiner_init"]:
            for k, v in _pairs(s["combiner_init"](), "combiner_init"):
                yield line_record(write(k, v))
        for key, values in _groups(read(line) for line in filtered):
            for k, v in _pairs(combiner(key, values), "combiner"):
                yield line_record(write(k, v))
        if s["combiner_final"]:
            for k, v in _pairs(s["combiner_final"](), "combiner_final"):
                yield line_record(write(k, v))


class _ReduceSide:
    """A reduce task of a step whose reducer is a command, or has a pre-filter.

    ``reducer_cmd``: each key's lines (sorted, with ``SORT_VALUES``) are piped
    through the command as they come. ``reducer_pre_filter``: the partition's
    lines are spooled, then piped through the filter when the task's input
    ends, and its output lines, read with the reducer's protocol and grouped by
    consecutive keys, go to the Python reducer, as under mrjob.
    """

    def __init__(self, builder: StepBuilder, i: int, s: MRStep, *, last: bool) -> None:
        self.b = builder
        self.s = s
        self.i = i
        self.last = last
        self.kind = s.kind("reducer")
        self.pipe: CommandPipe | None = None
        self.spool: LineSpool | None = None
        if self.kind == "script":
            self.read = builder.read_of(i, "reducer")
            self.encode: Encoder | None = (
                None if last else builder.encoder_of(i, "reducer", "reducer")
            )

    def init(self) -> Iterator[Record]:
        step = f" of step {self.i + 1}"
        if self.kind == "cmd":
            self.pipe = CommandPipe(
                self.s["reducer_cmd"], what="reducer_cmd" + step, pre_filter=False
            )
            return
        self.spool = LineSpool()
        if self.s["reducer_init"]:
            yield from self._script_out(self.s["reducer_init"](), "reducer_init")

    def feed(self, key: Any, lines: Iterator[bytes]) -> Iterator[Record]:
        if self.b.sort_values:
            lines = iter(sorted(lines))
        if self.pipe is not None:
            for out in self.pipe.feed(lines):
                yield self._command_out(out)
        else:
            assert self.spool is not None
            for line in lines:
                self.spool.add(line)

    def final(self) -> Iterator[Record]:
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            for out in pipe.close():
                yield self._command_out(out)
            return
        assert self.spool is not None
        spool, self.spool = self.spool, None
        pipe = CommandPipe(
            self.s["reducer_pre_filter"],
            what=f"reducer_pre_filter of step {self.i + 1}",
            pre_filter=True,
        )
        filtered = itertools.chain(pipe.feed(spool.lines()), pipe.close())
        reducer = self.s["reducer"] or _identity_reducer
        for key, values in _groups(self.read(line) for line in filtered):
            yield from self._script_out(reducer(key, values), "reducer")
        if self.s["reducer_final"]:
            yield from self._script_out(self.s["reducer_final"](), "reducer_final")

    def _command_out(self, line: bytes) -> Record:
        return (None, line) if self.last else line_record(line)

    def _script_out(self, records: Iterable[Any] | None, what: str) -> Iterator[Record]:
        if self.encode is None:
            yield from as_records(records, what=what)
            return
        for key, value in _pairs(records, what):
            yield self.encode(key, value)
