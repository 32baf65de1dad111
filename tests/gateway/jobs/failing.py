"""A job whose mapper raises on a line saying boom: the gateway must report it FAILED."""

from mrk8s import MapReduce


class Failing(MapReduce):
    def mapper(self, _, line):
        if "boom" in line:
            raise ValueError(f"this line is bad: {line!r}")
        yield line, 1

    def reducer(self, key, counts):
        yield key, sum(counts)
