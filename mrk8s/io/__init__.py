"""Inputs and outputs: splits of the user's files, readers, part files.

- :mod:`~mrk8s.io.split`: one map task's share of the input (plan data);
- :mod:`~mrk8s.io.inputs`: list inputs, cut them into splits, read a split;
- :mod:`~mrk8s.io.outputs`: write and commit part files, read them back.

Everything goes through fsspec URLs. Nothing here knows about tasks or jobs.
"""
