"""A hash-shuffle reducer's pieces when its segments live in several stores (as on Ray).

A reducer on Ray reads its own node's map outputs from disk and the others'
through their shuffle servers: its segments are in several stores, and it
reads a few pieces (bucket ranges) at a time, each map output's adjacent
streams of those pieces in one range (``mrk8s.tasks.run._read_pieces``).
Here the "other node" is an fsspec memory store, which is not local; no Ray
is needed. Every piece must hold exactly its own buckets' rows, whatever the
grouping.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mrk8s.tasks import run
from shuffle import mapfile
from shuffle.store import FsspecStore

PARTITIONS = 2
BUCKETS = 4
RUNS = 2


def _map_outputs(local: FsspecStore, remote: FsspecStore, tmp_path: Path) -> tuple[Any, Any]:
    """Four map outputs of two spilled runs each, two on ``local`` and two on ``remote``;
    the located segments of partition 1, and its rows by bucket as written."""
    rng = random.Random(22)
    located: run.Segments = []
    written: dict[int, collections.Counter[tuple[int, bytes]]] = collections.defaultdict(
        collections.Counter
    )
    for m in range(4):
        writer = mapfile.MapOutputWriter(spill_dir=str(tmp_path / "spill"))
        for _run in range(RUNS):
            streams = {}
            for p in range(PARTITIONS):
                for b in range(BUCKETS):
                    keys = [rng.randrange(1 << 40) for _ in range(50 + 10 * b)]
                    values = [rng.randbytes(40) for _ in keys]
                    streams[p * BUCKETS + b] = pa.table({"key": keys, "v": values})
                    if p == 1:
                        written[b].update(zip(keys, values, strict=True))
            writer.add_run(streams, buckets=BUCKETS)
        path = f"map-{m}.arrow"
        index = writer.finish(local, path)
        store = local
        if m % 2:  # this map task ran on "another node"
            with open(local.local_path(path) or "", "rb") as f:
                remote.fs.pipe(remote.url(path), f.read())
            store = remote
        located.append((store, path, index[1]))
    return located, written


def _rows(runs: list[Any]) -> collections.Counter[tuple[int, bytes]]:
    return collections.Counter(
        (k, v)
        for r in runs
        for batch in r
        for k, v in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
    )


@pytest.mark.parametrize("budget", [0, 1 << 20])
def test_pieces_read_together_hold_exactly_their_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    local = FsspecStore(str(tmp_path / "node-a"))
    remote = FsspecStore(f"memory://ray-pieces-{budget}")
    located, written = _map_outputs(local, remote, tmp_path)
    # One bucket a piece, as a partition larger than the piece share is cut.
    pieces = [
        [(st, p, [r for r in refs if r.bucket == b]) for st, p, refs in located]
        for b in range(BUCKETS)
    ]
    calls: list[int] = []
    real = mapfile.read_segments

    def counted(store: FsspecStore, segments: Any, **options: Any) -> Any:
        calls.append(sum(len(refs) for _, refs in segments))
        return real(store, segments, **options)

    monkeypatch.setattr(mapfile, "read_segments", counted)
    got = [_rows(runs) for runs in run._read_pieces(pieces, budget=budget)]
    assert got == [written[b] for b in range(BUCKETS)]
    # Two stores: with no budget a call per store and piece; with one, the four
    # small pieces in one batch, a call per store.
    assert len(calls) == (2 * BUCKETS if budget == 0 else 2)
    assert sum(calls) == len(located) * RUNS * BUCKETS
