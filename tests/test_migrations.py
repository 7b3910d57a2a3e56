"""Schema migrations: the migrated schema is exactly db.py's, and an upgrade keeps the data."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from medgate.store import migrations
from medgate.store.db import Index, InstanceRecord, metadata


def test_migrated_schema_matches_the_tables_the_code_queries(database_url: str) -> None:
    index = Index(database_url)
    with index.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert migrations.current_revisions(index.engine) == migrations.head_revisions()


def test_upgrade_from_the_first_revision_keeps_stored_rows(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    migrations.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO studies (study_instance_uid, status, received_at, last_instance_at,"
                " updated_at) VALUES ('1.2.3', 'done', :t, :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
    engine.dispose()
    index = Index(database_url)  # opens = upgrades to head
    assert migrations.current_revisions(index.engine) == migrations.head_revisions()
    assert index.get_study("1.2.3")["status"] == "done"
    index.add_to_outbox([("1.2.3.99", "1.2.3", "sr", "/r.dcm")])
    assert index.due_outbox()[0].refusals == 0
    rec = InstanceRecord(
        "1.2.3.1",
        "1.2.3",
        "1.2.3.9",
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.1.2.1",
        1,
        "0" * 64,
        "/x.dcm",
    )
    assert index.record_instance(rec)
