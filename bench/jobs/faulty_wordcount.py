"""Word count whose tasks announce their pid in $FAULT_DIR (when set), so that
bench/faults.py can kill one in the middle of its work. Without the variable
it is a plain word count with a combiner."""

import os
import time

from mrk8s import MapReduce

FAULT_DIR = os.environ.get("FAULT_DIR", "")


def announce(stage: str) -> None:
    if FAULT_DIR:
        name = os.path.join(FAULT_DIR, f"{stage}-{os.getpid()}-{time.time_ns()}.pid")
        with open(name, "w") as f:
            f.write(str(os.getpid()))


class FaultyWordCount(MapReduce):
    def mapper_init(self):
        announce("map")

    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer_init(self):
        announce("reduce")

    def reducer(self, word, counts):
        yield word, sum(counts)
