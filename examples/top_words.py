"""The N most frequent words: two steps.

Step 1 counts words (as wordcount.py). Step 2 sends every (word, count) to a
single reducer, which keeps the top N. ``--top`` is the job's own option.

    mrk8s run examples/top_words.py examples/data/sample.txt -- --top 5
    python examples/top_words.py examples/data/sample.txt --top 5
"""

import heapq
import re

from mrk8s import MapReduce, Step

WORD = re.compile(r"[\w']+")


class TopWords(MapReduce):
    def configure_args(self, parser):
        parser.add_argument("--top", type=int, default=10, help="how many words to keep")

    def steps(self):
        return [
            Step(mapper=self.map_words, combiner=self.sum_counts, reducer=self.sum_counts),
            Step(mapper=self.to_one_key, reducer=self.keep_top, reducers=1),
        ]

    def map_words(self, _, line):
        for word in WORD.findall(line.lower()):
            yield word, 1

    def sum_counts(self, word, counts):
        yield word, sum(counts)

    def to_one_key(self, word, count):
        yield None, (count, word)

    def keep_top(self, _, pairs):
        # Highest count first; ties broken alphabetically.
        best = heapq.nsmallest(self.options.top, pairs, key=lambda cw: (-cw[0], cw[1]))
        for count, word in best:
            yield word, count


if __name__ == "__main__":
    TopWords.run()
