"""The command line: ``mrk8s run``, ``status``, ``clean``, ``bench``, ``worker`` and
``shuffle-server``.

:func:`main` is the ``mrk8s`` console script and ``python -m mrk8s.cli``. The
subcommands live in :mod:`mrk8s.cli.commands`; ``status``/``clean`` read a
job's directory (:mod:`mrk8s.cli.jobs`); ``worker`` is the container command
every backend runs (:mod:`mrk8s.cli.worker`); ``shuffle-server`` serves a node's
map outputs (:mod:`mrk8s.cli.shuffleserver`). This is the top of the
package's layers: nothing else in mrk8s imports it.
"""

from mrk8s.cli.commands import main

__all__ = ["main"]
