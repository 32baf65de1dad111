"""A word count a test can hold mid-job.

``--sleep SECONDS`` sleeps after each line; ``--gate PATH`` makes the map task
that meets the word ``gate`` wait until PATH exists, so the tasks without it
commit and that one stays running until the test opens the gate.
"""

import os
import time

from mrk8s import MapReduce


class SlowWordCount(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--sleep", type=float, default=0.0, help="seconds per input line")
        parser.add_argument("--gate", help="a file whose existence lets a 'gate' line pass")

    def mapper(self, _, line):
        time.sleep(self.options.sleep)
        words = line.split()
        if self.options.gate and "gate" in words:
            deadline = time.monotonic() + 600
            while not os.path.exists(self.options.gate) and time.monotonic() < deadline:
                time.sleep(0.05)
        for word in words:
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
