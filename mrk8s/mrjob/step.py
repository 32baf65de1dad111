"""mrjob's step classes: :class:`MRStep`, and the step kinds mrk8s refuses.

An :class:`MRStep` only records which of the job's functions and shell
commands a step runs; :mod:`mrk8s.mrjob.substeps` turns it into an
:class:`mrk8s.Step`. What mrk8s cannot run (per-step Hadoop ``jobconf``,
jar and Spark steps) fails here, when the job builds its steps, with a
message naming the mrk8s way to do it.
"""

from __future__ import annotations

from typing import Any

from mrk8s.errors import JobDefinitionError

__all__ = [
    "GENERIC_ARGS",
    "INPUT",
    "OUTPUT",
    "JarStep",
    "MRStep",
    "SparkJarStep",
    "SparkScriptStep",
    "SparkStep",
    "StepFailedException",
]

#: Placeholders mrjob's jar and Spark steps put in their argument lists.
INPUT = "<input>"
OUTPUT = "<output>"
GENERIC_ARGS = "<generic args>"

#: The functions an MRStep may name, and which mrk8s runs.
FUNCTIONS = (
    "mapper",
    "mapper_init",
    "mapper_final",
    "mapper_raw",
    "combiner",
    "combiner_init",
    "combiner_final",
    "reducer",
    "reducer_init",
    "reducer_final",
)

#: Shell-command parts of an mrjob step (see :mod:`mrk8s.mrjob.commands`).
COMMANDS = tuple(
    f"{part}_{kind}" for part in ("mapper", "combiner", "reducer") for kind in ("cmd", "pre_filter")
)

_PARTS = {
    part: tuple(n for n in (*FUNCTIONS, *COMMANDS) if n.startswith(part + "_") or n == part)
    for part in ("mapper", "combiner", "reducer")
}


class MRStep:
    """One map/combine/reduce step of an mrjob job.

    Takes the functions in :data:`FUNCTIONS` and the shell commands in
    :data:`COMMANDS` (strings, or argument lists) as keyword arguments (any
    may be left out; a step with only a reducer maps by identity), with
    mrjob's conflicts refused (``mapper_cmd`` with a mapper function,
    ``mapper_raw`` with ``mapper``, a command with its pre-filter).
    ``jobconf`` raises :class:`mrk8s.JobDefinitionError`. Like mrjob's, it
    reads as a dict: ``step["mapper"]``, ``step["mapper_cmd"]``.
    """

    def __init__(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            if name == "jobconf" and value:
                raise JobDefinitionError(
                    "MRStep(jobconf=...) sets Hadoop configuration, which mrk8s does not read: "
                    "remove it; set the number of reducers with --reducers (or reducers= in "
                    "an mrk8s Step)"
                )
            if name not in (*FUNCTIONS, *COMMANDS, "jobconf"):
                raise JobDefinitionError(
                    f"MRStep got an unknown argument {name}=: it takes "
                    f"{', '.join((*FUNCTIONS, *COMMANDS))}"
                )
            if name in FUNCTIONS and value is not None and not callable(value):
                raise JobDefinitionError(f"MRStep({name}=...) must be a method, got {value!r}")
            if name in COMMANDS and value is not None and not _is_command(value):
                raise JobDefinitionError(
                    f"MRStep({name}=...) must be a shell command (a string, or a list of "
                    f"arguments), got {value!r}"
                )
        self._steps: dict[str, Any] = {name: kwargs.get(name) or None for name in FUNCTIONS}
        self._commands: dict[str, Any] = {name: kwargs.get(name) or None for name in COMMANDS}
        if not any(self._steps.values()) and not any(self._commands.values()):
            raise JobDefinitionError(
                "an MRStep needs at least one of mapper, mapper_raw, combiner, reducer "
                "(or their _init/_final, _cmd or _pre_filter)"
            )
        conflicts = [
            ("mapper", "mapper_raw"),
            ("mapper_raw", "mapper_pre_filter"),
            *((f"{p}_cmd", other) for p in _PARTS for other in _PARTS[p] if other != f"{p}_cmd"),
        ]
        for a, b in conflicts:
            if self[a] and self[b]:
                raise JobDefinitionError(f"an MRStep cannot have both {a} and {b}: keep one")

    def __getitem__(self, name: str) -> Any:
        return self._commands[name] if name in self._commands else self._steps[name]

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._commands or name in self._steps:
            return self[name] or default
        return default

    def has_explicit(self, part: str) -> bool:
        """Whether the step names anything of ``part`` (mapper, combiner or reducer)."""
        return any(self[name] for name in _PARTS[part])

    def kind(self, part: str, *, first: bool = False) -> str | None:
        """How ``part`` runs, as mrjob's step description says: ``"cmd"`` (a command),
        ``"script"`` (Python, maybe behind a pre-filter) or None (not run: the
        records pass through). A first step always has a mapper (an identity one
        if none is given), and so does a step with a combiner."""
        if self[f"{part}_cmd"]:
            return "cmd"
        explicit = self.has_explicit(part)
        if part == "mapper":
            explicit = explicit or first or self.has_explicit("combiner")
        return "script" if explicit else None

    def has_commands(self) -> bool:
        return any(self._commands.values())

    def has_map_side(self) -> bool:
        return any(self._steps[n] for n in ("mapper", "mapper_raw", "mapper_init", "mapper_final"))

    def has_reducer(self) -> bool:
        return self.has_explicit("reducer")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MRStep)
            and self._steps == other._steps
            and self._commands == other._commands
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        items = {**self._steps, **self._commands}.items()
        parts = ", ".join(f"{k}={v!r}" for k, v in items if v)
        return f"MRStep({parts})"


def _is_command(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(a, str | int | float) for a in value)
    )


class _Unsupported:
    """A step kind mrk8s cannot run: constructing one raises."""

    kind = ""
    fix = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise JobDefinitionError(f"mrk8s cannot run {self.kind}: {self.fix}")


class JarStep(_Unsupported):
    """mrjob's Hadoop jar step: refused."""

    kind = "a JarStep (a Hadoop jar)"
    fix = "mrk8s runs Python steps only; rewrite the jar's work as an MRStep"


class SparkStep(_Unsupported):
    """mrjob's Spark step: refused."""

    kind = "a SparkStep (Spark)"
    fix = (
        "mrk8s runs MapReduce steps, not Spark; express the work as MRSteps, or as mrk8s "
        "map_batch/reduce_batch over Arrow tables"
    )


class SparkJarStep(SparkStep):
    """mrjob's Spark jar step: refused."""

    kind = "a SparkJarStep (Spark)"


class SparkScriptStep(SparkStep):
    """mrjob's Spark script step: refused."""

    kind = "a SparkScriptStep (Spark)"


class StepFailedException(Exception):
    """Raised by mrjob's runners when a step fails; kept so imports of it work.

    mrk8s raises :class:`mrk8s.JobFailedError` instead.
    """
