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
  :mod:`.launch`, :mod:`.backends.k8s` as a driver Job, :mod:`.backends.ray`
  as a Ray job.

The web stack (FastAPI, uvicorn, SQLAlchemy, prometheus_client) is the
``gateway`` extra and is imported only inside this package. The gateway sits
above the CLI: it runs jobs with the ``mrk8s`` command and reads their
progress as ``mrk8s status`` does; nothing below imports it.

Also here: the ``k8s`` and ``ray`` backends
(:mod:`.backends`), weighted routing of queues to clusters (:mod:`.routing`),
the declarative git mode (:mod:`.gitops`, :mod:`.reconciler`), webhooks
(:mod:`.webhooks`) and the web page (:mod:`.web`).
"""
