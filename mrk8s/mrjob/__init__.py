"""mrjob compatibility: run jobs written for mrjob on mrk8s's engine.

The modules mirror mrjob's import paths, so a job migrates by renaming
``mrjob.`` to ``mrk8s.mrjob.`` in its imports::

    from mrk8s.mrjob.job import MRJob
    from mrk8s.mrjob.step import MRStep
    from mrk8s.mrjob.protocol import JSONValueProtocol

An unedited job (``from mrjob.job import MRJob``) runs with ``mrk8s run``:
the loader sees the import and, in the job's own processes only, makes
``mrjob.*`` resolve to this package (:mod:`mrk8s.tasks.run.aliases`).

This is an adapter in the top layer. :class:`~mrk8s.mrjob.job.MRJob` is a
:class:`mrk8s.MapReduce` whose :meth:`~mrk8s.MapReduce.engine_steps` wrap
the mrjob methods in ordinary :class:`mrk8s.Step` functions, applying the
protocols at the edges (input lines, the shuffle, output lines); nothing
below ``mrk8s`` knows mrjob exists. mrjob itself is never imported.
"""

#: The mrjob modules this package provides (``mrjob.X`` -> ``mrk8s.mrjob.X``).
PROVIDED_MODULES = ("compat", "job", "protocol", "py2", "step", "util")
