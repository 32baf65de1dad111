"""Cold reads of map-output-shaped files through each read-ahead variant.

The reduce stage of a 256 x 256 hash shuffle, without the engine: ``--files``
files of ``--file-mib`` MiB (random bytes), each cut into ``--partitions``
equal segments; a reducer reads its segment of every file in ``--pieces``
pieces (the engine's unsorted reducer reads a range of hash buckets of every
map output per piece), one range per file per piece, checksumming each range
as the reducer does. Two processes run the reducers, as two workers do. The
page cache is dropped for the files (``POSIX_FADV_DONTNEED``) before every
variant, so every byte comes from the disk. One JSON line per variant.

    python -m bench.read_variants --dir DIR [--files 256 --file-mib 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

from shuffle import readahead
from shuffle.mapfile import stream_checksum


def _write_files(directory: str, files: int, file_bytes: int) -> list[str]:
    paths = []
    block = os.urandom(4 << 20)
    for i in range(files):
        path = os.path.join(directory, f"map-{i:05d}.bin")
        paths.append(path)
        if os.path.exists(path) and os.path.getsize(path) == file_bytes:
            continue
        with open(path, "wb") as f:
            for _ in range(file_bytes // len(block)):
                f.write(block)
    return paths


def _drop(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def _reducers(args: tuple[list[str], list[int], int, int, str, int]) -> int:
    paths, reducers, segment, pieces, mode, readers = args
    piece = segment // pieces
    total = 0
    for r in reducers:
        for k in range(pieces):
            ranges = [readahead.Range(p, r * segment + k * piece, piece) for p in paths]
            with readahead.ReadAhead(ranges, mode=mode, readers=readers) as ahead:
                for buf in ahead:
                    stream_checksum(buf)
                    total += buf.size
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--files", type=int, default=256)
    p.add_argument("--file-mib", type=int, default=16)
    p.add_argument("--partitions", type=int, default=32)
    p.add_argument("--pieces", type=int, default=4)
    p.add_argument("--variants", default="mmap,fadvise,pread:2,pread:4,pread:8,pread:16")
    p.add_argument("--keep", action="store_true", help="keep the files (default: delete)")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    paths = _write_files(a.dir, a.files, a.file_mib << 20)
    segment = (a.file_mib << 20) // a.partitions
    try:
        for variant in a.variants.split(","):
            mode, _, readers = variant.partition(":")
            _drop(paths)
            jobs = [
                (paths, list(range(w, a.partitions, 2)), segment, a.pieces, mode, int(readers or 4))
                for w in range(2)
            ]
            started = time.perf_counter()
            with multiprocessing.Pool(2) as pool:
                read = sum(pool.map(_reducers, jobs))
            seconds = time.perf_counter() - started
            line: dict[str, Any] = {
                "variant": variant,
                "range_bytes": segment // a.pieces,
                "bytes": read,
                "seconds": round(seconds, 3),
                "mb_per_s": round(read / seconds / 1e6, 1),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
            print(json.dumps(line), flush=True)
    finally:
        if not a.keep:
            for path in paths:
                os.unlink(path)


if __name__ == "__main__":
    main()
