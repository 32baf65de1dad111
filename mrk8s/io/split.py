"""One map task's share of the input: a :class:`Split`, part of the job plan.

Defined beside the input readers (:mod:`mrk8s.io.inputs`), which cut inputs
into splits and read them; the plan (:mod:`mrk8s.tasks.plan`) carries them to
the workers. Plain, frozen, JSON-serialisable data, like the rest of the plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Split:
    """One map task's share of the input.

    ``format`` is one of ``text``, ``jsonl``, ``csv``, ``parquet``, ``arrow``
    (user inputs) or ``shuffle`` (the Arrow output of a previous step).
    For ``text``/``jsonl`` ``start``/``end`` are byte offsets and the split
    owns every line whose first byte lies in ``[start, end)``; for ``parquet``
    they are row-group numbers ``[start, end)``; otherwise the split is the
    whole file and ``end`` is -1. ``compression`` is ``gzip``, ``bz2`` or None
    (a compressed file is always one whole split).
    """

    url: str
    format: str
    start: int = 0
    end: int = -1
    compression: str | None = None
    size: int = 0

    def describe(self) -> str:
        """A short human description, used in error messages."""
        if self.end < 0:
            return self.url
        unit = "row groups" if self.format == "parquet" else "bytes"
        return f"{self.url} [{unit} {self.start}-{self.end})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Split:
        return cls(**data)
