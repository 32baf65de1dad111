"""Commit records: the proof that a task finished, and where its data is.

Called by every task (to commit) and by the driver and the reducers (to find
committed map outputs and to resume). A record is a small JSON file at
``{job_dir}/commits/s{step}-{stage}-{index:05d}.json``, written last and
atomically through the store. A task with a record is done; readers trust
only committed attempts, so a worker killed halfway leaves garbage but never
a wrong answer. This module knows stages by name, not what they compute.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any, NewType

import numpy as np
import numpy.typing as npt

from shuffle.mapfile import PartitionIndex, StreamRef, index_from_json, index_to_json
from shuffle.store import FsspecStore

TaskIndex = NewType("TaskIndex", int)

COMMITS_DIR = "commits"


@dataclass(frozen=True, slots=True)
class Record:
    """What one task attempt committed.

    ``data_path`` is relative to the job directory (a map output, or a
    reducer's part file); ``index`` is the map output's partition index
    (empty for reducers); ``partition_bytes`` maps a partition to the bytes
    this task holds of it (placement input); ``node`` is where the data lives.
    """

    step: int
    stage: str
    index: TaskIndex
    attempt: int
    node: str
    data_path: str
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    peak_rss: int = 0
    spills: int = 0
    recomputed: int = 0  # damaged map outputs this reducer had re-run
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    index_json: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def partition_index(self) -> PartitionIndex:
        return index_from_json(self.index_json)

    def partition_refs(self, partition: int) -> list[StreamRef]:
        """The streams of one partition (parses only that partition's entry)."""
        return [StreamRef.from_json(r) for r in self.index_json.get(str(partition), ())]

    def partition_bytes(self) -> dict[int, int]:
        return {p: sum(r.length for r in refs) for p, refs in self.partition_index.items()}

    def to_json(self) -> dict[str, Any]:
        """The fields as they are: every one is plain JSON data already.

        Not ``dataclasses.asdict``, which deep-copies the index: a map task of
        a 256-reducer hash shuffle spent 9-11% of its time there (py-spy, the
        issue-25 run at 32 GiB), copying a few thousand lists it then dumped.
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        data["index"] = TaskIndex(int(data["index"]))
        return cls(**data)

    @classmethod
    def with_index(cls, partition_index: PartitionIndex, **fields: Any) -> Record:
        return cls(index_json=index_to_json(partition_index), **fields)


def record_path(step: int, stage: str, index: int) -> str:
    return f"{COMMITS_DIR}/s{step}-{stage}-{index:05d}.json"


def write(job_store: FsspecStore, record: Record) -> None:
    """Commit: publish the record atomically (the last thing a task does)."""
    path = record_path(record.step, record.stage, int(record.index))
    job_store.write_bytes(path, json.dumps(record.to_json(), sort_keys=True).encode())


def read(
    job_store: FsspecStore, step: int, stage: str, index: int, *, partition: int | None = None
) -> Record | None:
    """The committed record of a task, or None if it has not committed.

    With ``partition``, the record's index holds that partition's streams only
    (see :func:`decode`).
    """
    path = record_path(step, stage, index)
    try:
        data = job_store.read_bytes(path)
    except FileNotFoundError:
        return None
    return decode(data, partition)


#: Where the index begins (empty, or a partition's list of streams) and what follows it.
_INDEX_START = re.compile(rb'"index_json": (?=\{\}|\{"\d+": \[\[)')
_AFTER_INDEX = b', "node": '


def decode(data: bytes, partition: int | None = None) -> Record:
    """A record from the JSON :func:`write` made; with ``partition``, keeping that
    partition's streams only, and decoding no others.

    A reducer needs one partition of every map output's index, and a map
    record of an R-reducer hash shuffle lists about 4R streams per spill: each
    of R reducers decoding all M records whole is M x R x 4R lists. At 256 x
    256 that was 57% of the reduce stage (py-spy, issue 25), and the decoded
    records held a reducer's memory for the whole task. :func:`write` sorts
    the keys, so the index is followed by ``"node"`` and the last dict before
    it is the counters, whose values are integers, never lists; a quote inside
    a string is escaped: so the patterns searched for below occur nowhere but
    where they are meant. A record not laid out so is decoded whole.
    """
    if partition is not None:
        found = _INDEX_START.search(data)
        end = data.rfind(_AFTER_INDEX)
        body = found.end() if found else -1
        if 0 <= body < end and data[end - 1 : end] == b"}":
            head = json.loads(data[:body] + b"{}" + data[end:])
            entry = f'"{partition}": '.encode()
            at = data.find(b"{" + entry, body, body + 1 + len(entry))
            if at < 0:
                at = data.find(b", " + entry, body, end)
            if at >= 0:
                first = data.index(b"[[", at, end)
                last = data.index(b"]]", first, end) + 2
                head["index_json"] = {str(partition): json.loads(data[first:last])}
            return Record.from_json(head)
    record = Record.from_json(json.loads(data))
    if partition is None:
        return record
    kept = {k: v for k, v in record.index_json.items() if k == str(partition)}
    return replace(record, index_json=kept)


FAILURES_DIR = f"{COMMITS_DIR}/failures"


def write_failure(
    job_store: FsspecStore, step: int, stage: str, index: int, attempt: int, error: dict[str, Any]
) -> None:
    """Record that an attempt failed (for ``mrk8s status``); never read to decide anything."""
    path = f"{FAILURES_DIR}/s{step}-{stage}-{index:05d}-a{attempt}.json"
    job_store.write_bytes(path, json.dumps(error, sort_keys=True).encode())


def failures(job_store: FsspecStore) -> list[dict[str, Any]]:
    """Every recorded failed attempt: step, stage, index, attempt and the error."""
    out = []
    for name in job_store.list(FAILURES_DIR):
        if not name.endswith(".json"):
            continue
        step_s, stage, index_s, attempt_s = name[: -len(".json")].split("-")
        error = json.loads(job_store.read_bytes(f"{FAILURES_DIR}/{name}"))
        out.append(
            {
                "step": int(step_s[1:]),
                "stage": stage,
                "index": int(index_s),
                "attempt": int(attempt_s[1:]),
                "error": error,
            }
        )
    return out


def committed_indexes(job_store: FsspecStore, step: int, stage: str) -> set[int]:
    """Task indexes of a stage that have a commit record (one listing, no reads)."""
    prefix = f"s{step}-{stage}-"
    out: set[int] = set()
    for name in job_store.list(COMMITS_DIR):
        if name.startswith(prefix) and name.endswith(".json"):
            out.add(int(name[len(prefix) : -len(".json")]))
    return out


def read_stage(
    job_store: FsspecStore, step: int, stage: str, num_tasks: int, *, partition: int | None = None
) -> list[Record]:
    """Every record of a stage, in task order; raises if one is missing.

    With ``partition``, each record's index holds that partition's streams only,
    and it has no counters (see :func:`partition_streams`).
    """
    if partition is not None:
        return [
            replace(head, index_json={str(partition): [r.to_json() for r in refs]} if refs else {})
            for head, refs in partition_streams(job_store, step, stage, num_tasks, partition)
        ]
    return _read_all(job_store, step, stage, num_tasks, None)


def partition_streams(
    job_store: FsspecStore, step: int, stage: str, num_tasks: int, partition: int
) -> list[tuple[Record, list[StreamRef]]]:
    """Every record of a stage, in task order, without its index and its counters
    (:func:`_head`), and its streams of ``partition``: what a reducer needs. From
    :data:`STAGES` (each record decoded once in this process) where the store
    allows; raises if a record is missing."""
    cached = STAGES.partition(job_store, step, stage, num_tasks, partition)
    if cached is not None:
        return cached
    return [
        (_head(record), record.partition_refs(partition))
        for record in _read_all(job_store, step, stage, num_tasks, partition)
    ]


def _head(record: Record) -> Record:
    """``record`` without its index and its counters. A reducer uses neither, and a
    process keeps a stage's heads (:class:`StageCache`): the counters of a map task
    that counts per partition grow with the reducers. Those of ``mrk8s bench
    shuffle`` (three per partition) held its reducers at 140 MB against 133 (peak
    anonymous memory, 4 GiB, 256 x 256)."""
    return replace(record, index_json={}, counters={})


#: Records of a stage read at once from an object store (each read is a round trip).
READS_IN_FLIGHT = 16


def _read_all(
    job_store: FsspecStore, step: int, stage: str, num_tasks: int, partition: int | None
) -> list[Record]:
    """Every record of a stage, in task order; raises if one is missing."""
    return list(_read_many(job_store, step, stage, range(num_tasks), partition))


def _read_many(
    job_store: FsspecStore,
    step: int,
    stage: str,
    indexes: Sequence[int],
    partition: int | None,
) -> Iterator[Record]:
    """The records of tasks ``indexes``, in that order, as they are read; raises
    naming the first missing one. On a store that is not a local directory the
    reads go out together, :data:`READS_IN_FLIGHT` at a time ahead of the caller:
    one request's latency each, not one after another, and no more records read
    and held than that. (A caller that keeps less than the whole record should
    take each as it comes: 256 records of 1024 streams each, held whole at once,
    raised a reducer's peak memory by 76 MB.)"""

    def one(i: int) -> Record:
        record = read(job_store, step, stage, i, partition=partition)
        if record is None:
            raise _missing(job_store, step, stage, i)
        return record

    if len(indexes) < 2 or job_store.local_path(COMMITS_DIR) is not None:
        yield from map(one, indexes)
        return
    with ThreadPoolExecutor(min(READS_IN_FLIGHT, len(indexes)), "commit-read") as pool:
        ahead: deque[Future[Record]] = deque()
        for i in indexes:
            ahead.append(pool.submit(one, i))
            if len(ahead) >= READS_IN_FLIGHT:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _missing(job_store: FsspecStore, step: int, stage: str, index: int) -> FileNotFoundError:
    return FileNotFoundError(
        f"task {index} of step {step} stage {stage} has no commit record in "
        f"{job_store.url(COMMITS_DIR)}"
    )


# -- a stage's records, decoded once per process -----------------------------------


def _ref_dtype(rows: list[tuple[int, int, int, int, int]]) -> np.dtype[Any]:
    """The narrowest record of a cached index's streams that holds ``rows``:
    (offset, length, rows, checksum, bucket), 21 bytes a stream when the file
    is under 4 GiB (at 256 maps x 1024 streams, 5.5 MB a stage)."""

    def unsigned(values: Any, small: str, large: str) -> str:
        return small if max(values, default=0) < 1 << (8 * int(small[-1])) else large

    return np.dtype(
        [
            ("offset", unsigned((r[0] + r[1] for r in rows), "<u4", "<u8")),
            ("length", unsigned((r[1] for r in rows), "<u4", "<u8")),
            ("rows", unsigned((r[2] for r in rows), "<u4", "<u8")),
            ("checksum", "<u8"),
            ("bucket", unsigned((r[4] for r in rows), "<u1", "<u2")),
        ]
    )


@dataclass(frozen=True, slots=True)
class _Decoded:
    """One record as the cache keeps it: the identity of the file it was read from
    (see :func:`_identities`), the record without its index and counters, and the index as
    arrays: ``refs[bounds[p]:bounds[p + 1]]`` are the streams of partition ``p``."""

    identity: tuple[Any, ...]
    head: Record
    bounds: npt.NDArray[np.int64]
    refs: npt.NDArray[Any]

    @classmethod
    def of(cls, identity: tuple[Any, ...], record: Record) -> _Decoded:
        parts = sorted((int(p), refs) for p, refs in record.index_json.items())
        rows = [
            (r[0], r[1], r[2], r[3], r[4] if len(r) > 4 else 0) for _, refs in parts for r in refs
        ]
        counts = np.zeros(parts[-1][0] + 1 if parts else 0, dtype=np.int64)
        for p, refs in parts:
            counts[p] = len(refs)
        return cls(
            identity,
            _head(record),
            np.concatenate([[0], np.cumsum(counts)]),
            np.array(rows, dtype=_ref_dtype(rows)),
        )

    @property
    def nbytes(self) -> int:
        return int(self.bounds.nbytes + self.refs.nbytes) + 1024

    def streams(self, partition: int) -> list[StreamRef]:
        if partition + 1 >= len(self.bounds):
            return []
        chosen = self.refs[self.bounds[partition] : self.bounds[partition + 1]]
        return [StreamRef(*row) for row in chosen.tolist()]


class StageCache:
    """The commit records of a stage, each decoded once per process.

    A reducer needs one partition of every map task's record. Read and decoded
    per reduce task that is maps x reducers reads and decodes in a stage (9% of
    the reduce stage at 256 x 256, issue 25); here each worker process reads a
    record once, keeps its index as arrays, and gives every later reduce task
    its partition from them.

    A record is served only while its file is the one decoded: every call lists
    the stage's commit directory once (one listing instead of a read per
    record) and compares each record's identity (the file's inode, size and
    times on local disk, its ETag on an object store) with the one decoded; a
    record written since (a map task re-run after its output was damaged or its
    node lost, or by a resumed job) is read again. A store whose listing gives
    no such identity (memory://, Arrow's S3 client) is read per task as before.
    At most ``max_stages`` stages and ``max_bytes`` of decoded indexes are
    kept, the least recently used dropped first; a larger stage is not kept.
    """

    def __init__(self, max_stages: int = 2, max_bytes: int = 32 << 20) -> None:
        self.max_stages = max_stages
        self.max_bytes = max_bytes
        self._stages: OrderedDict[tuple[str, int, str], dict[int, _Decoded]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # records read and decoded (a test and a benchmark count them)

    def clear(self) -> None:
        with self._lock:
            self._stages.clear()

    def partition(
        self, job_store: FsspecStore, step: int, stage: str, num_tasks: int, partition: int
    ) -> list[tuple[Record, list[StreamRef]]] | None:
        """Every record of the stage (without its index) and its streams of
        ``partition``; None when the store gives no file identities."""
        identities = _identities(job_store)
        if identities is None:
            return None
        key = (job_store.url(COMMITS_DIR), step, stage)
        with self._lock:
            known = dict(self._stages.get(key, {}))
        decoded: dict[int, _Decoded] = {}
        listed: dict[int, tuple[Any, ...]] = {}
        for i in range(num_tasks):
            identity = identities.get(record_path(step, stage, i)[len(COMMITS_DIR) + 1 :])
            if identity is None:
                raise _missing(job_store, step, stage, i)
            entry = known.get(i)
            if entry is None or entry.identity != identity:
                listed[i] = identity  # new or replaced since decoded: read again
            else:
                decoded[i] = entry
        fresh = _read_many(job_store, step, stage, list(listed), None)
        for (i, identity), record in zip(listed.items(), fresh, strict=True):
            decoded[i] = _Decoded.of(identity, record)  # each record compacted as it comes
        self.reads += len(listed)
        if sum(e.nbytes for e in decoded.values()) <= self.max_bytes:
            with self._lock:
                self._stages[key] = decoded
                self._stages.move_to_end(key)
                while len(self._stages) > self.max_stages or (
                    len(self._stages) > 1
                    and sum(e.nbytes for d in self._stages.values() for e in d.values())
                    > self.max_bytes
                ):
                    self._stages.popitem(last=False)
        return [(decoded[i].head, decoded[i].streams(partition)) for i in range(num_tasks)]


def _identities(job_store: FsspecStore) -> dict[str, tuple[Any, ...]] | None:
    """Name -> identity of every commit record, from one listing; None if the store
    tells nothing that changes when a file is replaced."""
    local = job_store.local_path(COMMITS_DIR)
    if local is not None:
        out: dict[str, tuple[Any, ...]] = {}
        try:
            entries = os.scandir(local)
        except FileNotFoundError:
            return {}
        with entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    st = entry.stat(follow_symlinks=False)
                    # A record is replaced by a rename: a new inode and change time.
                    out[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return out
    try:
        listing = job_store.fs.ls(job_store.url(COMMITS_DIR), detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for info in listing:
        name = str(info.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(".json"):
            continue
        # Only a stamp of the content will do: a modification time of whole seconds
        # (S3's LastModified) or microseconds (memory://) can repeat.
        stamp = info.get("ETag") or info.get("etag")
        if not stamp:
            return None
        out[name] = (info.get("size"), str(stamp))
    return out


#: The stage cache of this process (see :func:`read_stage`).
STAGES = StageCache()
