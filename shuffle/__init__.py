"""The data plane of mrk8s: partitioners, key codecs, map-output files, commit
records, stores and the streaming merge.

This package is internal: it carries no stability promise. It imports nothing
from ``scheduler`` or ``mrk8s`` and none of the optional extras; it knows
partitions, segments, byte ranges and stores, not backends or mappers.
"""
