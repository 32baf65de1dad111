"""Word count without a combiner: every (word, 1) pair crosses the shuffle.

Used by bench/wordcount_memory.py to give a reducer a partition many times
larger than its memory budget.
"""

from mrk8s import MapReduce


class WordCountNoCombiner(MapReduce):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
