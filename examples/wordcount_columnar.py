"""Word count over Arrow tables: the columnar fast path.

``map_batch`` gets a table with one string column ``line`` per batch of input
lines and returns a table with a ``key`` column. ``SORT_KEYS = False`` picks
the unsorted hash shuffle (nothing here needs keys in order), so
``reduce_batch`` gets the rows of whole keys, in no particular order: all of
a partition, or pieces of it if it exceeds 32 MiB (see the README).
Same output as wordcount.py (each part sorted by word, by ``reduce_batch``).

    mrk8s run examples/wordcount_columnar.py examples/data/sample.txt
"""

import pyarrow as pa

from mrk8s import MapReduce
from mrk8s.text import split_words


class ColumnarWordCount(MapReduce):
    SORT_KEYS = False

    def map_batch(self, table):
        # The words line.split() would give, split by Arrow (faster still on ASCII).
        words = split_words(table["line"])
        # Count within the batch first (a columnar combiner): far fewer rows to shuffle.
        counts = pa.table({"key": words}).group_by("key").aggregate([("key", "count")])
        return counts.rename_columns(["key", "value"])

    def reduce_batch(self, table):
        summed = table.group_by("key").aggregate([("value", "sum")])
        return summed.rename_columns(["key", "value"]).sort_by("key")


if __name__ == "__main__":
    ColumnarWordCount.run()
