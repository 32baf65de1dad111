"""Word count of a Zipf corpus: mrk8s (record and columnar API) against its peers, same run.

    python -m bench.compare_wordcount                        # 512 MiB corpus, --repeat 3
    python -m bench.compare_wordcount --size 512MiB --repeat 1
    python -m bench.compare_wordcount --size 128MiB --profile   # py-spy over the two mrk8s jobs

Every contestant counts the same function on the same file: words are split on
whitespace, as Hadoop's WordCount and ``examples/wordcount.py`` do, with no
other change (no lower-casing). The corpus is made by
``bench.corpus.generate(path, size, vocab=1_000_000, seed=0)`` and cached in the
system temp dir (or ``--corpus PATH``). Contestants, run interleaved
``--repeat`` times in a new order each run (``bench.order``), all on 2
cores (``--workers``):

- ``coreutils``: ``tr -s '[:space:]' '\\n' < CORPUS | LC_ALL=C sort | uniq -c``
  (bash, ``pipefail``). GNU sort's defaults already sort on every core
  (``--parallel`` is the CPU count) and spill to temp files as it sees fit;
  no ``-S``/``--parallel`` tuning.
- ``counter``: one process, ``Counter.update(line.split())`` over the
  file read line by line.
- ``pyarrow-vectorised``: a hand-written vectorised count on 2 threads, no
  shuffle: the file is cut into two halves at line ends; each thread memory-maps
  its half, takes 16 MiB blocks (cut at line ends) as one string each,
  splits each with ``mrk8s.text.split_words`` (pure pyarrow and numpy: Arrow's
  whitespace splitter, the ASCII one on plain ASCII, trimmed first so that it
  gives exactly ``str.split()``'s words; the same split the columnar example
  uses), counts per block with a group-by, and sums its blocks' counts; the
  two halves' counts are summed at the end.
- ``mrk8s-record``: ``python -m mrk8s.cli run examples/wordcount.py CORPUS -o OUT
  --workers 2 -q`` (local backend, default reducers and split size, a fresh
  ``--shuffle-dir`` per run).
- ``mrk8s-columnar``: the same with ``examples/wordcount_columnar.py``.
- ``dask-bag``: ``read_text(CORPUS, blocksize=32MiB).str.split()
  .flatten().reduction(Counter, merge_counters).compute()`` on a
  ``LocalCluster`` of 2 worker processes with 1 thread each. Not
  ``.frequencies()``: its per-partition results are plain dicts, which
  distributed serialises key by key between processes; here that made it some
  30x slower than the Counter reduction already at 16 MiB (90 s against 2.7 s).
  It can still be run by name: ``--contestants dask-bag-frequencies``.
- ``ray-data``: ``read_text(CORPUS).map_batches(split_words).groupby("word")
  .count().to_pandas()`` after ``ray.init(num_cpus=2)``; ``split_words`` splits
  the batch's lines in Python (the default batch format), as a record-style
  user writes it.

What ``seconds`` measures: for ``coreutils`` and the two mrk8s jobs, the
wall-clock of the command as its user sees it (process start-up, planning and
worker start-up included; the mrk8s rows also give the job's own ``map_seconds``
and ``reduce_seconds`` from ``summary.json``); for the Python contestants, the
count itself timed inside a fresh interpreter after its imports, with the Dask
cluster's and Ray's start-up reported apart (``startup_seconds``) and not
timed. Every result is checked against the ``counter`` result of the first
round (exact dict equality; the mrk8s part files are parsed as ``json(key) TAB
json(value)`` lines); ``counter`` itself is checked by agreeing with the others.
A failed check adds ``differences`` (up to 5 words: [expected, got]). (Results
committed before the example trimmed each line, at 16 and 64 MiB, show
``mrk8s-columnar`` with one empty word: that corpus's last line ends in a
space.) ``other_cpu_seconds`` is
the CPU time the machine spent during a run outside the run's own processes
(those it waited for): a busy neighbour on a shared machine shows there; for
``ray-data`` it also holds Ray's own daemons and workers, which are not.

Prints one JSON line per run, then one with the medians and the ratios the
issue asks for (the record API must beat ``coreutils`` and ``counter``; the
columnar API must be at least 3x faster than the record API and within 1.25x of
``pyarrow-vectorised``), and writes ``bench/results/compare_wordcount.json`` and a
bar chart ``compare_wordcount.png``. Exit status 1 if any result is wrong.

``--profile`` instead runs each mrk8s job once under ``py-spy record
--subprocesses`` (driver and workers), prints the 15 functions with the most
own time, and writes ``bench/results/compare_wordcount_profile.json`` plus the
collapsed stacks, ``wordcount_<job>.collapsed.txt`` (flamegraph.pl or speedscope
read them). If py-spy cannot attach (no ptrace), it falls back to pyinstrument,
in-process, over one map task and one reduce task of the job re-run through
``mrk8s worker``, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.order import run_order

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
VOCAB = 1_000_000
SEED = 0
PYARROW_BLOCK = 16 << 20
DASK_BLOCKSIZE = 32 << 20
#: py-spy beside this interpreter (a venv's bin/), else on PATH.
PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
COREUTILS = "tr -s '[:space:]' '\\n' < {corpus} | LC_ALL=C sort | uniq -c"
JOBS = {
    "mrk8s-record": REPO / "examples" / "wordcount.py",
    "mrk8s-columnar": REPO / "examples" / "wordcount_columnar.py",
}
#: What the issue reports for peers on a 0.5 GiB corpus here (seconds).
REPORTED = {
    "coreutils": 54,
    "counter": 54,
    "pyarrow-vectorised": 12,
    "dask-bag": "45-50",
    "ray-data": "45-50",
}
TARGETS = {
    "record_over_coreutils": "< 1",
    "record_over_counter": "< 1",
    "record_over_columnar": ">= 3",
    "columnar_over_vectorised": "<= 1.25",
}

Counts = dict[str, int]


# ---------------------------------------------------------------- the Python contestants
# Each runs in a fresh interpreter (``--child NAME``) and returns (seconds, counts, extras).


def count_counter(path: str, workers: int) -> tuple[float, Counts, dict[str, Any]]:
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(line.split())
    return time.perf_counter() - started, dict(counts), {}


def _line_end(mm: Any, pos: int, size: int) -> int:
    """The offset just past the first newline at or after ``pos`` (or ``size``)."""
    while pos < size:
        window = mm.read_at(min(4096, size - pos), pos)
        found = window.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(window)
    return size


def _count_range(path: str, start: int, end: int) -> Any:
    import numpy as np
    import pyarrow as pa

    from mrk8s.text import split_words

    size = os.path.getsize(path)
    parts = []
    with pa.memory_map(path) as mm:
        pos = start
        while pos < end:
            stop = end if end - pos <= PYARROW_BLOCK else _line_end(mm, pos + PYARROW_BLOCK, size)
            mm.seek(pos)
            data = mm.read_buffer(stop - pos)  # zero-copy: a slice of the mapping
            offsets = pa.py_buffer(np.array([0, stop - pos], dtype=np.int32))
            words = split_words(pa.StringArray.from_buffers(1, offsets, data))
            table = pa.table({"word": words})
            parts.append(table.group_by("word", use_threads=False).aggregate([("word", "count")]))
            pos = stop
    merged = pa.concat_tables(parts).group_by("word", use_threads=False)
    return merged.aggregate([("word_count", "sum")]).rename_columns(["word", "count"])


def count_pyarrow(path: str, workers: int) -> tuple[float, Counts, dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    started = time.perf_counter()
    size = os.path.getsize(path)
    with pa.memory_map(path) as mm:
        cuts = [0, *(_line_end(mm, size * i // workers, size) for i in range(1, workers)), size]
    with ThreadPoolExecutor(workers) as pool:  # pyarrow's kernels release the GIL
        pieces = list(pool.map(_count_range, [path] * workers, cuts[:-1], cuts[1:]))
    total = pa.concat_tables(pieces).group_by("word").aggregate([("count", "sum")])
    seconds = time.perf_counter() - started
    counts = dict(zip(total["word"].to_pylist(), total["count_sum"].to_pylist(), strict=True))
    return seconds, counts, {}


def _merge_counters(counters: Any) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return total


def _dask_bag(path: str, workers: int, count: Callable[[Any], Any]) -> tuple[float, Counts, dict]:
    import dask.bag as db
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        startup = time.perf_counter() - t0
        started = time.perf_counter()
        bag = db.read_text(path, blocksize=DASK_BLOCKSIZE)
        counts = dict(count(bag.str.split().flatten()).compute())
        seconds = time.perf_counter() - started
    return seconds, counts, {"startup_seconds": startup, "partitions": bag.npartitions}


def count_dask(path: str, workers: int) -> tuple[float, Counts, dict[str, Any]]:
    return _dask_bag(path, workers, lambda words: words.reduction(Counter, _merge_counters))


def count_dask_frequencies(path: str, workers: int) -> tuple[float, Counts, dict[str, Any]]:
    return _dask_bag(path, workers, lambda words: words.frequencies())


def _split_words(batch: dict[str, Any]) -> dict[str, Any]:
    return {"word": [w for line in batch["text"] for w in line.split()]}


def count_ray(path: str, workers: int) -> tuple[float, Counts, dict[str, Any]]:
    import logging

    import ray
    import ray.data

    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        startup = time.perf_counter() - t0
        started = time.perf_counter()
        ds = ray.data.read_text(path).map_batches(_split_words)
        frame = ds.groupby("word").count().to_pandas()
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    counts = dict(zip(frame["word"].tolist(), frame["count()"].tolist(), strict=True))
    return seconds, counts, {"startup_seconds": startup}


CHILDREN: dict[str, Callable[[str, int], tuple[float, Counts, dict[str, Any]]]] = {
    "counter": count_counter,
    "pyarrow-vectorised": count_pyarrow,
    "dask-bag": count_dask,
    "dask-bag-frequencies": count_dask_frequencies,
    "ray-data": count_ray,
}


def child_main(name: str, path: str, workers: int, out: str) -> int:
    seconds, counts, extras = CHILDREN[name](path, workers)
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "extras": extras, "counts": list(counts.items())}, f)
    return 0


def run_child(name: str, path: str, workers: int, work: str) -> tuple[float, Counts, dict]:
    out = os.path.join(work, f"{name}.json")
    cmd = [sys.executable, "-m", "bench.compare_wordcount", "--child", name, path,
           "--workers", str(workers), "--child-out", out]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out) as f:
        got = json.load(f)
    os.unlink(out)
    return got["seconds"], {w: int(c) for w, c in got["counts"]}, got["extras"]


# ---------------------------------------------------------------- the command-line contestants


def run_coreutils(path: str, workers: int, work: str) -> tuple[float, Counts, dict]:
    cmd = COREUTILS.format(corpus=shlex.quote(path))
    env = {**os.environ, "TMPDIR": work}
    started = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, check=True, env=env
    )
    seconds = time.perf_counter() - started
    counts: Counts = {}
    for line in proc.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) == 2:  # a blank "word" (leading whitespace) has none
            counts[fields[1]] = int(fields[0])
    return seconds, counts, {}


def mrk8s_command(job: Path, path: str, workers: int, out: str, shuffle: str) -> list[str]:
    return [sys.executable, "-m", "mrk8s.cli", "run", str(job.relative_to(REPO)), path,
            "-o", out, "--workers", str(workers), "--shuffle-dir", shuffle, "-q"]  # fmt: skip


def parse_parts(out: str) -> Counts:
    counts: Counts = {}
    for part in sorted(Path(out).glob("part-*")):
        with open(part, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("\t")
                if not sep:
                    raise ValueError(f"{part.name}: not a key TAB value line: {line!r}")
                counts[json.loads(key)] = json.loads(value)
    return counts


def run_mrk8s(name: str, path: str, workers: int, work: str) -> tuple[float, Counts, dict]:
    out = os.path.join(work, f"{name}-out")
    shuffle = tempfile.mkdtemp(prefix="shuffle-", dir=work)
    cmd = mrk8s_command(JOBS[name], path, workers, out, shuffle)
    try:
        started = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr.fileno())
        seconds = time.perf_counter() - started
        summary = json.loads((Path(out) / "summary.json").read_text())
        counts = parse_parts(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(shuffle, ignore_errors=True)
    stages = summary["stages"]
    extras = {
        "job_seconds": summary["seconds"],
        "map_seconds": stages["step0-map"]["seconds"],
        "reduce_seconds": stages["step0-reduce"]["seconds"],
        "map_tasks": stages["step0-map"]["tasks"],
        "reduce_tasks": stages["step0-reduce"]["tasks"],
        "records_shuffled": stages["step0-map"]["records_out"],
        "shuffle_bytes": summary["shuffle_bytes"],
        "peak_rss_max": max(s["peak_rss_max"] for s in stages.values()),
    }
    return seconds, counts, extras


def contestants() -> dict[str, Callable[[str, int, str], tuple[float, Counts, dict]]]:
    def child(name: str) -> Callable[[str, int, str], tuple[float, Counts, dict]]:
        return lambda path, workers, work: run_child(name, path, workers, work)

    def mrk8s(name: str) -> Callable[[str, int, str], tuple[float, Counts, dict]]:
        return lambda path, workers, work: run_mrk8s(name, path, workers, work)

    # "counter" first: its first result is the reference the others are checked against.
    return {
        "counter": child("counter"),
        "coreutils": run_coreutils,
        "pyarrow-vectorised": child("pyarrow-vectorised"),
        "mrk8s-record": mrk8s("mrk8s-record"),
        "mrk8s-columnar": mrk8s("mrk8s-columnar"),
        "dask-bag": child("dask-bag"),
        "ray-data": child("ray-data"),
        "dask-bag-frequencies": child("dask-bag-frequencies"),
    }


#: Not run unless named in --contestants (see the module docstring).
OPTIONAL = {"dask-bag-frequencies"}


def difference(got: Counts, want: Counts, n: int = 5) -> dict[str, list[int | None]]:
    """Up to ``n`` words whose counts differ, as word: [want, got]."""
    keys = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    return {k: [want.get(k), got.get(k)] for k in keys[:n]}


# ---------------------------------------------------------------- corpus, comparison, chart


def ensure_corpus(path: str | None, size: int) -> str:
    if path is None:
        name = f"mrk8s-wordcount-corpus-{size}-v{VOCAB}-s{SEED}.txt"
        path = os.path.join(tempfile.gettempdir(), name)
    if not os.path.exists(path):  # generate() writes a temp file and renames it when done
        print(f"generating {size} bytes of corpus at {path}", file=sys.stderr, flush=True)
        from bench import corpus

        corpus.generate(path, size, vocab=VOCAB, seed=SEED)
    return path


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip()

    dirty = git("status", "--porcelain", "--", "mrk8s", "shuffle", "scheduler", "examples")
    return {"commit": git("rev-parse", "HEAD"), "engine_dirty": bool(dirty)}


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its
    reaped descendants); None where /proc/stat is missing."""
    import resource

    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return machine, ours


def other_cpu_seconds(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """CPU seconds spent during a run by processes that are not the run's own: a busy
    neighbour on a shared machine shows here (a few tenths are the system's own noise)."""
    if before is None or after is None:
        return None
    return round(max(0.0, (after[0] - before[0]) - (after[1] - before[1])), 1)


def ratios(medians: dict[str, float]) -> dict[str, float | None]:
    def ratio(a: str, b: str) -> float | None:
        if a in medians and b in medians and medians[b] > 0:
            return round(medians[a] / medians[b], 3)
        return None

    return {
        "record_over_coreutils": ratio("mrk8s-record", "coreutils"),
        "record_over_counter": ratio("mrk8s-record", "counter"),
        "record_over_columnar": ratio("mrk8s-record", "mrk8s-columnar"),
        "columnar_over_vectorised": ratio("mrk8s-columnar", "pyarrow-vectorised"),
    }


def targets_met(r: dict[str, float | None]) -> dict[str, bool | None]:
    checks = {
        "record_over_coreutils": lambda x: x < 1,
        "record_over_counter": lambda x: x < 1,
        "record_over_columnar": lambda x: x >= 3,
        "columnar_over_vectorised": lambda x: x <= 1.25,
    }
    return {k: (None if r[k] is None else check(r[k])) for k, check in checks.items()}


def compare(args: argparse.Namespace, path: str) -> int:
    chosen = contestants()
    names = args.contestants.split(",") if args.contestants else set(chosen) - OPTIONAL
    unknown = set(names) - set(chosen)
    if unknown:
        raise SystemExit(f"unknown contestants {sorted(unknown)}: choose from {list(chosen)}")
    chosen = {n: fn for n, fn in chosen.items() if n in names}
    nbytes = os.path.getsize(path)
    runs: list[dict[str, Any]] = []
    reference: Counts | None = None
    with tempfile.TemporaryDirectory(prefix="mrk8s-compare-wordcount-") as work:
        if "counter" not in chosen:  # still need a reference: one untimed Counter pass
            reference = run_child("counter", path, args.workers, work)[1]
        for run in range(1, args.repeat + 1):
            # Interleaved, so that drift hits every contestant alike, and in a new order
            # each run (bench.order): in a fixed order the columnar job always ran
            # straight after the record job's 50 s on both cores.
            for name in run_order(list(chosen), run):
                fn = chosen[name]
                cpu_before = cpu_seconds()
                seconds, counts, extras = fn(path, args.workers, work)
                other_cpu = other_cpu_seconds(cpu_before, cpu_seconds())
                if reference is None:
                    reference = counts
                row = {
                    "contestant": name,
                    "run": run,
                    "size": args.size,
                    "bytes": nbytes,
                    "seconds": round(seconds, 3),
                    "mib_per_s": round(nbytes / 2**20 / seconds, 2),
                    "distinct_words": len(counts),
                    "words": sum(counts.values()),
                    "verified": counts == reference,
                    "other_cpu_seconds": other_cpu,
                    **{k: round(v, 3) if isinstance(v, float) else v for k, v in extras.items()},
                }
                if not row["verified"]:
                    row["differences"] = difference(counts, reference)
                del counts
                print(json.dumps(row), flush=True)
                runs.append(row)
    medians = {
        name: round(statistics.median(r["seconds"] for r in runs if r["contestant"] == name), 3)
        for name in chosen
    }
    r = ratios(medians)
    summary = {
        "size": args.size,
        "bytes": nbytes,
        "repeat": args.repeat,
        "workers": args.workers,
        "median_seconds": medians,
        "ratios": r,
        "targets": TARGETS,
        "targets_met": targets_met(r),
        "verified": {n: all(r["verified"] for r in runs if r["contestant"] == n) for n in chosen},
        "all_verified": all(row["verified"] for row in runs),
    }
    print(json.dumps(summary), flush=True)
    result = {
        "corpus": {"bytes": nbytes, "vocab": VOCAB, "seed": SEED, "generator": "bench/corpus.py"},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "git": git_state(),
        "commands": {
            "coreutils": COREUTILS.format(corpus="CORPUS"),
            **{
                # "python", not this interpreter's path: results are committed.
                n: shlex.join(
                    ["python", *mrk8s_command(j, "CORPUS", args.workers, "OUT", "SHUFFLE")[1:]]
                )
                for n, j in JOBS.items()
            },
        },
        "reported_by_issue_seconds": REPORTED,
        "summary": summary,
        "runs": runs,
    }
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    try:
        plot(summary, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return 0 if summary["all_verified"] else 1


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    medians = summary["median_seconds"]
    names = list(medians)
    colors = ["tab:orange" if n.startswith("mrk8s") else "tab:gray" for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 2))
    bars = ax.barh(names, [medians[n] for n in names], color=colors)
    labels = [
        f"{medians[n]:.1f} s" + ("" if summary["verified"][n] else " (result differs)")
        for n in names
    ]
    ax.bar_label(bars, labels=labels, padding=3)
    ax.invert_yaxis()
    marks = []
    if "coreutils" in medians and "counter" in medians:
        marks.append((min(medians["coreutils"], medians["counter"]), "record target", "tab:red"))
    if "pyarrow-vectorised" in medians:
        marks.append((1.25 * medians["pyarrow-vectorised"], "columnar target", "tab:blue"))
    for x, label, color in marks:
        ax.axvline(x, color=color, linestyle="--", linewidth=1, label=f"{label} ({x:.1f} s)")
    if marks:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    ax.set_xlabel(f"seconds, median of {summary['repeat']} (lower is better)")
    mib = summary["bytes"] / 2**20
    ax.set_title(
        f"word count, {mib:.0f} MiB Zipf corpus (1M-word vocabulary), {summary['workers']} cores",
        fontsize=10,
    )
    ax.set_xlim(0, max([*medians.values(), *(x for x, _, _ in marks)]) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- profiling


def _short_path(path: str) -> str:
    """A file path without this machine's prefixes: repo-relative, or from site-packages."""
    for prefix in ("site-packages" + os.sep, str(REPO) + os.sep):
        cut = path.find(prefix)
        if cut >= 0:
            return path[cut + len(prefix) :]
    stdlib = os.path.join(sys.base_prefix, "lib", "python" + sys.version[:4].rstrip("."))
    if path.startswith(stdlib):
        return "<stdlib>" + path[len(stdlib) :]
    return path


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def parse_collapsed(text: str) -> tuple[list[tuple[list[str], int]], int]:
    """py-spy's raw output: ``frame;frame;... COUNT`` per line, root first.

    With --subprocesses the first frame names the process (``process PID:"cmd"``);
    the innermost one is replaced by the process's role (driver or worker),
    which becomes the root frame. Frames lose their
    line numbers, so that a function is one entry, and this machine's paths.
    """
    stacks = []
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        role = "[driver]"
        frames = []
        for frame in stack.split(";"):
            if frame.startswith("process "):  # a child's frame follows its parent's
                role = "[worker]" if "_local_worker" in frame else "[driver]"
                continue
            m = _FRAME.match(frame)
            frames.append(f"{m['func']} ({_short_path(m['file'])})" if m else frame)
        stacks.append(([role, *frames], int(count)))
        total += int(count)
    return stacks, total


def _is_repo_code(frame: str) -> bool:
    """A frame of this repository's code (engine or example job), not an entry point."""
    return not frame.startswith(("<module>", "main (")) and bool(
        re.search(r"\((mrk8s|shuffle|scheduler|examples)/|\(wordcount\w*\.py\)", frame)
    )


def top_functions(
    stacks: list[tuple[list[str], int]], total: int, n: int = 15
) -> dict[str, list[dict[str, Any]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    for frames, count in stacks:
        real = [f for f in frames if not f.startswith("[")]
        roles.update({next((f for f in frames if f.startswith("[")), "[driver]"): count})
        if real:
            own[real[-1]] += count
        for f in set(real):
            if _is_repo_code(f):
                inclusive[f] += count

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "samples": s, "percent": round(100 * s / total, 1)}
            for f, s in c.most_common(n)
        ]

    return {
        "own": rows(own),
        "inclusive": rows(inclusive),
        "by_process": [{"process": p, "samples": s} for p, s in roles.most_common()],
    }


def profile_pyspy(name: str, path: str, workers: int, work: str) -> dict[str, Any]:
    raw = os.path.join(work, f"{name}.raw.txt")
    out = os.path.join(work, f"{name}-out")
    cmd = [PY_SPY, "record", "--subprocesses", "--format", "raw", "--rate", "100",
           "-o", raw, "--", *mrk8s_command(JOBS[name], path, workers, out,
                                          os.path.join(work, "shuffle"))]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode or not os.path.exists(raw):
        raise PermissionError(f"py-spy failed ({proc.returncode}): {proc.stderr[-1500:]}")
    verified = parse_parts(out) == run_child("counter", path, workers, work)[1]
    stacks, total = parse_collapsed(Path(raw).read_text())
    collapsed = RESULTS / f"wordcount_{name}.collapsed.txt"
    merged: Counter[str] = Counter()
    for frames, count in stacks:
        merged[";".join(frames)] += count
    collapsed.write_text("".join(f"{s} {c}\n" for s, c in sorted(merged.items())))
    return {
        "profiler": "py-spy record --subprocesses --rate 100 (driver and worker processes)",
        "seconds_under_profiler": round(seconds, 2),
        "samples": total,
        "verified": verified,
        "collapsed_stacks": str(collapsed.relative_to(REPO)),
        **top_functions(stacks, total),
    }


def profile_pyinstrument(name: str, path: str, workers: int, work: str) -> dict[str, Any]:
    """No ptrace: run the job, keep its shuffle, re-run map task 0 and reduce task 0 in here."""
    from pyinstrument import Profiler

    from mrk8s.cli import worker

    out = os.path.join(work, f"{name}-out")
    shuffle = os.path.join(work, "shuffle")
    job_id = f"profile-{name}"
    cmd = mrk8s_command(JOBS[name], path, workers, out, shuffle)
    subprocess.run([*cmd, "--keep-shuffle", "--job-id", job_id], cwd=REPO, check=True)
    own: Counter[str] = Counter()
    seconds = 0.0
    for stage in ("map", "reduce"):
        # A committed task is skipped: drop its commit record so that it runs again.
        Path(shuffle, job_id, "commits", f"s0-{stage}-00000.json").unlink()
        profiler = Profiler(interval=0.005)
        profiler.start()
        args = ["--job", os.path.join(shuffle, job_id), "--step", "0", "--stage", stage,
                "--index", "0", "--attempt", "9"]  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):
            code = worker.main(args)
        session = profiler.stop()
        if code:
            print(f"pyinstrument: {stage} task 0 exited {code}", file=sys.stderr)
        seconds += session.duration
        todo = [session.root_frame()]
        while todo:
            frame = todo.pop()
            if frame is None:
                continue
            todo.extend(frame.children)
            if not frame.is_synthetic:
                key = f"{frame.function} ({_short_path(frame.file_path or '?')})"
                own[key] += frame.time - sum(c.time for c in frame.children if not c.is_synthetic)
    total = sum(own.values()) or 1.0
    return {
        "profiler": "pyinstrument, in-process, over map task 0 and reduce task 0 re-run by "
        "mrk8s worker (the fallback when py-spy cannot attach)",
        "seconds_profiled": round(seconds, 2),
        "own": [
            {"function": f, "seconds": round(s, 3), "percent": round(100 * s / total, 1)}
            for f, s in own.most_common(15)
        ],
    }


def profile(args: argparse.Namespace, path: str) -> int:
    results: dict[str, Any] = {
        "size": args.size,
        "bytes": os.path.getsize(path),
        "git": git_state(),  # which engine was profiled
    }
    with tempfile.TemporaryDirectory(prefix="mrk8s-profile-wordcount-") as work:
        for name in JOBS:
            shutil.rmtree(os.path.join(work, "shuffle"), ignore_errors=True)
            report = None
            if args.profiler in ("auto", "py-spy") and PY_SPY:
                try:
                    report = profile_pyspy(name, path, args.workers, work)
                except PermissionError as exc:
                    if args.profiler == "py-spy":
                        raise
                    print(f"{exc}\nfalling back to pyinstrument", file=sys.stderr)
            elif args.profiler == "auto":
                print("py-spy not found: falling back to pyinstrument", file=sys.stderr)
            if report is None:
                report = profile_pyinstrument(name, path, args.workers, work)
            results[name] = report
            print(f"\n{name}: {report['profiler']}")
            unit = "samples" if "samples" in report else "seconds"
            for title in ("own", "inclusive"):
                if title not in report:
                    continue
                print(f"  top {len(report[title])} by {title} time (percent of all {unit}):")
                for i, row in enumerate(report[title], 1):
                    print(f"  {i:3d}. {row['percent']:5.1f}%  {row[unit]:>8}  {row['function']}")
            if "by_process" in report:
                print(
                    "  " + ", ".join(f"{r['process']} {r['samples']}" for r in report["by_process"])
                )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare_wordcount_profile.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="512MiB", help="corpus size (default 512MiB)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="cores every contestant may use")
    p.add_argument("--corpus", metavar="PATH", help="corpus file (generated there if missing)")
    p.add_argument("--contestants", help=f"comma-separated subset of {','.join(contestants())}")
    p.add_argument("--results", default=str(RESULTS / "compare_wordcount.json"))
    p.add_argument("--profile", action="store_true", help="profile the two mrk8s jobs instead")
    p.add_argument("--profiler", choices=("auto", "py-spy", "pyinstrument"), default="auto")
    p.add_argument("--child", nargs=2, metavar=("NAME", "CORPUS"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args.child[0], args.child[1], args.workers, args.child_out)
    path = ensure_corpus(args.corpus, parse_size(args.size))
    if args.profile:
        return profile(args, path)
    return compare(args, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
