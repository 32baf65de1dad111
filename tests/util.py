"""Helpers shared by tests: input generators and output parsers."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class JoinInputs:
    """Inputs of examples/join.py and its answer, computed here with plain dicts."""

    users_csv: Path
    orders_csv: Path
    expected: dict[str, dict[str, str]]  # order id -> the joined record
    dropped: int  # orders whose user does not exist


def join_inputs(
    directory: Path, *, users: int = 300, orders: int = 3000, seed: int = 5
) -> JoinInputs:
    """users.csv and orders.csv in ``directory`` (some orders name no user) and the answer."""
    rng = random.Random(seed)
    user_rows = [(i, f"user{i}", rng.choice(["GB", "US", "NL"])) for i in range(1, users)]
    order_rows = [
        (f"o{j:05d}", rng.randint(1, users + 20), f"{rng.randint(1, 9999) / 100}")
        for j in range(orders)
    ]
    u, o = directory / "users.csv", directory / "orders.csv"
    with u.open("w", newline="") as f:
        csv.writer(f).writerows([("user_id", "name", "country"), *user_rows])
    with o.open("w", newline="") as f:
        csv.writer(f).writerows([("order_id", "user_id", "amount"), *order_rows])
    by_id = {str(i): (name, country) for i, name, country in user_rows}
    expected = {
        oid: {"user_id": str(uid), "name": by_id[str(uid)][0], "country": by_id[str(uid)][1],
              "amount": amt}
        for oid, uid, amt in order_rows
        if str(uid) in by_id
    }  # fmt: skip
    return JoinInputs(u, o, expected, len(order_rows) - len(expected))


#: A word count whose mappers say on stderr what they read: a task's own output,
#: for the tests that read task logs (mrk8s logs, the gateway's kept pod logs).
LOUD_WORDCOUNT = """\
import sys

from mrk8s import MapReduce


class LoudWordCount(MapReduce):
    def mapper(self, key, line):
        words = line.split()
        print(f"mapped a line of {len(words)} words", file=sys.stderr, flush=True)
        for word in words:
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""
