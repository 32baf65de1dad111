"""Inverted index: for every word, the sorted list of documents containing it.

Input: JSON lines ``{"doc": "<id>", "text": "..."}`` (the mapper gets one dict
per line).

    mrk8s run examples/inverted_index.py examples/data/docs.jsonl
"""

import re

from mrk8s import MapReduce

WORD = re.compile(r"[\w']+")


class InvertedIndex(MapReduce):
    def mapper(self, _, doc):
        for word in set(WORD.findall(doc["text"].lower())):
            yield word, doc["doc"]

    def reducer(self, word, docs):
        yield word, sorted(set(docs))


if __name__ == "__main__":
    InvertedIndex.run()
