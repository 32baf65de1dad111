"""What touching memory costs here, warm and cold: the noise under every shuffle number.

    python -m bench.memory_temperature [--size 1GiB] [--waits 0,0.5,1,2,4,8] [--repeat 3]

On a virtual machine whose guest hands free memory back to its host (virtio
balloon free page reporting), the first write to a page the host took back
costs a trip to the host; on bare metal it is an ordinary page fault. A
shuffle writes every byte it moves into the page cache (map outputs) and
allocates about as much again in its processes, so how much of that memory
is "warm" (still the guest's, freed moments ago) or "cold" (reported back)
can decide a run's time more than the code does.

For each wait in ``--waits`` this writes ``--size`` bytes into a fresh file
in ``--dir`` (the page cache; the file is deleted each time) and fills a fresh
anonymous buffer of the same size, each right after the previous write's
memory was freed and the wait has passed, and reports GB/s (median of
``--repeat``). The guest's page-reporting settings are printed when the
kernel has them. One JSON line per wait, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Where a Linux guest with free page reporting shows its settings.
PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")

#: Bytes per write call, about what a map task's region writes are.
CHUNK = 64 << 20


def page_reporting() -> dict[str, str] | None:
    """The kernel's page-reporting parameters, or None if it has none."""
    if not PAGE_REPORTING.is_dir():
        return None
    return {p.name: p.read_text().strip() for p in sorted(PAGE_REPORTING.iterdir())}


def write_file(directory: str, size: int, chunk: bytes) -> float:
    """Seconds to write ``size`` bytes into a new file (page cache, no fsync); deletes it."""
    fd, path = tempfile.mkstemp(prefix="memtemp-", dir=directory)
    try:
        started = time.perf_counter()
        view = memoryview(chunk)  # slices of it are not copies
        with os.fdopen(fd, "wb", buffering=0) as f:
            left = size
            while left > 0:
                left -= f.write(view[: min(left, len(view))])
        return time.perf_counter() - started
    finally:
        os.unlink(path)


def fill_anonymous(size: int) -> float:
    """Seconds to allocate and fill ``size`` bytes of fresh anonymous memory."""
    started = time.perf_counter()
    buf = np.empty(size, dtype=np.uint8)
    buf.fill(1)
    seconds = time.perf_counter() - started
    del buf
    return seconds


def measure(directory: str, size: int, waits: list[float], repeat: int) -> list[dict[str, Any]]:
    chunk = np.random.default_rng(0).bytes(min(CHUNK, size))
    rows = []
    for wait in waits:
        files, anons = [], []
        for _ in range(repeat):
            write_file(directory, size, chunk)  # memory the next write can reuse...
            time.sleep(wait)  # ...if the guest still has it after this long
            files.append(write_file(directory, size, chunk))
            fill_anonymous(size)
            time.sleep(wait)
            anons.append(fill_anonymous(size))
        file_s, anon_s = statistics.median(files), statistics.median(anons)
        rows.append(
            {
                "wait_seconds": wait,
                "bytes": size,
                "page_cache_write_gb_per_s": round(size / file_s / 1e9, 3),
                "anonymous_fill_gb_per_s": round(size / anon_s / 1e9, 3),
                "page_cache_write_seconds": [round(s, 6) for s in files],
                "anonymous_fill_seconds": [round(s, 6) for s in anons],
            }
        )
    return rows


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size
    from mrk8s.errors import UsageError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--waits", default="0,0.5,1,2,4,8", help="comma-separated seconds")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go")
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size, "--size")
    except UsageError as exc:
        p.error(str(exc))
    try:
        waits = [float(w) for w in args.waits.split(",") if w]
    except ValueError:
        p.error(f"--waits must be comma-separated seconds, e.g. 0,1,4; got {args.waits!r}")
    if size <= 0:
        p.error(f"--size must be positive, got {args.size!r}")
    if not waits or min(waits) < 0:
        p.error(f"--waits must name waits of 0 seconds or more, got {args.waits!r}")
    if args.repeat < 1:
        p.error(f"--repeat must be 1 or more, got {args.repeat}")
    rows = measure(args.dir, size, waits, args.repeat)
    for row in rows:
        print(json.dumps(row), flush=True)
    write = [r["page_cache_write_gb_per_s"] for r in rows]
    summary = {
        "summary": "memory_temperature",
        "page_reporting": page_reporting(),
        "warm_over_cold_page_cache_write": round(max(write) / min(write), 2),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
