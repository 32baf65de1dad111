"""User inputs: list them, cut them into splits, and read one split.

The driver calls :func:`list_inputs` and :func:`plan_splits` while planning a
job (step 2 of DESIGN.md's "life of a job"); the resulting :class:`Split` s go
into the plan. A map task calls :func:`read_records` (record API: one Python
value per record) or :func:`read_tables` (columnar API: bounded Arrow tables)
on the split it was given; :func:`read_lines` is the text hot path under both.

Every byte is read through fsspec, so a local path, ``file://`` and ``s3://``
behave alike; ``storage_options`` are passed to
``fsspec.core.url_to_fs(url, **storage_options)``.

Line ownership for ``text``/``jsonl`` byte-range splits: a split
``[start, end)`` owns every line whose first byte lies in ``[start, end)``.
A split starting inside a line leaves that line to the previous split; its own
last line may run past ``end``. So the splits of a file, read one after
another, give every line exactly once, whatever the cut points.

This module knows nothing of jobs, steps, shuffles or backends; it produces
and consumes :class:`mrk8s.tasks.plan.Split` only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import posixpath
import re
import traceback
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from mrk8s.errors import InputError
from mrk8s.io.split import Split
from shuffle.store import url_to_fs

__all__ = [
    "FORMATS",
    "InputFile",
    "ReadStats",
    "infer_format",
    "list_inputs",
    "plan_splits",
    "read_lines",
    "read_records",
    "read_tables",
]

logger = logging.getLogger(__name__)

#: The input formats a user file can have (``Split.format`` adds ``shuffle``).
FORMATS = ("text", "jsonl", "csv", "parquet", "arrow")

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2"}

#: Formats cut into byte ranges at line boundaries (when not compressed).
_LINE_FORMATS = ("text", "jsonl")

#: Once a byte-range reader is past ``end`` it only needs the rest of one line;
#: read that in small pieces so a tiny split does not fetch ``chunk_bytes`` more.
_TAIL_READ_BYTES = 64 * 2**10

#: Characters that make a path a glob for fsspec.
_GLOB_CHARS = frozenset("*?[")

#: A pyarrow ``string`` array holds at most 2 GiB of characters.
_MAX_STRING_BYTES = 2**31 - 1

#: Quoted fields may hold newlines, as the csv module allows.
_CSV_PARSE = pa_csv.ParseOptions(newlines_in_values=True)

_MISSING_HINT = "check the path, or quote a glob so the shell does not expand it"


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file found by :func:`list_inputs`.

    ``url`` can be opened again with the same storage options: an absolute
    path for a local file, ``protocol://...`` otherwise. ``size`` is the size
    in bytes as stored (compressed size for a compressed file), or -1 when the
    filesystem does not say. ``format`` is one of :data:`FORMATS`;
    ``compression`` is ``gzip``, ``bz2`` or None.
    """

    url: str
    size: int
    format: str
    compression: str | None = None


@dataclass(slots=True)
class ReadStats:
    """What reading a split noticed about its bytes, for the task's counters.

    ``invalid_utf8_bytes``: bytes of text or jsonl input that are not valid
    UTF-8; each run of them reaches the job as one U+FFFD, as Python's
    ``errors="replace"`` decodes it, and the count says how much was replaced.
    """

    invalid_utf8_bytes: int = 0


# --------------------------------------------------------------------- listing


def infer_format(name: str, format: str | None = None) -> tuple[str, str | None]:
    """The ``(format, compression)`` of a file, from its name alone.

    ``x.jsonl.gz`` is gzip-compressed jsonl; a name with no known extension is
    text. Raises :class:`InputError` for a compressed Parquet or Arrow file,
    which cannot be read without first decompressing the whole file. A
    ``format`` given is the file's format whatever its name (mrjob jobs read
    every file as text lines); only the compression then comes from the name.
    """
    base = posixpath.basename(name.rstrip("/")).lower()
    compression = None
    stem, ext = posixpath.splitext(base)
    if ext in _COMPRESSIONS:
        compression = _COMPRESSIONS[ext]
        stem, ext = posixpath.splitext(stem)
    fmt = format or _EXTENSIONS.get(ext, "text")
    if compression is not None and fmt in ("parquet", "arrow"):
        raise InputError(
            f"input {name!r} is a {compression}-compressed {fmt} file, which mrk8s cannot "
            f"read: decompress it ({fmt} files compress their data internally)"
        )
    return fmt, compression


def list_inputs(
    paths: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    format: str | None = None,
) -> list[InputFile]:
    """Expand input paths into the files they name, in order.

    Each file's format comes from its name (:func:`infer_format`), or is
    ``format`` for every file when that is given.

    Each path is a file, a directory (every file below it, recursively, sorted;
    names starting with ``_`` or ``.`` such as ``_SUCCESS`` are skipped at any
    depth) or a glob (``*``, ``?``, ``[``; matched directories are expanded the
    same way). A path that names no file raises :class:`InputError`. A file
    named twice is listed twice, as Hadoop does.
    """
    if isinstance(paths, str):
        # A bare string would be iterated character by character.
        paths = [paths]
    files: list[InputFile] = []
    for path in paths:
        files.extend(_list_one(path, storage_options, format))
    return files


def _list_one(
    url: str, storage_options: Mapping[str, Any] | None, format: str | None
) -> list[InputFile]:
    fs, path = _url_to_fs(url, storage_options)
    try:
        info = _info_or_none(fs, path)
        if info is not None and info.get("type") != "directory":
            return [_input_file(fs, path, info, format)]
        if info is not None:
            found = _files_below(fs, path)
            if not found:
                raise InputError(
                    f"input directory {url!r} contains no files (names starting with '_' or "
                    "'.' are skipped): check the path, or give the files themselves"
                )
            return [_input_file(fs, p, i, format) for p, i in found]
        if _GLOB_CHARS.isdisjoint(path):
            raise InputError(f"input {url!r} does not exist: {_MISSING_HINT}")
        found = _glob(fs, path)
        if not found:
            raise InputError(
                f"input glob {url!r} matches no file (names starting with '_' or '.' are "
                "skipped): check the pattern"
            )
        return [_input_file(fs, p, i, format) for p, i in found]
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot list input {url!r}: {exc}") from exc


def _url_to_fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    try:
        # fsspec's, or Arrow's S3 client in a worker (shuffle.s3native).
        fs, path = url_to_fs(url, storage_options or {})
    except (ImportError, ValueError) as exc:
        # An unknown protocol, or a known one whose package is missing; fsspec's
        # message already names the package to install.
        raise InputError(f"cannot open input {url!r}: {exc}") from exc
    return fs, str(path)


def _info_or_none(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        return None
    return info


def _is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _files_below(fs: Any, root: str) -> list[tuple[str, dict[str, Any]]]:
    root = root.rstrip("/")
    found: dict[str, dict[str, Any]] = fs.find(root, withdirs=False, detail=True)
    kept = []
    for path, info in found.items():
        # Hidden anywhere below the root, e.g. Spark's _temporary/ or .crc files.
        relative = path[len(root) :].strip("/") if path.startswith(root) else path
        if not any(_is_hidden(part) for part in relative.split("/")):
            kept.append((path, info))
    return sorted(kept)


def _glob(fs: Any, pattern: str) -> list[tuple[str, dict[str, Any]]]:
    matches: dict[str, dict[str, Any]] = fs.glob(pattern, detail=True)
    # A pattern that itself asks for hidden names (".*", "_SUCCESS") gets them.
    wants_hidden = _is_hidden(posixpath.basename(pattern.rstrip("/")))
    found: list[tuple[str, dict[str, Any]]] = []
    for path, info in sorted(matches.items()):
        if not wants_hidden and _is_hidden(posixpath.basename(path.rstrip("/"))):
            continue
        if info.get("type") == "directory":
            found.extend(_files_below(fs, path))
        else:
            found.append((path, info))
    return found


def _canonical_url(fs: Any, path: str) -> str:
    if isinstance(fs, LocalFileSystem):
        return posixpath.normpath(path)
    url: str = fs.unstrip_protocol(path)
    return url


def _input_file(
    fs: Any, path: str, info: Mapping[str, Any], format: str | None = None
) -> InputFile:
    fmt, compression = infer_format(path, format)
    size = info.get("size")
    return InputFile(
        url=_canonical_url(fs, path),
        size=int(size) if size is not None else -1,
        format=fmt,
        compression=compression,
    )


# -------------------------------------------------------------------- planning


def fingerprint(
    files: Sequence[InputFile], storage_options: Mapping[str, Any] | None = None
) -> str:
    """A cheap content fingerprint of the inputs: sha256 over URL, size and fsspec ukey.

    ``ukey`` is the filesystem's own change token (modification time and size
    locally, the ETag on S3), so no input is read to compute it.
    """
    import hashlib
    import json

    parts = []
    for f in files:
        fs, path = _url_to_fs(f.url, storage_options)
        try:
            ukey = str(fs.ukey(path))
        except (OSError, NotImplementedError, KeyError):
            ukey = ""
        parts.append([f.url, f.size, ukey])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def plan_splits(
    files: Sequence[InputFile],
    *,
    target_splits: int,
    max_split_bytes: int = 128 * 2**20,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Split]:
    """Cut input files into splits, one map task each, in file order.

    Uncompressed text and jsonl become byte ranges and Parquet becomes runs of
    consecutive row groups, both sized
    ``max(1, min(max_split_bytes, ceil(splittable_bytes / target_splits)))``
    where ``splittable_bytes`` adds the text/jsonl file sizes and the Parquet
    row groups' uncompressed sizes; so a small input still gives about
    ``target_splits`` splits. A Parquet row group is never divided. Compressed
    files, CSV and Arrow files are one whole-file split each. Empty files give
    no split; no files give no splits.
    """
    if target_splits < 1:
        raise ValueError(f"target_splits must be >= 1, got {target_splits}")
    if max_split_bytes < 1:
        raise ValueError(f"max_split_bytes must be >= 1, got {max_split_bytes}")
    row_groups = {
        f.url: _row_group_sizes(f, storage_options) for f in files if f.format == "parquet"
    }
    splittable = sum(f.size for f in files if _is_byte_splittable(f) and f.size > 0) + sum(
        uncompressed for groups in row_groups.values() for uncompressed, _ in groups
    )
    split_bytes = max(1, min(max_split_bytes, math.ceil(splittable / target_splits)))

    splits: list[Split] = []
    for f in files:
        if f.format == "parquet":
            splits.extend(_parquet_splits(f.url, row_groups[f.url], split_bytes))
        elif f.size == 0:
            continue
        elif _is_byte_splittable(f) and f.size > 0:
            for start in range(0, f.size, split_bytes):
                end = min(start + split_bytes, f.size)
                splits.append(Split(f.url, f.format, start, end, None, end - start))
        else:
            splits.append(Split(f.url, f.format, 0, -1, f.compression, max(f.size, 0)))
    return splits


def _is_byte_splittable(f: InputFile) -> bool:
    return f.format in _LINE_FORMATS and f.compression is None


def _row_group_sizes(
    f: InputFile, storage_options: Mapping[str, Any] | None
) -> list[tuple[int, int]]:
    """``(uncompressed, stored)`` bytes of each row group of a Parquet file."""
    fs, path = _url_to_fs(f.url, storage_options)
    try:
        with fs.open(path, "rb") as raw:
            meta = pq.read_metadata(raw)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"cannot read the Parquet footer of input {f.url!r}: {exc}; check that it is "
            "a complete Parquet file, or rename it if it is not Parquet"
        ) from exc
    sizes = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stored = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        sizes.append((group.total_byte_size, stored))
    return sizes


def _parquet_splits(url: str, groups: list[tuple[int, int]], split_bytes: int) -> list[Split]:
    splits = []
    first, run_bytes, run_stored = 0, 0, 0
    for i, (uncompressed, stored) in enumerate(groups):
        if i > first and run_bytes + uncompressed > split_bytes:
            splits.append(Split(url, "parquet", first, i, None, run_stored))
            first, run_bytes, run_stored = i, 0, 0
        run_bytes += uncompressed
        run_stored += stored
    if groups:
        splits.append(Split(url, "parquet", first, len(groups), None, run_stored))
    return splits


# --------------------------------------------------------------------- reading


def _open(split: Split, storage_options: Mapping[str, Any] | None) -> IO[bytes]:
    fs, path = _url_to_fs(split.url, storage_options)
    try:
        f: IO[bytes] = fs.open(path, "rb", compression=split.compression)
    except FileNotFoundError as exc:
        raise InputError(
            f"input {split.url!r} disappeared after the job was planned: restore it, "
            "or run the job again"
        ) from exc
    return f


#: Where the standard library's decompressors raise (a damaged or truncated file).
_DECOMPRESSOR_FILES = ("gzip.py", "bz2.py", "_compression.py")


@contextlib.contextmanager
def _decompressing(split: Split) -> Iterator[None]:
    """A compressed input that does not decompress is the user's to fix.

    gzip and bz2 raise ``EOFError`` for a truncated file and ``OSError`` or
    ``zlib.error`` for damaged data; without this, a map task would fail with
    an internal error and be retried to no avail. Only errors raised by the
    decompressor itself are translated: a failing read of the store
    underneath stays what it is (retryable).
    """
    if split.compression is None:
        yield
        return
    try:
        yield
    except (EOFError, OSError, zlib.error) as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        if not frames or os.path.basename(frames[-1].filename) not in _DECOMPRESSOR_FILES:
            raise
        raise InputError(
            f"input {split.url!r} is not a valid {split.compression} file ({exc}): it is "
            f"truncated or damaged; compress or download it again, or leave it out of the "
            "inputs",
            split=split.describe(),
        ) from exc


def _owned_blocks(
    split: Split, storage_options: Mapping[str, Any] | None, chunk_bytes: int
) -> Iterator[bytes]:
    """The bytes of the lines a text split owns, in blocks of whole lines.

    Every block ends with ``b"\\n"`` (one is added after a file's final
    unterminated line) and holds at most about ``chunk_bytes`` plus one line.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    if split.format == "parquet":
        # Its start/end are row-group numbers, not byte offsets.
        raise ValueError(f"cannot read {split.describe()} as lines: it is a parquet split")
    whole = split.end < 0
    end = math.inf if whole else split.end
    # A split starting at s > 0 reads from s - 1: if that byte is a newline,
    # the line at s is ours; otherwise we are mid-line and skip through the
    # first newline (that line belongs to the previous split).
    skipping = not whole and split.start > 0
    read_pos = split.start - 1 if skipping else (0 if whole else split.start)
    line_start = read_pos  # file offset of the first byte of `pending`
    pending: list[bytes] = []  # the start of a line whose newline is not read yet
    with _decompressing(split), _open(split, storage_options) as f:
        if read_pos > 0:
            f.seek(read_pos)
        while True:
            if not skipping and line_start >= end:
                return
            if whole or read_pos >= end:
                want = chunk_bytes if whole else min(chunk_bytes, _TAIL_READ_BYTES)
            else:
                want = min(chunk_bytes, max(int(end) - read_pos, _TAIL_READ_BYTES))
            data = f.read(want)
            if not data:
                if pending and not skipping:
                    pending.append(b"\n")
                    yield b"".join(pending)
                return
            data_pos, read_pos = read_pos, read_pos + len(data)
            if skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    # No newline before end - 1: no line starts inside the split.
                    if read_pos >= end - 1:
                        return
                    continue
                skipping = False
                line_start = data_pos + nl + 1
                data = data[nl + 1 :]
                if line_start >= end:
                    return
            nl = data.rfind(b"\n")
            if nl < 0:
                if data:
                    pending.append(data)
                continue
            if pending:
                pending.append(data[: nl + 1])
                block = b"".join(pending)
            else:
                block = data[: nl + 1]
            pending = [data[nl + 1 :]] if nl + 1 < len(data) else []
            limit = end - line_start
            if limit < len(block):
                # The line holding byte end - 1 is our last one: cut after its newline.
                yield block[: block.find(b"\n", int(limit) - 1) + 1]
                return
            yield block
            line_start += len(block)


#: What ``surrogateescape`` makes of each byte that is not valid UTF-8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _decode_lines(block: bytes, stats: ReadStats | None = None) -> str:
    """A block of whole lines as text, each line ending in ``"\\n"`` without its ``"\\r"``.

    Bytes that are not valid UTF-8 are replaced (U+FFFD) and counted in ``stats``.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("utf-8", "replace")
        if stats is not None:
            escaped = block.decode("utf-8", "surrogateescape")
            stats.invalid_utf8_bytes += len(_ESCAPED_BYTE.findall(escaped))
    if "\r" in text:
        # Removes exactly one "\r" before each "\n": "a\r\r\n" keeps one.
        text = text.replace("\r\n", "\n")
    return text


def _split_lines(block: bytes, stats: ReadStats | None = None) -> list[str]:
    lines = _decode_lines(block, stats).split("\n")
    lines.pop()  # the empty string after the block's final newline
    return lines


def read_lines(
    split: Split,
    storage_options: Mapping[str, Any] | None = None,
    *,
    chunk_bytes: int = 2**20,
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """The lines of a ``text`` or ``jsonl`` split, without ``"\\n"`` or one trailing ``"\\r"``.

    Lines are split on ``"\\n"`` only and decoded as UTF-8, replacing bad
    bytes (counted in ``stats``, when given). A final line without a newline
    is a line; a file ending in a newline has no empty last line. The file is
    read ``chunk_bytes`` at a time, so memory is bounded by the chunk size
    plus the longest line.
    """
    # chain over lists iterates in C: about twice as fast per short line as a
    # generator that yields each line (this is the word-count hot path).
    blocks = _owned_blocks(split, storage_options, chunk_bytes)
    if stats is None:
        return itertools.chain.from_iterable(map(_split_lines, blocks))
    return itertools.chain.from_iterable(_split_lines(block, stats) for block in blocks)


def read_records(
    split: Split,
    storage_options: Mapping[str, Any] | None = None,
    stats: ReadStats | None = None,
) -> Iterator[object]:
    """The records a record-API mapper gets, one Python value each.

    text: the line (str). jsonl: the parsed JSON value of each non-blank line.
    csv: a dict per row mapping header to the field's text, as
    :class:`csv.DictReader` gives it. parquet and arrow: a dict per row of
    Python values.
    """
    if split.format == "text":
        return read_lines(split, storage_options, stats=stats)
    if split.format == "jsonl":
        return _jsonl_records(split, storage_options, stats)
    if split.format == "csv":
        return _csv_records(split, storage_options)
    if split.format in ("parquet", "arrow"):
        tables = read_tables(split, storage_options)
        return itertools.chain.from_iterable(t.to_pylist() for t in tables)
    raise _unknown_format(split)


def _jsonl_records(
    split: Split, storage_options: Mapping[str, Any] | None, stats: ReadStats | None = None
) -> Iterator[object]:
    loads = json.loads
    for number, line in enumerate(read_lines(split, storage_options, stats=stats), 1):
        try:
            yield loads(line)
        except json.JSONDecodeError as exc:
            if not line.strip():
                continue  # blank lines are allowed, as pyarrow.json allows them
            snippet = line if len(line) <= 80 else line[:77] + "..."
            raise InputError(
                f"line {number} of {split.describe()} is not valid JSON ({exc.msg}): "
                f"{snippet!r}; fix the line, or name the file .txt to read it as text",
                split=split.describe(),
            ) from exc


def _csv_records(split: Split, storage_options: Mapping[str, Any] | None) -> Iterator[object]:
    # Parsed by pyarrow in batches (fast), but every column is read as text so
    # a row is what csv.DictReader would give, and no column can fail to convert.
    with _decompressing(split), _open(split, storage_options) as f:
        try:
            names = pa_csv.open_csv(f, parse_options=_CSV_PARSE).schema.names
        except pa.ArrowInvalid as exc:
            raise _csv_error(split, exc) from exc
    convert = pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    for batch in _csv_batches(split, storage_options, convert):
        yield from batch.to_pylist()


def _csv_batches(
    split: Split,
    storage_options: Mapping[str, Any] | None,
    convert: pa_csv.ConvertOptions | None = None,
) -> Iterator[pa.RecordBatch]:
    with _decompressing(split), _open(split, storage_options) as f:
        try:
            yield from pa_csv.open_csv(f, parse_options=_CSV_PARSE, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise _csv_error(split, exc) from exc


def _csv_error(split: Split, exc: Exception) -> InputError:
    return InputError(
        f"cannot parse CSV input {split.describe()}: {exc}; every row needs the header's "
        "number of fields, and (columnar API) a column's type is inferred from the file's "
        "first block, so its values must not change type later on",
        split=split.describe(),
    )


def read_tables(
    split: Split,
    storage_options: Mapping[str, Any] | None = None,
    *,
    batch_rows: int = 65536,
    chunk_bytes: int = 8 * 2**20,
    stats: ReadStats | None = None,
) -> Iterator[pa.Table]:
    """The tables a columnar ``map_batch`` gets, each of at most ``batch_rows`` rows.

    text: one string column ``line``, the same lines as :func:`read_lines`.
    jsonl: pyarrow.json's parse of each block of lines (``chunk_bytes``); the
    schema is inferred per block. csv: pyarrow.csv's streaming reader, with
    types inferred from the first block. parquet: the split's row groups.
    arrow: the record batches of an IPC file or stream. Nothing reads a whole
    large file at once.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if split.format == "text":
        tables: Iterator[pa.Table] = _text_tables(split, storage_options, chunk_bytes, stats)
    elif split.format == "jsonl":
        tables = _jsonl_tables(split, storage_options, chunk_bytes)
    elif split.format == "csv":
        tables = (pa.Table.from_batches([b]) for b in _csv_batches(split, storage_options))
    elif split.format == "parquet":
        tables = _parquet_tables(split, storage_options, batch_rows)
    elif split.format == "arrow":
        tables = _arrow_tables(split, storage_options)
    else:
        raise _unknown_format(split)
    for table in tables:
        for offset in range(0, table.num_rows, batch_rows):
            yield table.slice(offset, batch_rows)


def _text_tables(
    split: Split,
    storage_options: Mapping[str, Any] | None,
    chunk_bytes: int,
    stats: ReadStats | None = None,
) -> Iterator[pa.Table]:
    for block in _owned_blocks(split, storage_options, chunk_bytes):
        kind = pa.string() if len(block) <= _MAX_STRING_BYTES else pa.large_string()
        whole = _utf8_array(block, kind)
        if whole is None:  # bad UTF-8 (to replace) or "\r\n" line ends: Python decodes
            whole = pa.array([_decode_lines(block, stats)], kind)
        # Split in C++; the trailing empty string after the final "\n" is dropped.
        parts = pc.split_pattern(whole, "\n").flatten()
        lines = parts.slice(0, len(parts) - 1)
        yield pa.table({"line": lines.cast(pa.string())})


def _utf8_array(block: bytes, kind: pa.DataType) -> pa.Array | None:
    """``block`` as a one-string Arrow array without a copy through Python's str,
    if it is valid UTF-8 with no "\r" (else None)."""
    if b"\r" in block:
        return None
    width = np.int64 if kind == pa.large_string() else np.int32
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=width))
    array = pa.Array.from_buffers(kind, 1, [None, offsets, pa.py_buffer(block)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return array


def _jsonl_tables(
    split: Split, storage_options: Mapping[str, Any] | None, chunk_bytes: int
) -> Iterator[pa.Table]:
    for block in _owned_blocks(split, storage_options, chunk_bytes):
        try:
            # One block is whole lines, so pyarrow sees complete JSON documents.
            table = pa_json.read_json(
                pa.BufferReader(block), read_options=pa_json.ReadOptions(block_size=len(block))
            )
        except pa.ArrowInvalid as exc:
            raise InputError(
                f"cannot parse JSON lines input {split.describe()}: {exc}; fix the bad "
                "line (the record API names it), or name the file .txt to read it as text",
                split=split.describe(),
            ) from exc
        if table.num_rows:
            yield table


def _parquet_tables(
    split: Split, storage_options: Mapping[str, Any] | None, batch_rows: int
) -> Iterator[pa.Table]:
    with _open(split, storage_options) as f:
        try:
            parquet = pq.ParquetFile(f)
            end = parquet.num_row_groups if split.end < 0 else split.end
            groups = list(range(split.start, end))
            if not groups:
                return
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups):
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"cannot read Parquet input {split.describe()}: {exc}; check that the file "
                "is complete and was not changed after the job was planned",
                split=split.describe(),
            ) from exc


def _arrow_tables(split: Split, storage_options: Mapping[str, Any] | None) -> Iterator[pa.Table]:
    with _open(split, storage_options) as f:
        try:
            try:
                reader = pa_ipc.open_file(f)
            except pa.ArrowInvalid:
                # Not the random-access file format: try the streaming format.
                f.seek(0)
                stream = pa_ipc.open_stream(f)
                for batch in stream:
                    yield pa.Table.from_batches([batch])
                return
            for i in range(reader.num_record_batches):
                yield pa.Table.from_batches([reader.get_batch(i)])
        except pa.ArrowInvalid as exc:
            raise InputError(
                f"cannot read Arrow input {split.describe()}: {exc}; an .arrow/.feather/.ipc "
                "input must be an Arrow IPC file or stream (Feather v2)",
                split=split.describe(),
            ) from exc


def _unknown_format(split: Split) -> InputError:
    return InputError(
        f"split {split.describe()} has format {split.format!r}, which is not an input "
        f"format ({', '.join(FORMATS)})",
        split=split.describe(),
    )
