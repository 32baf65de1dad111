"""Count the words of a text: the "hello world" of MapReduce.

A word is a run of non-whitespace characters, as in Hadoop's WordCount,
``tr -s '[:space:]' '\\n' | sort | uniq -c`` and ``Counter(line.split())``.

mrk8s run examples/wordcount.py examples/data/sample.txt
python examples/wordcount.py examples/data/sample.txt -o counts/
"""

from mrk8s import MapReduce


class WordCount(MapReduce):
    def mapper(self, key, line):
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    WordCount.run()
