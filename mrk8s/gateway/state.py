"""The gateway's memory: jobs, their status history, users, artifacts, the audit log.

SQLAlchemy Core over any database it speaks: SQLite by default (one file in
the state directory, in WAL mode so readers never wait for the writer),
PostgreSQL by URL in the config. The API routes and the supervisor call the
methods of :class:`State`; nothing else touches the tables.

Every status change is a compare-and-set (``UPDATE ... WHERE status IN
(...)``) written in the same transaction as its row of ``job_events``, so two
parties racing to move one job (a cancel and the supervisor seeing the process
exit) cannot both win, and the history is exactly the sequence of states.
Logs are files in the state directory; the ``jobs`` row holds their path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    # Submission order: the list's order and its cursor.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("user", sa.String(200), nullable=False, index=True),
    sa.Column("queue", sa.String(200), nullable=False, index=True),
    sa.Column("backend", sa.String(40), nullable=False),
    sa.Column("cluster", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    # What was asked (script, inputs, reducers, args, resources), as resolved at submission.
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # The job's process: pid and start time identify it across a gateway restart.
    sa.Column("pid", sa.Integer),
    sa.Column("pid_started", sa.Float),
    sa.Column("launches", sa.Integer, nullable=False, default=0),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("progress", sa.JSON),
    sa.Column("summary", sa.JSON),
    sa.Column("job_dir", sa.Text, nullable=False),
    sa.Column("log_path", sa.Text, nullable=False),
    sa.Column("output_dir", sa.Text, nullable=False),
    # What the backend needs to find the run again (backends.Handle as JSON).
    sa.Column("handle", sa.Text),
    # Declarative mode (gitops.py): the commit that holds the job, and its manifest.
    sa.Column("git_commit", sa.String(64)),
    sa.Column("manifest", sa.Text),
    # The webhook called when the job ends (mrk8s.gateway.webhooks): where, and how its
    # delivery stands (PENDING, DELIVERED, FAILED; NULL until the job ended).
    sa.Column("callback_url", sa.Text),
    sa.Column("webhook_status", sa.String(20)),
    sa.Column("webhook_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("webhook_next_at", sa.Float),
    sa.Column("webhook_error", sa.Text),
    sa.Column("webhook_delivered_at", sa.Float),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(80), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user", sa.String(200)),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("client", sa.String(200)),
)


git_syncs = sa.Table(
    "git_syncs",
    metadata,
    # One row per pass of the reconciler that applied something: which commit of which
    # queue's branch is in the cluster (reconciler.py).
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(200), nullable=False, index=True),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("applied", sa.Integer, nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # Writers queue behind each other for up to 30 s instead of failing at once.
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def add_missing_columns(engine: sa.Engine) -> list[str]:
    """Add the columns a newer gateway defines to the tables of an older database
    (``create_all`` makes missing tables only): nullable ones, and NOT NULL ones with a
    constant default (which fills the rows there are). The ``table.column`` names added."""
    inspector = sa.inspect(engine)
    quote = engine.dialect.identifier_preparer.quote
    added = []
    with engine.begin() as c:
        for table in metadata.sorted_tables:
            have = {col["name"] for col in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                ddl = f"{quote(column.name)} {column.type.compile(dialect=engine.dialect)}"
                default = column.default
                if not column.nullable:
                    if not (isinstance(default, sa.ColumnDefault) and default.is_scalar):
                        raise RuntimeError(
                            f"the database's table {table.name} has no column {column.name} "
                            "and it cannot be added (NOT NULL without a constant default)"
                        )
                    value = sa.literal(default.arg).compile(
                        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
                    )
                    ddl += f" NOT NULL DEFAULT {value}"
                c.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {ddl}"))
                added.append(f"{table.name}.{column.name}")
    return added


def engine_url(url: str) -> str:
    """``url`` with PostgreSQL's driver named: ``postgresql://`` means psycopg 3 here."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


class State:
    """The database behind the gateway; see the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = url
        url = engine_url(url)
        if url.startswith("sqlite"):
            self.engine = sa.create_engine(url)
        else:
            # A server database: enough connections for the worker threads of the routes,
            # the event streams and the supervisor at once, each checked before use.
            self.engine = sa.create_engine(url, pool_size=10, max_overflow=30, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        add_missing_columns(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- users and artifacts ------------------------------------------------------

    def sync_users(self, names_admin: Iterable[tuple[str, bool]]) -> None:
        """Record the configured users (a user removed from the config keeps its jobs)."""
        with self.engine.begin() as c:
            for name, admin in names_admin:
                row = c.execute(sa.select(users.c.name).where(users.c.name == name)).first()
                if row is None:
                    c.execute(users.insert().values(name=name, admin=admin, first_seen=time.time()))
                else:
                    c.execute(users.update().where(users.c.name == name).values(admin=admin))

    def add_artifact(self, **row: Any) -> None:
        with self.engine.begin() as c:
            c.execute(artifacts.insert().values(created_at=time.time(), **row))

    def artifact(self, artifact_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(artifacts).where(artifacts.c.id == artifact_id)).first()
        return dict(row._mapping) if row else None

    # -- jobs -----------------------------------------------------------------------

    def create_job(self, **row: Any) -> dict[str, Any]:
        now = time.time()
        with self.engine.begin() as c:
            c.execute(jobs.insert().values(status=QUEUED, created_at=now, launches=0, **row))
            c.execute(
                job_events.insert().values(
                    job_id=row["id"], status=QUEUED, at=now, message="submitted"
                )
            )
        job = self.job(row["id"])
        assert job is not None
        return job

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list_jobs(
        self,
        *,
        user: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the ``seq`` of the last job of the previous page."""
        q = sa.select(jobs).order_by(jobs.c.seq.desc()).limit(limit)
        if user is not None:
            q = q.where(jobs.c.user == user)
        if status is not None:
            q = q.where(jobs.c.status == status)
        if queue is not None:
            q = q.where(jobs.c.queue == queue)
        if before is not None:
            q = q.where(jobs.c.seq < before)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def jobs_in(self, statuses: Sequence[str]) -> list[dict[str, Any]]:
        """Jobs in these states, oldest first (the order queued jobs start in)."""
        q = sa.select(jobs).where(jobs.c.status.in_(statuses)).order_by(jobs.c.seq)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def transition(
        self,
        job_id: str,
        allowed_from: Iterable[str],
        to: str,
        message: str = "",
        **fields: Any,
    ) -> bool:
        """Move a job to ``to`` if it is in one of ``allowed_from``; False if it was not."""
        now = time.time()
        with self.engine.begin() as c:
            done = c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(list(allowed_from)))
                .values(status=to, **fields)
            ).rowcount
            if done:
                c.execute(
                    job_events.insert().values(job_id=job_id, status=to, at=now, message=message)
                )
        return bool(done)

    def update_job(self, job_id: str, *, only_if: str | None = None, **fields: Any) -> bool:
        """Set fields of a job (if it is in state ``only_if``, when given)."""
        q = jobs.update().where(jobs.c.id == job_id)
        if only_if is not None:
            q = q.where(jobs.c.status == only_if)
        with self.engine.begin() as c:
            return bool(c.execute(q.values(**fields)).rowcount)

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        q = (
            sa.select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.seq > after)
            .order_by(job_events.c.seq)
        )
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (status, queue), for the metrics."""
        q = sa.select(jobs.c.status, jobs.c.queue, sa.func.count()).group_by(
            jobs.c.status, jobs.c.queue
        )
        with self.engine.connect() as c:
            return {(s, qn): n for s, qn, n in c.execute(q)}

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.select(1))

    # -- declarative mode -------------------------------------------------------------

    def record_sync(self, queue: str, commit: str, applied: int) -> None:
        """The reconciler applied ``applied`` jobs of ``queue``'s branch at ``commit``."""
        with self.engine.begin() as c:
            c.execute(
                git_syncs.insert().values(
                    queue=queue, commit=commit, at=time.time(), applied=applied
                )
            )

    def last_sync(self, queue: str) -> dict[str, Any] | None:
        q = sa.select(git_syncs).where(git_syncs.c.queue == queue).order_by(git_syncs.c.seq.desc())
        with self.engine.connect() as c:
            row = c.execute(q.limit(1)).first()
        return dict(row._mapping) if row else None

    # -- audit ----------------------------------------------------------------------

    def add_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as c:
                c.execute(audit.insert(), [dict(r) for r in rows])

    def audit_rows(
        self, *, user: str | None = None, before: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        q = sa.select(audit).order_by(audit.c.seq.desc()).limit(limit)
        if user is not None:
            q = q.where(audit.c.user == user)
        if before is not None:
            q = q.where(audit.c.seq < before)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    # -- webhooks -------------------------------------------------------------------

    def webhooks_due(self, now: float, limit: int = 50) -> list[dict[str, Any]]:
        """Ended jobs whose webhook is to be called now (never called, or due again)."""
        q = (
            sa.select(jobs)
            .where(
                jobs.c.callback_url.is_not(None),
                jobs.c.status.in_(list(TERMINAL)),
                sa.or_(jobs.c.webhook_status.is_(None), jobs.c.webhook_status == "PENDING"),
                sa.or_(jobs.c.webhook_next_at.is_(None), jobs.c.webhook_next_at <= now),
            )
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def claim_webhook(self, job_id: str, attempts: int, lease_until: float) -> bool:
        """Take the next delivery attempt of a job's webhook (False if another took it).

        The lease (``webhook_next_at``) makes the attempt due again if the gateway dies
        while it runs, so a delivery is never lost, at worst repeated.
        """
        with self.engine.begin() as c:
            return bool(
                c.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        sa.func.coalesce(jobs.c.webhook_attempts, 0) == attempts,
                        sa.or_(jobs.c.webhook_status.is_(None), jobs.c.webhook_status == "PENDING"),
                    )
                    .values(
                        webhook_status="PENDING",
                        webhook_attempts=attempts + 1,
                        webhook_next_at=lease_until,
                    )
                ).rowcount
            )
