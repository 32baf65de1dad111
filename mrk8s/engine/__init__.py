"""The engine, driver side: the life of one job, from its settings to its summary.

- :mod:`~mrk8s.engine.settings`: what a run is asked to do (built at the edge);
- :mod:`~mrk8s.engine.driver`: load, plan, ship, map, place, reduce, commit;
- :mod:`~mrk8s.engine.executors`: the backend named by ``--backend``;
- :mod:`~mrk8s.engine.sampling`: key samples for range partitioning;
- :mod:`~mrk8s.engine.progress`: progress for people.

What a task does once it runs is in :mod:`mrk8s.tasks`; where and when tasks
run is :mod:`scheduler`'s business.
"""
