"""The gateway's database across versions: columns a newer gateway defines are added."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="the gateway's extra: pip install 'mrk8s[gateway]'")


def test_an_older_database_gets_the_new_handle_column(tmp_path):
    """A state directory of a gateway from before ``jobs.handle``: the column is added."""
    import sqlalchemy as sa

    from mrk8s.gateway import state as st

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.MetaData()
    columns = [c for c in st.jobs.columns if c.name != "handle"]
    sa.Table("jobs", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key) for c in columns])
    engine = sa.create_engine(url)
    old.create_all(engine)
    assert "handle" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    engine.dispose()

    db = st.State(url)
    try:
        assert "handle" in {c["name"] for c in sa.inspect(db.engine).get_columns("jobs")}
        assert st.add_missing_columns(db.engine) == []  # nothing left to add
    finally:
        db.close()
