"""The gateway's database across versions: columns a newer gateway defines are added."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="the gateway's extra: pip install 'mrk8s[gateway]'")


def test_an_older_database_gets_the_new_columns(tmp_path):
    """A state directory of a gateway from before ``jobs.handle`` (nullable) and
    ``jobs.launches`` (NOT NULL, default 0): both are added, the old rows get the default."""
    import sqlalchemy as sa

    from mrk8s.gateway import state as st

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.MetaData()
    columns = [c for c in st.jobs.columns if c.name not in ("handle", "launches")]
    sa.Table("jobs", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key) for c in columns])
    engine = sa.create_engine(url)
    old.create_all(engine)
    row = {c.name: "x" for c in columns if isinstance(c.type, sa.String | sa.Text)}
    with engine.begin() as c:
        c.execute(old.tables["jobs"].insert().values(**row, created_at=1.0, spec={}))
    engine.dispose()

    db = st.State(url)
    try:
        have = {c["name"] for c in sa.inspect(db.engine).get_columns("jobs")}
        assert {"handle", "launches"} <= have
        job = db.job("x")
        assert job is not None and job["launches"] == 0 and job["handle"] is None
        assert st.add_missing_columns(db.engine) == []  # nothing left to add
    finally:
        db.close()
