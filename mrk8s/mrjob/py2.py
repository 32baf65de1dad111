"""mrjob's ``py2``: the Python 2/3 text helpers mrjob jobs import, for Python 3.

``mr_phone_to_url.py`` takes ``urlparse`` from here and
``mr_text_classifier.py`` takes ``to_unicode``; the rest is what mrjob
0.7.4's ``mrjob.py2`` defines on Python 3, so a job that imports any of it
runs unchanged.
"""

from __future__ import annotations

from io import StringIO
from urllib.parse import ParseResult, urljoin, urlparse
from urllib.request import pathname2url, urlopen

__all__ = [
    "PY2",
    "ParseResult",
    "StringIO",
    "integer_types",
    "pathname2url",
    "string_types",
    "to_unicode",
    "urljoin",
    "urlopen",
    "urlparse",
    "xrange",
]

PY2 = False
string_types = (str,)
integer_types = (int,)
xrange = range


def to_unicode(s: bytes | str) -> str:
    """``s`` as text: bytes are decoded as UTF-8, or latin-1 if they are not UTF-8."""
    if isinstance(s, bytes):
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            return s.decode("latin-1")
    if isinstance(s, str):
        return s
    raise TypeError(f"to_unicode() takes bytes or str, not {type(s).__name__}")
