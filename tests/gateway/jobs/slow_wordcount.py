"""A word count whose mapper sleeps after each line (--sleep SECONDS), so a test can act mid-job."""

import time

from mrk8s import MapReduce


class SlowWordCount(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--sleep", type=float, default=0.0, help="seconds per input line")

    def mapper(self, _, line):
        time.sleep(self.options.sleep)
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
