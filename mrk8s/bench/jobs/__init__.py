"""Job scripts built into mrk8s, run by ``mrk8s bench`` through the real driver.

A job runs from a script path, and the loader puts the script's directory first
on ``sys.path`` in every worker (so modules beside a user's script import).
This directory therefore holds job scripts only: a module here must never share
a name with a package a worker imports (``shuffle``, ``mrjob``, ...).
"""
