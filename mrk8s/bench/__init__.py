"""``mrk8s bench``: measure mrk8s with its own driver and jobs.

- :mod:`~mrk8s.bench.shuffle_bench`: ``mrk8s bench shuffle``, shuffle throughput;
- :mod:`~mrk8s.bench.benchstats`: disk bytes and task memory per stage, beside its timings;
- :mod:`mrk8s.bench.jobs`: the job scripts the benchmarks run.

The comparisons against other engines live outside the package, in ``bench/``.
"""
