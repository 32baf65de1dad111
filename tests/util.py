"""Helpers shared by tests: input generators and output parsers."""

from __future__ import annotations

import json
import random

#: A plain word count (no combiner) with a __main__ block, for tests that need a job file.
WORDCOUNT = """
from mrk8s import MapReduce

class WordCount(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)

if __name__ == "__main__":
    WordCount.run()
"""


def make_words(n_words: int, *, vocab: int = 5000, seed: int = 0, per_line: int = 12) -> str:
    """Zipf-ish text: a few words very common, many rare; deterministic."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    drawn = rng.choices(words, weights, k=n_words)
    lines = [" ".join(drawn[i : i + per_line]) for i in range(0, n_words, per_line)]
    return "\n".join(lines) + "\n"


def parse_text_output(text: str) -> list[tuple[object, object]]:
    out = []
    for line in text.splitlines():
        k, sep, v = line.partition("\t")
        assert sep, f"not a key TAB value line: {line!r}"
        out.append((json.loads(k), json.loads(v)))
    return out
