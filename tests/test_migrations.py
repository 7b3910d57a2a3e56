"""Schema migrations: the migrated schema is exactly schema.py's, and an upgrade keeps the data."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from medgate.store import migrations
from medgate.store.db import Index
from medgate.store.instances import InstanceRecord
from medgate.store.schema import metadata
from medgate.store.status import JobStatus, OutboxStatus, StudyStatus


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
    study = index.studies.get("1.2.3")
    assert study is not None and study.status == StudyStatus.DONE
    index.outbox.add([("1.2.3.99", "1.2.3", "sr", "/r.dcm")])
    assert index.outbox.due()[0].refusals == 0
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
    assert index.instances.add(rec)


def test_a_database_made_at_0002_opens_with_every_row_readable(database_url: str) -> None:
    """Rows written by the release whose head was 0002 (one in every table, with the SQL that
    release ran) read back through the typed rows of this one."""
    engine = sa.create_engine(database_url)
    migrations.upgrade(engine, "0002")
    when = "2026-01-02 03:04:05+00:00"
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid,"
            " sop_class_uid, transfer_syntax_uid, modality, body_part, series_description,"
            " instance_number, calling_ae, received_at, size, sha256, path) VALUES ('2.1.1',"
            " '2.1', '2.1.0', '1.2.840.10008.5.1.4.1.1.1.1', '1.2.840.10008.1.2.1', 'DX', 'CHEST',"
            " 'PA', 1, 'CLINIC1', :t, 1234, :sha, '/s/2.1.1.dcm')",
            "INSERT INTO studies (study_instance_uid, status, received_at, last_instance_at,"
            " updated_at, priority, reason, result_json) VALUES ('2.1', 'done', :t, :t, :t,"
            ' \'urgent\', NULL, \'{"findings": [], "priority": "urgent"}\')',
            "INSERT INTO jobs (study_instance_uid, status, attempts, created_at, claimed_at,"
            " lease_until, claimed_by, finished_at, error) VALUES ('2.1', 'done', 1, :t, :t, NULL,"
            " 'host:MEDGATE:11112:store', :t, NULL)",
            "INSERT INTO outbox (sop_instance_uid, study_instance_uid, kind, path, status,"
            " attempts, refusals, next_attempt_at, created_at, sent_at, last_error) VALUES"
            " ('2.1.9', '2.1', 'sr', '/r/2.1.9.dcm', 'sent', 1, 0, :t, :t, :t, NULL)",
        ):
            conn.execute(sa.text(sql), {"t": when, "sha": "ab" * 32})
    engine.dispose()
    index = Index(database_url)  # opens = upgrades to every head of this release
    try:
        at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        instance = index.instances.get("2.1.1")
        assert instance == InstanceRecord(
            "2.1.1",
            "2.1",
            "2.1.0",
            "1.2.840.10008.5.1.4.1.1.1.1",
            "1.2.840.10008.1.2.1",
            1234,
            "ab" * 32,
            "/s/2.1.1.dcm",
            modality="DX",
            body_part="CHEST",
            series_description="PA",
            instance_number=1,
            calling_ae="CLINIC1",
            received_at=at,
        )
        study = index.studies.get("2.1")
        assert study is not None and study.status == StudyStatus.DONE
        assert (study.priority, study.instances, study.received_at) == ("urgent", 1, at)
        assert study.result == {"findings": [], "priority": "urgent"}
        (job,) = index.jobs.of_study("2.1")
        assert (job.status, job.attempts, job.finished_at) == (JobStatus.DONE, 1, at)
        (item,) = index.outbox.list(study_uid="2.1")
        assert (item.status, item.kind, item.sent_at) == (OutboxStatus.SENT, "sr", at)
        assert index.outbox.delivery("2.1").state == "delivered"
        # and the old rows take new work: the study re-opens, is queued and claimed
        rec = dataclasses.replace(instance, sop_instance_uid="2.1.2", received_at=None)
        assert index.instances.add(rec)
        index.jobs.enqueue("2.1")
        claimed = index.jobs.claim("new-release")
        assert claimed is not None and claimed.study_instance_uid == "2.1"
    finally:
        index.close()


def _stamp(engine: sa.Engine, revisions: list[str]) -> None:
    """Write ``alembic_version`` as a development build left it."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
        for revision in revisions:
            conn.execute(sa.text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})


def _version_rows(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def test_a_development_database_at_the_three_0003_branches_opens_at_0003(
    database_url: str,
) -> None:
    """Development builds made 0003's tables as three sibling revisions of 0002; such a
    database holds the same tables, so it is re-stamped, keeps its rows, and takes new work."""
    engine = sa.create_engine(database_url)
    migrations.upgrade(engine)
    _stamp(engine, sorted(migrations.BRANCHES_OF_0003))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO result_reports (study_instance_uid, status, issued_at)"
                " VALUES ('3.1', 'final', :t)"
            ),
            {"t": "2026-11-01 00:00:00+00:00"},
        )
    engine.dispose()
    index = Index(database_url)
    try:
        assert migrations.current_revisions(index.engine) == migrations.head_revisions()
        assert _version_rows(index.engine) == ["0003"]
        with index.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            stored = conn.execute(sa.text("SELECT status FROM result_reports")).scalars().all()
        assert diff == []
        assert stored == ["final"]
    finally:
        index.close()


def test_a_database_at_part_of_the_0003_branches_is_refused_unchanged(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    migrations.upgrade(engine)
    _stamp(engine, ["0003_deliveries", "0003_review"])
    with pytest.raises(migrations.MigrationError, match="0003_deliveries, 0003_review"):
        migrations.upgrade(engine)
    assert _version_rows(engine) == ["0003_deliveries", "0003_review"]
    engine.dispose()


def test_0003_downgrades_to_0002_and_upgrades_again(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    migrations.upgrade(engine)
    config = migrations.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    assert _version_rows(engine) == ["0002"]
    assert "deliveries" not in sa.inspect(engine).get_table_names()
    migrations.upgrade(engine)
    assert _version_rows(engine) == ["0003"]
    engine.dispose()
