"""TeraSort: sort 100-byte records by their 10-byte binary key.

The range partitioner samples keys and picks boundaries so that reducer j
gets only keys below reducer j+1's: the output parts, read in order, are one
globally sorted sequence. Columnar all the way: the records never become
Python objects.

    python examples/terasort_data.py gen 100000 /tmp/tera-in/
    mrk8s run examples/terasort.py /tmp/tera-in/ -o /tmp/tera-out/ --output-format parquet
    python examples/terasort_data.py validate /tmp/tera-in/ /tmp/tera-out/
"""

from mrk8s import MapReduce


class TeraSort(MapReduce):
    PARTITIONER = "range"

    def map_batch(self, table):
        return table.select(["key", "value"])

    def reduce_batch(self, table):
        return table  # rows arrive sorted by key


if __name__ == "__main__":
    TeraSort.run()
