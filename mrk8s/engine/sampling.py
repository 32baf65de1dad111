"""Key sampling for range partitioning (TeraSort-style).

Called by the driver before a step whose job sets ``PARTITIONER = "range"``.
It runs the step's map side (``mapper`` or ``map_batch``; no init/final hooks,
no combiner) over the first records of evenly chosen splits, and returns the
generic encodings (see :mod:`shuffle.codec`) of the keys it saw, from which
the driver computes the boundaries every map task then uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from mrk8s.errors import UserCodeError
from mrk8s.io import inputs
from mrk8s.io.outputs import read_stream_file, table_records
from mrk8s.io.split import Split
from mrk8s.job import Step, as_records
from shuffle import codec
from shuffle.store import FsspecStore

#: Splits read for a sample at most; spread over the input.
MAX_SAMPLED_SPLITS = 32


def _records(split: Split, storage_options: Mapping[str, Any]) -> Any:
    if split.format == "shuffle":
        store = FsspecStore(split.url, storage_options)
        with store.open_read("") as f:
            for table in read_stream_file(f):
                yield from zip(*table_records(table), strict=True)
    else:
        for value in inputs.read_records(split, storage_options):
            yield None, value


def _tables(split: Split, storage_options: Mapping[str, Any]) -> Any:
    if split.format == "shuffle":
        store = FsspecStore(split.url, storage_options)
        with store.open_read("") as f:
            yield from read_stream_file(f)
    else:
        yield from inputs.read_tables(split, storage_options)


def sample_keys(
    step: Step, splits: Sequence[Split], storage_options: Mapping[str, Any], limit: int
) -> list[bytes]:
    if not splits:
        return []
    stride = max(1, len(splits) // MAX_SAMPLED_SPLITS)
    chosen = list(splits)[::stride][:MAX_SAMPLED_SPLITS]
    per_split = max(1, limit // len(chosen))
    out: list[bytes] = []
    try:
        for split in chosen:
            if step.map_batch is not None:
                got = 0
                for table in _tables(split, storage_options):
                    result = step.map_batch(table.slice(0, per_split - got))
                    keys = codec.generic_key_array(
                        result.column(codec.KEY), codec.table_key_encoding(result.schema)
                    )
                    out.extend(keys.to_pylist())
                    got += table.num_rows
                    if got >= per_split:
                        break
            else:
                records = itertools.islice(_records(split, storage_options), per_split)
                for key, value in records:
                    if step.mapper is None:
                        out.append(codec.encode_key(key))
                        continue
                    for pair in as_records(step.mapper(key, value), what="mapper"):
                        out.append(codec.encode_key(pair[0]))
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(
            f"sampling keys for the range partitioner failed: the map function raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return out
