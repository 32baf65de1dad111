"""The job gateway: a REST service that takes mrk8s jobs, runs them and remembers them.

``mrk8s gateway serve`` (:mod:`.cli`) runs :func:`.app.create_app`. Rooms:

- :mod:`.config`: the settings (config file, flags, environment), built once;
- :mod:`.state`: the database (SQLAlchemy Core; SQLite or PostgreSQL): jobs,
  status history, users, artifacts, audit log;
- :mod:`.app`, :mod:`.jobs_api`, :mod:`.artifacts`, :mod:`.auth`,
  :mod:`.audit`, :mod:`.metrics`, :mod:`.models`: the HTTP surface;
- :mod:`.submit`: a request checked field by field and turned into a job;
- :mod:`.supervisor`: starts queued jobs within their queue's cap, follows
  running ones, re-attaches or resumes them after a restart;
- :mod:`.backends`: where jobs run, behind one interface (start, poll,
  cancel, progress); :mod:`.backends.local` runs ``mrk8s run`` through
  :mod:`.launch`.

The web stack (FastAPI, uvicorn, SQLAlchemy, prometheus_client) is the
``gateway`` extra and is imported only inside this package. The gateway sits
above the CLI: it runs jobs with the ``mrk8s`` command and reads their
progress as ``mrk8s status`` does; nothing below imports it.

Not yet here, and where each slots in: the ``k8s`` and ``ray`` backends (a
module each under :mod:`.backends`); a cluster registry with weighted
routing of queues to clusters (chosen in :mod:`.submit`, which names the
cluster in the job id); PostgreSQL by ``database:`` URL (the tables are
portable; its tests are to come); the declarative git mode (a backend whose
``start`` commits manifests, followed by a reconciler); webhooks on
completion (a callback of the supervisor's ``_ended``); the web page.
"""
