"""What each fault costs: time to the exact answer, relative to a clean run.

    python -m bench.faults [--size 20MiB] [--repeat 3]

Runs the word count of ``bench/jobs/faulty_wordcount.py`` over a Zipf corpus
on the local backend (2 workers) clean and under each fault, interleaved,
``--repeat`` times; checks every answer against ``collections.Counter``;
prints one JSON line per scenario (median seconds, extra seconds and ratio
over the clean median, what recovered it) and writes them to
``bench/results/faults.jsonl``.

Faults: a worker SIGKILLed mid-map and mid-reduce; the driver SIGKILLed
mid-map and the same command run again; a committed map output truncated or
with flipped bytes before the reduce stage; every 4th request to S3 failing
(503, 500 or a dropped connection) with input, shuffle and output on a
loopback S3 server (moto), against a clean run on the same server.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JOB = HERE / "jobs" / "faulty_wordcount.py"


def _expected(corpus: Path) -> dict[str, int]:
    return dict(collections.Counter(corpus.read_text().split()))


def _read_output(out: Path) -> dict[str, int]:
    got: dict[str, int] = {}
    for part in sorted(out.glob("part-*")):
        for line in part.read_text().splitlines():
            k, _, v = line.partition("\t")
            got[json.loads(k)] = json.loads(v)
    return got


def _settings(work: Path, corpus: Path, **extra: Any) -> Any:
    from mrk8s.engine.settings import RunSettings

    base: dict[str, Any] = {
        "script": str(JOB),
        "inputs": (str(corpus),),
        "output": str(work / "out"),
        "shuffle_dir": str(work / "shuffle"),
        "workers": 2,
        "reducers": 4,
        "max_split_bytes": 2 << 20,
    }
    base.update(extra)
    return RunSettings(**base)


def clean(work: Path, corpus: Path) -> dict[str, int]:
    from mrk8s.engine.driver import Driver

    Driver(_settings(work, corpus)).run()
    return _read_output(work / "out")


def _kill_first(fault_dir: Path, stage: str, stop: threading.Event) -> None:
    while not stop.is_set():
        pids = sorted(fault_dir.glob(f"{stage}-*.pid"))
        if pids:
            (fault_dir / f"killed-{stage}").write_text("")
            try:
                os.kill(int(pids[0].read_text()), signal.SIGKILL)
            except ProcessLookupError:
                continue
            return
        time.sleep(0.01)


def worker_killed(stage: str) -> Callable[[Path, Path], dict[str, int]]:
    def run(work: Path, corpus: Path) -> dict[str, int]:
        from mrk8s.engine.driver import Driver

        fault_dir = work / "faults"
        fault_dir.mkdir()
        os.environ["FAULT_DIR"] = str(fault_dir)
        stop = threading.Event()
        killer = threading.Thread(target=_kill_first, args=(fault_dir, stage, stop))
        killer.start()
        try:
            Driver(_settings(work, corpus)).run()
        finally:
            stop.set()
            killer.join()
            del os.environ["FAULT_DIR"]
        assert (fault_dir / f"killed-{stage}").exists()
        return _read_output(work / "out")

    return run


def driver_killed(work: Path, corpus: Path) -> dict[str, int]:
    cmd = [
        sys.executable, "-m", "mrk8s.cli", "run", str(JOB), str(corpus), "-o", str(work / "out"),
        "--job-id", "faults", "--workers", "2", "--reducers", "4", "--split-size", "2MiB",
        "--shuffle-dir", str(work / "shuffle"), "-q",
    ]  # fmt: skip
    commits = work / "shuffle" / "faults" / "commits"
    driver = subprocess.Popen(cmd, cwd=REPO)
    while len(list(commits.glob("s0-map-*.json"))) < 2:
        if driver.poll() is not None:
            raise RuntimeError("the driver finished before it could be killed")
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    subprocess.run(cmd, cwd=REPO, check=True)
    return _read_output(work / "out")


def map_output_damaged(damage: str) -> Callable[[Path, Path], dict[str, int]]:
    def run(work: Path, corpus: Path) -> dict[str, int]:
        from mrk8s.engine.driver import Driver
        from scheduler.backends.local import LocalExecutor
        from shuffle import commit
        from shuffle.store import FsspecStore

        job_dir = work / "shuffle" / "damaged"

        class Vandal(LocalExecutor):
            done = False

            def run_stage(self, stage: Any, **kw: Any) -> Any:
                if stage.payload["stage"] == "reduce" and not self.done:
                    record = commit.read(FsspecStore(str(job_dir)), 0, "map", 0)
                    assert record is not None
                    path = job_dir / record.data_path
                    data = bytearray(path.read_bytes())
                    if damage == "truncate":
                        data = data[: len(data) // 2]
                    else:
                        data[len(data) // 3] ^= 0xFF
                    path.write_bytes(bytes(data))
                    self.done = True
                return super().run_stage(stage, **kw)

        with Vandal(2) as executor:
            Driver(_settings(work, corpus, job_id="damaged")).run(executor)
        return _read_output(work / "out")

    return run


def s3_run(faulty: bool) -> Callable[[Path, Path], dict[str, int]]:
    def run(work: Path, corpus: Path) -> dict[str, int]:
        import s3fs
        from moto.server import ThreadedMotoServer

        from mrk8s.engine.driver import Driver
        from tests.faultproxy import fault_proxy

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        import logging

        from tests.s3 import _free_port

        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            direct = s3fs.S3FileSystem(
                client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True
            )
            # moto keeps its buckets per process, across servers: one bucket per run.
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            direct.mkdir(bucket)
            direct.put_file(str(corpus), f"{bucket}/in/corpus.txt")
            with fault_proxy(endpoint, every=4 if faulty else 10**9) as (proxy, _):
                options = {"client_kwargs": {"endpoint_url": proxy}}
                settings = _settings(
                    work,
                    corpus,
                    inputs=(f"s3://{bucket}/in/corpus.txt",),
                    shuffle_dir=f"s3://{bucket}/shuffle",
                    storage_options=options,
                )
                Driver(settings).run()
            return _read_output(work / "out")
        finally:
            server.stop()

    return run


RETRY = "local backend replaces the worker, retries the task"
RECOMPUTE = "the reducer re-runs that map task"

SCENARIOS: dict[str, tuple[Callable[[Path, Path], dict[str, int]], str, str]] = {
    "clean": (clean, "", "clean"),
    "worker killed mid-map": (worker_killed("map"), "clean", RETRY),
    "worker killed mid-reduce": (worker_killed("reduce"), "clean", RETRY),
    "driver killed mid-map, rerun": (
        driver_killed,
        "clean",
        "commit records: the rerun skips committed tasks",
    ),
    "map output truncated": (
        map_output_damaged("truncate"),
        "clean",
        f"commit record's length/checksum; {RECOMPUTE}",
    ),
    "map output bytes flipped": (
        map_output_damaged("flip"),
        "clean",
        f"checksum per stream; {RECOMPUTE}",
    ),
    "S3 clean (loopback moto)": (s3_run(False), "", "clean, on S3"),
    "S3: every 4th request fails": (
        s3_run(True),
        "S3 clean (loopback moto)",
        "botocore's retries (503/500/connection errors)",
    ),
}


def main(argv: list[str]) -> int:
    from bench import corpus as gen
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="20MiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", help="comma-separated scenario names")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    corpus = Path(tempfile.gettempdir()) / f"mrk8s-faults-corpus-{args.size}.txt"
    if not corpus.exists():
        gen.generate(str(corpus), parse_size(args.size), vocab=100_000)
    expected = _expected(corpus)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeat):
        for name in names:  # interleaved, so drift on a shared machine hits all alike
            fn = SCENARIOS[name][0]
            with tempfile.TemporaryDirectory(prefix="mrk8s-faults-") as tmp:
                started = time.perf_counter()
                got = fn(Path(tmp), corpus)
                times[name].append(time.perf_counter() - started)
            if got != expected:
                raise SystemExit(
                    f"{name}: WRONG ANSWER ({len(got)} keys, {len(expected)} expected)"
                )
    rows = []
    for name in names:
        _, baseline, how = SCENARIOS[name]
        median = statistics.median(times[name])
        row: dict[str, Any] = {"scenario": name, "median_seconds": round(median, 2),
                               "runs": [round(t, 2) for t in times[name]], "recovered_by": how,
                               "answer": "exact"}  # fmt: skip
        if baseline and baseline in times:
            base = statistics.median(times[baseline])
            row["extra_seconds"] = round(median - base, 2)
            row["ratio_to_clean"] = round(median / base, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = HERE / "results" / "faults.jsonl"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
