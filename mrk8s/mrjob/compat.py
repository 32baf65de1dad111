"""mrjob's ``compat.jobconf_from_env``: Hadoop job settings a task can read.

mrk8s sets one: the URL of the input file a first-step map task reads, as
``mapreduce.map.input.file`` (``file://`` + path for local files, as mrjob's
local runners give it). Every other name returns ``default``.
"""

from __future__ import annotations

import os

__all__ = ["jobconf_from_env"]

#: Hadoop's old and new names of the same setting.
_SYNONYMS = {
    "mapreduce.map.input.file": ("map.input.file",),
    "map.input.file": ("mapreduce.map.input.file",),
}


def jobconf_from_env(variable: str, default: str | None = None) -> str | None:
    """The value of the job setting ``variable`` in this task, or ``default``."""
    for name in (variable, *_SYNONYMS.get(variable, ())):
        value = os.environ.get(name.replace(".", "_"))
        if value is not None:
            return value
    return default


def set_input_file(url: str | None) -> None:
    """Called by a first-step map task: the input file it reads (None: not a file)."""
    names = ("mapreduce_map_input_file", "map_input_file")
    if url is None:
        for name in names:
            os.environ.pop(name, None)
        return
    uri = url if "://" in url else "file://" + url
    for name in names:
        os.environ[name] = uri
