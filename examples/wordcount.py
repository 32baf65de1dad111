"""Count the words of a text: the "hello world" of MapReduce.

mrk8s run examples/wordcount.py examples/data/sample.txt
python examples/wordcount.py examples/data/sample.txt -o counts/
"""

import re

from mrk8s import MapReduce

WORD = re.compile(r"[\w']+")


class WordCount(MapReduce):
    def mapper(self, key, line):
        for word in WORD.findall(line.lower()):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    WordCount.run()
