"""Generate a Zipf-distributed text corpus for word-count benchmarks.

    python -m bench.corpus OUT.txt --size 200MiB [--vocab 1000000] [--seed 0]

Words are drawn with probability proportional to 1/rank (vocabulary of
``vocab`` distinct words, e.g. ``w123``), 12 words to a line. Deterministic
for a seed; written in chunks, so memory stays small whatever the size.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

WORDS_PER_LINE = 12
CHUNK_WORDS = 1 << 20


def _cumulative(vocab: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, vocab + 1)
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def generate(path: str, size: int, *, vocab: int = 1_000_000, seed: int = 0) -> int:
    """Write about ``size`` bytes of text to ``path``; returns the byte count."""
    rng = np.random.default_rng(seed)
    cdf = _cumulative(vocab)
    names = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    written = 0
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        while written < size:
            ranks = np.searchsorted(cdf, rng.random(CHUNK_WORDS))
            words = names[ranks]
            lines = [
                " ".join(words[i : i + WORDS_PER_LINE])
                for i in range(0, CHUNK_WORDS, WORDS_PER_LINE)
            ]
            data = ("\n".join(lines) + "\n").encode()
            data = data[: max(0, size - written)]
            if written + len(data) >= size:
                cut = data.rfind(b"\n") + 1  # end on a whole line
                data = data[:cut] if cut else data
            f.write(data)
            written += len(data)
            if not data:
                break
    os.replace(tmp, path)
    return written


def main(argv: list[str]) -> int:
    from mrk8s.engine.settings import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--size", default="200MiB")
    p.add_argument("--vocab", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    n = generate(args.path, parse_size(args.size), vocab=args.vocab, seed=args.seed)
    print(f"wrote {n} bytes to {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
