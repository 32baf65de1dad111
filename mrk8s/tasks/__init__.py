"""One map or reduce task, wherever it runs: a local worker, a Ray actor, a pod.

- :mod:`~mrk8s.tasks.plan`: the plan a task is given (plain data, from one URL);
- :mod:`~mrk8s.tasks.run`: the task bodies every backend calls;
- :mod:`~mrk8s.tasks.loader` (and :mod:`~mrk8s.tasks.aliases`): the user's
  script, imported in this process;
- :mod:`~mrk8s.tasks.records`, :mod:`~mrk8s.tasks.groups`: between the
  user's record functions and Arrow tables;
- :mod:`~mrk8s.tasks.usercode`, :mod:`~mrk8s.tasks.tracebacks`: telling the
  user's errors from ours;
- :mod:`~mrk8s.tasks.process`: the worker process's memory and node.

Nothing here knows which backend runs it or what the driver does next.
"""
