"""mrjob's step classes: :class:`MRStep`, and the step kinds mrk8s refuses.

An :class:`MRStep` only records which of the job's functions a step runs;
:meth:`mrk8s.mrjob.job.MRJob.engine_steps` turns it into an
:class:`mrk8s.Step`. What mrk8s cannot run (shell commands and pre-filters,
per-step Hadoop ``jobconf``, jar and Spark steps) fails here, when the job
builds its steps, with a message naming the mrk8s way to do it.
"""

from __future__ import annotations

from collections.abc import Callable
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

#: Shell-command parts of an mrjob step: mrk8s runs Python functions only.
COMMANDS = tuple(
    f"{part}_{kind}" for part in ("mapper", "combiner", "reducer") for kind in ("cmd", "pre_filter")
)


def command_error(name: str) -> JobDefinitionError:
    """The error for a ``*_cmd`` or ``*_pre_filter`` step part."""
    part = name.split("_", 1)[0]
    if name.endswith("_cmd"):
        what = f"{name} (a shell command run as the {part})"
        fix = (
            f"write the {part} as a Python method (e.g. run the program with subprocess inside "
            f"it, or do its work in Python)"
        )
    else:
        what = f"{name} (a shell command the {part}'s input is piped through)"
        fix = f"filter the records at the start of the {part} in Python instead"
    return JobDefinitionError(f"mrk8s cannot run {what}: mrk8s steps run Python only; {fix}")


class MRStep:
    """One map/combine/reduce step of an mrjob job.

    Takes the functions in :data:`FUNCTIONS` as keyword arguments (any may be
    left out; a step with only a reducer maps by identity). ``*_cmd``,
    ``*_pre_filter`` and ``jobconf`` raise :class:`mrk8s.JobDefinitionError`.
    Like mrjob's, it reads as a dict: ``step["mapper"]``.
    """

    def __init__(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            if name in COMMANDS and value is not None:
                raise command_error(name)
            if name == "jobconf" and value:
                raise JobDefinitionError(
                    "MRStep(jobconf=...) sets Hadoop configuration, which mrk8s does not read: "
                    "remove it; set the number of reducers with --reducers (or reducers= in "
                    "an mrk8s Step)"
                )
            if name not in (*FUNCTIONS, *COMMANDS, "jobconf"):
                raise JobDefinitionError(
                    f"MRStep got an unknown argument {name}=: it takes {', '.join(FUNCTIONS)}"
                )
            if name in FUNCTIONS and value is not None and not callable(value):
                raise JobDefinitionError(f"MRStep({name}=...) must be a method, got {value!r}")
        self._steps: dict[str, Callable[..., Any] | None] = {
            name: kwargs.get(name) for name in FUNCTIONS
        }
        if not any(self._steps.values()):
            raise JobDefinitionError(
                "an MRStep needs at least one of mapper, mapper_raw, combiner, reducer "
                "(or their _init/_final)"
            )
        if self._steps["mapper"] and self._steps["mapper_raw"]:
            raise JobDefinitionError("an MRStep cannot have both mapper and mapper_raw: keep one")

    def __getitem__(self, name: str) -> Callable[..., Any] | None:
        return self._steps[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._steps.get(name) or default

    def has_map_side(self) -> bool:
        return any(self._steps[n] for n in ("mapper", "mapper_raw", "mapper_init", "mapper_final"))

    def has_reducer(self) -> bool:
        return any(self._steps[n] for n in ("reducer", "reducer_init", "reducer_final"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MRStep) and self._steps == other._steps

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self._steps.items() if v)
        return f"MRStep({parts})"


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
