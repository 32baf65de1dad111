"""Ranged reads through the shuffle server against reading the same file locally.

A reduce stage's reads without the engine: one file of ``--size-mib`` MiB of
random bytes (left in the page cache: this measures what the server and the
client add, not the disk), cut into segments of ``--segment-kib`` KiB; every
segment is read once as one range, ``--in-flight`` at a time (a reducer's
``mapfile.read_segments`` fetches 8 map outputs at once), and each range's
bytes are checked against the file's. Contestants, in the same run and
alternated round by round:

- ``local``: :class:`shuffle.store.FsspecStore` on the directory
  (``read_range``, one ``pread`` per range), what a reducer does for its own
  node's map outputs;
- ``mrk8s-http``: :mod:`shuffle.httpfs` (``http.client``, pooled keep-alive
  connections, 4 MiB pieces) against ``mrk8s shuffle-server`` running as its
  own process with a bearer token, as on a node;
- ``mrk8s-http-buffer``: the same, through ``read_buffer`` (each piece read
  straight into one Arrow buffer), what a reducer's ``view_range`` calls;
- ``fsspec-http``: fsspec's own HTTP filesystem (aiohttp) against the same
  server, when aiohttp is installed (the ``bench`` extra brings it).

Each configuration runs ``--repeat`` times; the medians (wall seconds, and
CPU seconds of the client process and of the server process) go in one JSON
object per contestant and segment size on stdout, and all of them in
``--json`` (default: ``bench/results/shuffle_server.json``).

    python -m bench.shuffle_server [--size-mib 512] [--segment-kib 256,4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xxhash

from shuffle import httpfs
from shuffle.store import FsspecStore

TOKEN = "bench-token"

Reader = Callable[[int, int], Any]  # bytes, or an Arrow buffer


def _write(path: str, size: int) -> bytes:
    """A file of ``size`` random bytes (and the bytes, to check reads against)."""
    rng = random.Random(0)
    data = b"".join(rng.randbytes(min(16 << 20, size - o)) for o in range(0, size, 16 << 20))
    with open(path, "wb") as f:
        f.write(data)
    return data


def _start_server(root: str, token_file: str) -> tuple[subprocess.Popen[bytes], str]:
    log = os.path.join(os.path.dirname(token_file), "server.log")
    command = [sys.executable, "-m", "mrk8s.cli", "shuffle-server", "--root", root]
    with open(log, "w") as out:  # the server keeps its own descriptor
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0", "--token-file", token_file],
            stdout=out,
            stderr=out,
        )
    text = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log) as f:
            text = f.read()
        if "listening on " in text:
            return proc, text.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the shuffle server did not start: {text}")


def _readers(root: str, name: str, url: str) -> dict[str, Reader]:
    local = FsspecStore(root)
    ours = httpfs.ShuffleServerFileSystem({"node": url}, token=TOKEN, skip_instance_cache=True)
    readers: dict[str, Reader] = {
        "local": lambda start, end: local.read_range(name, start, end - start),
        "mrk8s-http": lambda start, end: ours.cat_file(f"node/{name}", start, end),
        "mrk8s-http-buffer": lambda start, end: ours.read_buffer(f"node/{name}", start, end),
    }
    try:
        from fsspec.implementations.http import HTTPFileSystem

        theirs = HTTPFileSystem(
            skip_instance_cache=True,
            headers={"Authorization": f"Bearer {TOKEN}"},
            client_kwargs={},
        )
        readers["fsspec-http"] = lambda start, end: theirs.cat_file(url + name, start, end)
    except ImportError:
        print("fsspec-http skipped: aiohttp is not installed", file=sys.stderr)
    return readers


def _cpu(pid: int) -> float:
    """CPU seconds (user + kernel) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_pass(
    read: Reader, segments: dict[tuple[int, int], int], in_flight: int, server: int
) -> tuple[float, float, float]:
    """Seconds to read every segment, ``in_flight`` at a time, each checked against its
    digest; and the CPU seconds this process and the server's used meanwhile."""

    def check(segment: tuple[int, int]) -> bool:
        start, end = segment
        return xxhash.xxh3_64_intdigest(read(start, end)) == segments[segment]

    started, client0, server0 = time.perf_counter(), _cpu(os.getpid()), _cpu(server)
    with ThreadPoolExecutor(in_flight) as pool:
        ok = all(pool.map(check, list(segments)))
    seconds = time.perf_counter() - started
    client, served = _cpu(os.getpid()) - client0, _cpu(server) - server0
    if not ok:
        raise SystemExit("a range read through the contestant differs from the file's bytes")
    return seconds, client, served


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--segment-kib", default="256,4096", help="segment sizes, comma-separated")
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="where to write the file (default: a temporary directory)")
    p.add_argument("--json", default="bench/results/shuffle_server.json")
    args = p.parse_args(argv)
    size = args.size_mib << 20
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as top:
        root = os.path.join(top, "root")
        name = "job/s0/map-00000-a1.arrow"
        os.makedirs(os.path.join(root, "job/s0"))
        path = os.path.join(root, name)
        data = _write(path, size)
        token_file = os.path.join(top, "secret", "token")  # outside the served root
        os.makedirs(os.path.dirname(token_file))
        with open(token_file, "w") as f:
            f.write(TOKEN)
        server, url = _start_server(root, token_file)
        try:
            readers = _readers(root, name, url)
            for kib in (int(k) for k in args.segment_kib.split(",")):
                seg = kib << 10
                segments = {
                    (s, min(size, s + seg)): xxhash.xxh3_64_intdigest(data[s : s + seg])
                    for s in range(0, size, seg)
                }
                warm = dict(list(segments.items())[: args.in_flight * 2])
                times: dict[str, list[tuple[float, float, float]]] = {c: [] for c in readers}
                for read in readers.values():  # warm-up: connections, threads
                    _one_pass(read, warm, args.in_flight, server.pid)
                for _ in range(args.repeat):  # alternated, round by round
                    for contestant, read in readers.items():
                        times[contestant].append(
                            _one_pass(read, segments, args.in_flight, server.pid)
                        )
                for contestant, passes in times.items():
                    seconds = [t for t, _, _ in passes]
                    median = statistics.median(seconds)
                    row = {
                        "contestant": contestant,
                        "bytes": size,
                        "segment_bytes": seg,
                        "segments": len(segments),
                        "in_flight": args.in_flight,
                        "seconds": [round(s, 4) for s in seconds],
                        "median_seconds": round(median, 4),
                        "median_mb_per_s": round(size / median / 1e6, 1),
                        # CPU seconds of the client (this process: the checksums
                        # included) and of the server, medians over the passes.
                        "median_client_cpu": round(statistics.median(c for _, c, _ in passes), 3),
                        "median_server_cpu": round(statistics.median(s for _, _, s in passes), 3),
                        "verified": True,
                        "load_average": round(os.getloadavg()[0], 2),
                    }
                    print(json.dumps(row), flush=True)
                    results.append(row)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            command = " ".join(["python -m bench.shuffle_server", *(argv or sys.argv[1:])])
            json.dump({"command": command, "results": results}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
