"""Writing results: reducers' part files, and the job's atomic output commit.

Called by reduce tasks (and map tasks of map-only steps) through
:class:`PartWriter`, and by the driver through :func:`check_output` before a
job starts and :func:`commit_output` after every reducer has committed.
Parts are written to a staging directory; the output path receives them
only when the whole job succeeded, ``_SUCCESS`` last, so nothing partial is
ever visible there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrk8s.errors import OutputError, ResultEncodingError
from shuffle import codec
from shuffle.store import FsspecStore, translate_errors

logger = logging.getLogger(__name__)

FORMATS = ("text", "jsonl", "parquet")
_SUFFIX = {"text": "", "jsonl": ".jsonl", "parquet": ".parquet", "shuffle": ".arrow"}


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}{_SUFFIX[fmt]}"


def _json_default(obj: object) -> object:
    """What the JSON encoder calls for a type it does not know: always an error.

    A set is not written as a list: JSON has no sets, and a list would come
    back as a list (``json.dumps`` refuses a set too). Tuples need no help:
    the encoder writes them as lists, as ``json.dumps`` does.
    """
    if isinstance(obj, bytes):
        raise TypeError(
            "bytes cannot be written as JSON text: yield str (e.g. value.hex()) or use "
            "--output-format parquet"
        )
    if isinstance(obj, set | frozenset):
        raise TypeError(
            f"{type(obj).__name__} values cannot be written as JSON (JSON has no sets): yield "
            "a list, e.g. sorted(the_set)"
        )
    raise TypeError(
        f"{type(obj).__name__} values cannot be written as JSON: yield str, int, float, "
        "bool, None, or lists and dicts of them"
    )


# One encoder for every record: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=False)
_dumps = _ENCODER.encode


#: str -> its JSON string literal, in C (what _dumps does for a str, without its checks).
_json_str: Callable[[str], str] = json.encoder.encode_basestring


def _text_lines(keys: list[Any], values: list[Any]) -> str:
    """``json TAB json`` lines; str keys with int values (a count) take a fast path."""
    kinds = set(map(type, values))
    if kinds <= {int, str} and set(map(type, keys)) == {str}:
        texts = map(str, values) if kinds == {int} else map(_dumps, values)
        return "".join(map("{}\t{}\n".format, map(_json_str, keys), texts))
    return "".join(f"{_dumps(k)}\t{_dumps(v)}\n" for k, v in zip(keys, values, strict=True))


#: What JSON escapes in a string (ensure_ascii=False): quote, backslash, controls.
_JSON_ESCAPED = r'["\\\x00-\x1f]'


def _arrow_text_lines(table: pa.Table) -> pa.Buffer | bytes | None:
    """``json TAB json`` lines of a (string key, integer value) table, built by Arrow.

    The columnar API's common result (a word and its count) written without a
    Python object per row; None for any other table, or when a key needs JSON
    escaping, which the general path handles.
    """
    if table.column_names != [codec.KEY, codec.VALUE] or table.schema.metadata:
        return None
    key, value = table.column(0), table.column(1)
    if not (pa.types.is_string(key.type) or pa.types.is_large_string(key.type)):
        return None
    if not pa.types.is_integer(value.type) or key.null_count or value.null_count:
        return None
    if pc.any(pc.match_substring_regex(key, _JSON_ESCAPED)).as_py():
        return None
    kind = key.type
    lines = pc.binary_join_element_wise(
        pa.scalar('"', kind),
        key,
        pa.scalar('"\t', kind),
        pc.cast(value, kind),
        pa.scalar("\n", kind),
        pa.scalar("", kind),
    ).combine_chunks()
    offsets, data = lines.buffers()[1], lines.buffers()[2]
    if data is None:
        return b""
    width = 8 if pa.types.is_large_string(lines.type) else 4
    start = int.from_bytes(offsets[lines.offset * width : lines.offset * width + width], "little")
    end_at = (lines.offset + len(lines)) * width
    end = int.from_bytes(offsets[end_at : end_at + width], "little")
    return data.slice(start, end - start)


def table_values(table: pa.Table) -> list[Any]:
    """The record values of a table: its value column, or its other column(s)."""
    rest = [n for n in table.column_names if n != codec.KEY]
    if rest == [codec.VALUE]:
        venc = codec.table_value_encoding(table.schema)
        return codec.decode_values(table.column(codec.VALUE).combine_chunks(), venc)
    if len(rest) == 1:
        return list(table.column(rest[0]).to_pylist())
    return list(table.select(rest).to_pylist())


def table_records(table: pa.Table) -> tuple[list[Any], list[Any]]:
    """(keys, values) of a table with a key column; values are the other column(s)."""
    enc = codec.table_key_encoding(table.schema)
    keys = codec.decode_keys(table.column(codec.KEY).combine_chunks(), enc)
    return keys, table_values(table)


class PartWriter:
    """Writes one part file through a temporary name; ``close()`` publishes it.

    ``fmt`` is ``text`` (``json(key) TAB json(value)`` lines), ``jsonl``
    (``{"key": .., "value": ..}`` lines), ``parquet``, or ``shuffle`` (Arrow
    IPC with the codec's key/value columns, read by the next step's mappers).
    ``line_writer``, for ``text`` only, formats each record as its line
    instead (:meth:`mrk8s.MapReduce.text_line_writer`).
    """

    def __init__(
        self,
        store: FsspecStore,
        path: str,
        fmt: str,
        line_writer: Callable[[Any, Any], bytes | str] | None = None,
    ) -> None:
        self.store = store
        self.path = path
        self.fmt = fmt
        self.line_writer = line_writer if fmt == "text" else None
        self.records = 0
        self._ctx = store.open_write(path)
        self._file: IO[bytes] = self._ctx.__enter__()
        self._arrow: Any = None  # ParquetWriter or RecordBatchFileWriter, opened lazily
        self._schema: pa.Schema | None = None

    # -- records ---------------------------------------------------------------

    def add_records(self, keys: list[Any], values: list[Any]) -> None:
        with translate_errors(self.store.url(self.path), "write"):
            self._add_records(keys, values)

    def _add_records(self, keys: list[Any], values: list[Any]) -> None:
        if not keys:
            return
        self.records += len(keys)
        if self.line_writer is not None:
            write = self.line_writer
            try:
                lines = [write(k, v) for k, v in zip(keys, values, strict=True)]
            except (TypeError, ValueError) as exc:
                raise self._unwritable(keys, values, exc) from exc
            self._file.write(b"".join(_as_line(x) for x in lines))
        elif self.fmt == "text":
            try:
                text = _text_lines(keys, values)
            except (TypeError, ValueError) as exc:
                raise self._unwritable(keys, values, exc) from exc
            self._file.write(text.encode())
        elif self.fmt == "jsonl":
            try:
                text = "".join(
                    _dumps({"key": k, "value": v}) + "\n" for k, v in zip(keys, values, strict=True)
                )
            except (TypeError, ValueError) as exc:
                raise self._unwritable(keys, values, exc) from exc
            self._file.write(text.encode())
        elif self.fmt == "parquet":
            try:
                table = _records_to_plain_table(keys, values)
            except (TypeError, ValueError) as exc:
                raise self._unwritable(keys, values, exc) from exc
            self._write_arrow(table)
        else:
            self._write_arrow(codec.records_to_table(keys, values))

    def _unwritable(self, keys: list[Any], values: list[Any], exc: Exception) -> OutputError:
        """The error for a chunk that failed to encode, naming its first bad record."""
        how = "by the job's OUTPUT_PROTOCOL" if self.line_writer else f"as {self.fmt}"
        for key, value in zip(keys, values, strict=True):
            found = self._encoding_error(key, value)
            if found is not None:
                part, error = found
                subject = "the key" if part == "key" else f"the {part} of key"
                return ResultEncodingError(
                    f"{subject} {_short(key)} cannot be written {how} to output part "
                    f"{self.path}: {error}"
                )
        return ResultEncodingError(f"a result cannot be written {how} to {self.path}: {exc}")

    def _encoding_error(self, key: Any, value: Any) -> tuple[str, Exception] | None:
        """Which part of one record does not encode (``key``, ``value``, ``result``), and why."""
        if self.line_writer is not None:
            try:
                self.line_writer(key, value)
            except (TypeError, ValueError) as exc:
                return "result", exc
            return None
        for part, obj in (("key", key), ("value", value)):
            try:
                _dumps(obj)
            except (TypeError, ValueError) as exc:
                return part, exc
        return None

    def add_table(self, table: pa.Table) -> None:
        with translate_errors(self.store.url(self.path), "write"):
            self._add_table(table)

    def _add_table(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.fmt == "text" and self.line_writer is None:
            lines = _arrow_text_lines(table)
            if lines is not None:
                self.records += table.num_rows
                self._file.write(lines)
                return
        if self.fmt in ("text", "jsonl"):
            keys, values = table_records(table)
            self._add_records(keys, values)
            return
        self.records += table.num_rows
        self._write_arrow(table)

    def _write_arrow(self, table: pa.Table) -> None:
        if self.fmt == "shuffle":
            # A step's intermediate output is a sequence of IPC streams: a new stream
            # starts whenever the key/value encoding changes between chunks.
            if self._arrow is None or table.schema != self._schema:
                if self._arrow is not None:
                    self._arrow.close()
                self._schema = table.schema
                self._arrow = pa.ipc.new_stream(self._file, table.schema)
            self._arrow.write_table(table)
            return
        if self._arrow is None:
            self._schema = table.schema
            self._arrow = pq.ParquetWriter(self._file, table.schema)
        assert self._schema is not None
        if table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise OutputError(
                    f"results change type within one output file ({table.schema} vs "
                    f"{self._schema}): make every reducer output the same columns and types"
                ) from exc
        self._arrow.write_table(table)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> int:
        """Publish the file; returns its size in bytes."""
        with translate_errors(self.store.url(self.path), "write"):
            return self._close()

    def _close(self) -> int:
        if self._arrow is not None:
            self._arrow.close()
        size = self._file.tell()
        self._ctx.__exit__(None, None, None)
        return size

    def abort(self) -> None:
        """Drop the temporary file: nothing appears at the part's path."""
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _short(obj: object, limit: int = 60) -> str:
    """``repr(obj)``, cut to about ``limit`` characters for an error message."""
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_line(line: bytes | str) -> bytes:
    return (line.encode() if isinstance(line, str) else bytes(line)) + b"\n"


def _records_to_plain_table(keys: list[Any], values: list[Any]) -> pa.Table:
    """Key/value columns with Arrow's own type inference (for Parquet output)."""
    columns = {}
    for name, items in (("key", keys), ("value", values)):
        try:
            columns[name] = pa.array(items)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array([_dumps(x) for x in items], pa.string())
    return pa.table(columns)


# -- the job's output directory ----------------------------------------------


def output_store(url: str, storage_options: Mapping[str, Any]) -> FsspecStore:
    return FsspecStore(url, storage_options)


def check_output(url: str, storage_options: Mapping[str, Any], *, overwrite: bool) -> None:
    """Refuse a non-empty output location unless ``overwrite``; fail early if unwritable."""
    store = output_store(url, storage_options)
    try:
        entries = store.list("")
    except NotADirectoryError:
        entries = ["(a file)"]
    if store.is_local and os.path.isfile(store.root):
        raise OutputError(f"output {url} is an existing file: give a directory path for -o")
    if entries and not overwrite:
        raise OutputError(
            f"output directory {url} is not empty ({len(entries)} entries): choose another "
            "--output, remove it, or pass --overwrite to replace it"
        )


def commit_output(
    staging: FsspecStore,
    parts: Sequence[str],
    url: str,
    storage_options: Mapping[str, Any],
    summary: Mapping[str, Any],
) -> None:
    """Move the staged ``parts`` to ``url``, then write summary.json and ``_SUCCESS`` last.

    Every part must be staged: a missing one means a reducer's commit outlived
    its output, and committing would lose data, so nothing at ``url`` changes.
    """
    present = set(staging.list(""))
    missing = [p for p in parts if p not in present]
    if missing:
        raise OutputError(
            f"{len(missing)} output part(s) are missing from {staging.root_url} (e.g. "
            f"{missing[0]}): the output at {url} was left unchanged; rerun the job to "
            "produce them again"
        )
    for name in present - set(parts) - {"summary.json"}:
        # Leftovers of killed attempts (temporary names): never part of the output.
        staging.remove(name, recursive=True)
    staging.write_bytes("summary.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    out = output_store(url, storage_options)
    if out.is_local and staging.is_local:
        parent = os.path.dirname(out.root.rstrip("/")) or "."
        os.makedirs(parent, exist_ok=True)
        old = None
        if os.path.exists(out.root):
            old = f"{out.root}.mrk8s-old-{os.getpid()}"
            os.replace(out.root, old)
        os.replace(staging.root, out.root)
        if old is not None:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    else:
        if out.list(""):
            out.remove("", recursive=True)
        for name in [*parts, "summary.json"]:
            with staging.open_read(name) as f:
                out.write_bytes(name, f.read())
        staging.remove("", recursive=True)
    out.write_bytes("_SUCCESS", b"")


def cat_parts(staging: FsspecStore, names: Iterable[str], sink: IO[bytes] | None = None) -> None:
    """Copy text/jsonl parts to stdout in partition order."""
    out = sink if sink is not None else sys.stdout.buffer
    for name in names:
        with staging.open_read(name) as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
    out.flush()


def read_stream_file(f: IO[bytes]) -> Iterable[pa.Table]:
    """The tables of a ``shuffle``-format part: IPC streams back to back until EOF.

    Arrow reads a stream message by message without reading ahead, so after
    one stream's end-of-stream marker the file is positioned at the next.
    """
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    while f.tell() < size:
        for batch in pa.ipc.open_stream(f):
            yield pa.Table.from_batches([batch])
