"""A three-step mrjob job exercising what mrjob jobs commonly use.

A passthrough option (--min-length), a file option (--stop-words) and FILES,
an overridden __init__, counters and status, tuple and None keys,
reducer_init/reducer_final, a reducer-only step, SORT_VALUES, and a
non-default OUTPUT_PROTOCOL (ReprProtocol: tuples stay tuples).
"""

import re

from mrjob.job import MRJob
from mrjob.protocol import ReprProtocol
from mrjob.step import MRStep

WORD = re.compile(r"[\w']+")


class MRWordStats(MRJob):
    OUTPUT_PROTOCOL = ReprProtocol
    SORT_VALUES = True
    FILES = ["letters.txt"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_keys = 0

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--min-length", type=int, default=1)
        self.add_file_arg("--stop-words", default=None)

    def steps(self):
        return [
            MRStep(
                mapper_init=self.load_files,
                mapper=self.words,
                combiner=self.total,
                reducer=self.by_length,
            ),
            MRStep(reducer_init=self.start, reducer=self.summarize, reducer_final=self.finish),
            MRStep(reducer=self.last),
        ]

    def load_files(self):
        self.stop = set()
        if self.options.stop_words:
            with open(self.options.stop_words) as f:
                self.stop = {line.strip() for line in f}
        with open("letters.txt") as f:  # shipped by FILES, in the working directory
            self.vowels = f.read().strip()

    def words(self, _, line):
        for word in WORD.findall(line.lower()):
            if len(word) < self.options.min_length or word in self.stop:
                self.increment_counter("words", "skipped")
                continue
            yield (len(word), word[0] in self.vowels), 1

    def total(self, key, counts):
        yield key, sum(counts)

    def by_length(self, key, counts):
        length, vowel = key  # a tuple key arrives as a list under JSON
        self.set_status(f"length {length}")
        yield length, ("vowel" if vowel else "consonant", sum(counts))

    def start(self):
        self.keys_here = 0

    def summarize(self, length, kinds):
        self.keys_here += 1
        kinds = list(kinds)  # sorted by their serialized form (SORT_VALUES)
        yield None, (length, [kind for kind, _ in kinds], sum(n for _, n in kinds))

    def finish(self):
        yield "keys", self.keys_here

    def last(self, key, values):
        if key is None:
            for length, kinds, total in values:
                yield (length, tuple(kinds)), total
        else:
            yield key, sum(values)


if __name__ == "__main__":
    MRWordStats.run()
