"""Line counts by file with mapper_raw: each input file is read whole by one mapper."""

from mrjob.job import MRJob


class MRCountLinesRaw(MRJob):
    def mapper_raw(self, path, uri):
        with open(path, "rb") as f:
            yield uri, sum(1 for _ in f)

    def reducer(self, uri, counts):
        yield uri, sum(counts)


if __name__ == "__main__":
    MRCountLinesRaw.run()
