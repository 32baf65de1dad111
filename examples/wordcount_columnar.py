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
import pyarrow.compute as pc

from mrk8s import MapReduce


class ColumnarWordCount(MapReduce):
    SORT_KEYS = False

    def map_batch(self, table):
        # Trim first: Arrow's split yields "" after trailing whitespace, which
        # str.split() does not; a blank line still yields one "", dropped below.
        lines = pc.utf8_trim_whitespace(table["line"])
        words = pc.list_flatten(pc.utf8_split_whitespace(lines))
        # Count within the batch first (a columnar combiner): far fewer rows to shuffle.
        counts = pa.table({"key": words}).group_by("key").aggregate([("key", "count")])
        counts = counts.filter(pc.field("key") != "")
        return counts.rename_columns(["key", "value"])

    def reduce_batch(self, table):
        summed = table.group_by("key").aggregate([("value", "sum")])
        return summed.rename_columns(["key", "value"]).sort_by("key")


if __name__ == "__main__":
    ColumnarWordCount.run()
