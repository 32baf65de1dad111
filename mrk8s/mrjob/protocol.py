"""mrjob's protocols: how a job's records become lines of bytes and back.

A protocol has ``read(line: bytes) -> (key, value)`` and ``write(key,
value) -> bytes`` (no newline). A job names three (see
:class:`mrk8s.mrjob.job.MRJob`): ``INPUT_PROTOCOL`` reads input lines,
``INTERNAL_PROTOCOL`` carries records between steps and through the
shuffle, ``OUTPUT_PROTOCOL`` writes the final lines. ``*ValueProtocol``
classes ignore the key (read gives ``None``). These are written for mrk8s
to behave as mrjob 0.7's do on Python 3; JSON is the standard library's.
"""

from __future__ import annotations

import ast
import json
import math
import pickle
from typing import Any

__all__ = [
    "BytesProtocol",
    "BytesValueProtocol",
    "JSONProtocol",
    "JSONValueProtocol",
    "PickleProtocol",
    "PickleValueProtocol",
    "RawProtocol",
    "RawValueProtocol",
    "ReprProtocol",
    "ReprValueProtocol",
    "StandardJSONProtocol",
    "StandardJSONValueProtocol",
    "TextProtocol",
    "TextValueProtocol",
]


def _split(line: bytes, protocol: str) -> tuple[bytes, bytes]:
    key, tab, value = line.partition(b"\t")
    if not tab:
        raise ValueError(
            f"{protocol} cannot read {line[:80]!r}: it has no tab between key and value "
            "(use a *ValueProtocol to read lines without keys)"
        )
    return key, value


class _KeyValueProtocol:
    """``encode(key) TAB encode(value)``; subclasses define ``_loads``/``_dumps``."""

    def _loads(self, data: bytes) -> Any:
        raise NotImplementedError

    def _dumps(self, obj: Any) -> bytes:
        raise NotImplementedError

    def read(self, line: bytes) -> tuple[Any, Any]:
        key, value = _split(line, type(self).__name__)
        return self._loads(key), self._loads(value)

    def write(self, key: Any, value: Any) -> bytes:
        return self._dumps(key) + b"\t" + self._dumps(value)


class StandardJSONProtocol(_KeyValueProtocol):
    """Key and value as JSON, separated by a tab (tuples come back as lists)."""

    def _loads(self, data: bytes) -> Any:
        return json.loads(data)

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()


class StandardJSONValueProtocol:
    """The value as JSON; the key is dropped on write and ``None`` on read."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        return None, json.loads(line)

    def write(self, key: Any, value: Any) -> bytes:
        return json.dumps(value).encode()


JSONProtocol = StandardJSONProtocol
JSONValueProtocol = StandardJSONValueProtocol


class BytesProtocol:
    """Key and value as raw bytes, tab-separated; a ``None`` part and its tab are left out."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        key, tab, value = line.partition(b"\t")
        return key, (value if tab else None)

    def write(self, key: Any, value: Any) -> bytes:
        return b"\t".join(x for x in (key, value) if x is not None)


class BytesValueProtocol:
    """The whole line as bytes; the key is ``None``."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        return None, line

    def write(self, key: Any, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"BytesValueProtocol writes bytes, got {type(value).__name__}")
        return value


def _decode(data: bytes) -> str:
    """UTF-8, or latin-1 when the bytes are not UTF-8 (as mrjob's text protocols)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class TextProtocol:
    """Key and value as text (UTF-8), tab-separated; a ``None`` part is left out."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        key, tab, value = _decode(line).partition("\t")
        return key, (value if tab else None)

    def write(self, key: Any, value: Any) -> bytes:
        return b"\t".join(x.encode() for x in (key, value) if x is not None)


class TextValueProtocol:
    """The whole line as text (UTF-8, else latin-1); the key is ``None``.

    The default ``INPUT_PROTOCOL``: the mapper gets ``(None, line)``.
    """

    def read(self, line: bytes) -> tuple[Any, Any]:
        return None, _decode(line)

    def write(self, key: Any, value: Any) -> bytes:
        return bytes(value.encode())


RawProtocol = TextProtocol
RawValueProtocol = TextValueProtocol


class PickleProtocol(_KeyValueProtocol):
    """Key and value pickled, with bytes escaped so the line has no tab or newline."""

    def _loads(self, data: bytes) -> Any:
        return pickle.loads(data.decode("unicode_escape").encode("latin-1"))

    def _dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj).decode("latin-1").encode("unicode_escape")


class PickleValueProtocol:
    """The value pickled and escaped; the key is ``None``."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        return None, PickleProtocol()._loads(line)

    def write(self, key: Any, value: Any) -> bytes:
        return PickleProtocol()._dumps(value)


#: Names a repr may use beyond literals (sets, infinities), and nothing else.
_SAFE_NAMES = {
    "set": set,
    "frozenset": frozenset,
    "range": range,
    "inf": math.inf,
    "nan": math.nan,
    "True": True,
    "False": False,
    "None": None,
}


def safe_eval(text: str) -> Any:
    """Evaluate a ``repr()`` of basic values: literals, ``set()``, ``frozenset()``."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        # Calls such as set() or frozenset({1}): no builtins, only the names above.
        return eval(text, {"__builtins__": {}}, dict(_SAFE_NAMES))


class ReprProtocol(_KeyValueProtocol):
    """Key and value as ``repr()``, read back with a restricted eval."""

    def _loads(self, data: bytes) -> Any:
        return safe_eval(data.decode())

    def _dumps(self, obj: Any) -> bytes:
        return repr(obj).encode()


class ReprValueProtocol:
    """The value as ``repr()``; the key is ``None``."""

    def read(self, line: bytes) -> tuple[Any, Any]:
        return None, safe_eval(line.decode())

    def write(self, key: Any, value: Any) -> bytes:
        return repr(value).encode()
