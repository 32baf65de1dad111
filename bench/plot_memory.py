"""Plot bench/results/wordcount_memory.jsonl: worker peak RSS against the budget.

    python -m bench.plot_memory    (needs matplotlib: pip install matplotlib)

Writes bench/results/wordcount_memory.png: for each job and input size, the
largest worker's peak RSS at each --memory-per-worker, with the line
"budget + fixed overhead" that it should stay under.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "wordcount_memory.jsonl")
MIB = 2**20


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(RESULTS) as f:
        rows = [json.loads(line) for line in f]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    overhead = rows[0]["fixed_overhead_rss"] / MIB
    budgets = sorted({r["budget_bytes"] / MIB for r in rows})
    ax.plot(budgets, [b + overhead for b in budgets], "k--", label="budget + idle worker RSS")
    series = sorted({(r["job"], r["input_bytes"]) for r in rows})
    for job, size in series:
        pts = sorted(
            (r["budget_bytes"] / MIB, max(r["map_peak_rss"], r["reduce_peak_rss"]) / MIB)
            for r in rows
            if (r["job"], r["input_bytes"]) == (job, size)
        )
        label = f"{job.removesuffix('.py')}, {size / MIB:.0f} MiB input"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [f"{b:.0f}" for b in budgets])
    ax.set_xlabel("--memory-per-worker (MiB)")
    ax.set_ylabel("peak RSS of the largest worker (MiB)")
    ax.set_title("mrk8s word count: worker memory follows the budget, not the input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = RESULTS.replace(".jsonl", ".png")
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
