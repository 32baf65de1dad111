"""Where and when tasks run: stages, attempts, retries, resume, placement and
backends.

This package is internal: it carries no stability promise. It runs *indexed
tasks of a stage* and does not know what a mapper is; what a task does is
handed to it as a dotted path to a function (in-process backends) or a
container command (Kubernetes). It imports nothing from ``mrk8s``.
"""
