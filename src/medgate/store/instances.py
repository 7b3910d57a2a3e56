"""The instances table: one row per stored instance, written before C-STORE success.

There is one write path for an instance row, ``InstanceIndex.add``: an ``INSERT ... ON CONFLICT
DO NOTHING RETURNING`` of the instance plus the study upsert (``studies.receiving_upsert``), in
one transaction. On an SQLite file the two statements run, compiled once by SQLAlchemy, on a
dedicated ``sqlite3`` connection (``medgate.store.sqlite_hot_path``: 0.51 -> 0.57x storescp in
``bench/ingest.py``); on PostgreSQL and in-memory SQLite, the same statements run through
SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from medgate.store.engine import Database, aware, sqlite_pragmas, utcnow
from medgate.store.schema import instances, studies
from medgate.store.sqlite_hot_path import CompiledStatement, SqliteHotPath
from medgate.store.status import StudyStatus
from medgate.store.studies import receiving_upsert


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance: what the receiver indexes and what a read returns."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    sha256: str
    path: str
    modality: str | None = None
    body_part: str | None = None
    series_description: str | None = None
    instance_number: int | None = None
    calling_ae: str | None = None
    received_at: dt.datetime | None = None


COLUMNS = [f.name for f in fields(InstanceRecord)]


def _record(row: Any) -> InstanceRecord:
    data = {name: row[name] for name in COLUMNS}
    data["received_at"] = aware(data["received_at"])
    return InstanceRecord(**data)


def _insert_ignoring_duplicates(dialect_name: str) -> sa.Insert:
    # RETURNING, not rowcount: psycopg reports rowcount -1 for an INSERT ... ON CONFLICT DO
    # NOTHING, which made a duplicate look newly inserted on PostgreSQL
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return (
        insert(instances)
        .on_conflict_do_nothing(index_elements=[instances.c.sop_instance_uid])
        .returning(instances.c.sop_instance_uid)
    )


class InstanceIndex:
    """Writes and reads of instance rows."""

    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = db.engine.dialect
        self._insert = _insert_ignoring_duplicates(dialect.name)
        self._upsert_study = receiving_upsert(dialect.name)
        self._hot: SqliteHotPath | None = None
        self._hot_insert: CompiledStatement | None = None
        self._hot_upsert: CompiledStatement | None = None
        database = db.engine.url.database
        if (
            db.is_sqlite
            and database
            and database != ":memory:"
            and not database.startswith("file:")
        ):
            self._hot = SqliteHotPath(database, sqlite_pragmas)
            self._hot_insert = CompiledStatement(self._insert, dialect, COLUMNS)
            self._hot_upsert = CompiledStatement(self._upsert_study, dialect)

    def close(self) -> None:
        if self._hot is not None:
            self._hot.close()
            self._hot = None

    def add(self, rec: InstanceRecord) -> bool:
        """Index a stored instance and (re)open its study as ``receiving``; False (and nothing
        touched) when the SOP Instance UID is already indexed."""
        now = rec.received_at or utcnow()
        row = dict(rec.__dict__, received_at=now)  # not asdict: it deep-copies, per instance
        study = {"uid": rec.study_instance_uid, "now": now}
        hot = self._hot
        if hot is not None and self._hot_insert is not None and self._hot_upsert is not None:
            with self.db.write_lock:
                return hot.run(
                    [(self._hot_insert, row), (self._hot_upsert, study)], stop_on_empty=0
                )
        with self.db.write() as conn:
            if conn.execute(self._insert, row).first() is None:
                return False
            conn.execute(self._upsert_study, study)
            return True

    def replace(self, rec: InstanceRecord) -> None:
        """Overwrite an instance's row (``dicom.overwrite_duplicates``): the delete and ``add``'s
        two statements in one transaction."""
        now = rec.received_at or utcnow()
        with self.db.write() as conn:
            conn.execute(
                instances.delete().where(instances.c.sop_instance_uid == rec.sop_instance_uid)
            )
            conn.execute(self._insert, dict(asdict(rec), received_at=now))
            conn.execute(self._upsert_study, {"uid": rec.study_instance_uid, "now": now})

    def get(self, sop_instance_uid: str) -> InstanceRecord | None:
        with self.db.read() as conn:
            row = (
                conn.execute(
                    sa.select(instances).where(instances.c.sop_instance_uid == sop_instance_uid)
                )
                .mappings()
                .first()
            )
            return _record(row) if row else None

    def of_study(self, study_uid: str) -> list[InstanceRecord]:
        """A study's instances by series, then instance number."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(instances)
                .where(instances.c.study_instance_uid == study_uid)
                .order_by(instances.c.series_instance_uid, instances.c.instance_number)
            ).mappings()
            return [_record(r) for r in rows]

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar_one())

    def latest(self, limit: int) -> list[InstanceRecord]:
        """The ``limit`` most recently received instances (newest first)."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(instances).order_by(instances.c.received_at.desc()).limit(limit)
            ).mappings()
            return [_record(r) for r in rows]

    def delete(self, sop_instance_uid: str) -> bool:
        """Remove an instance's row (its file is gone); a study left empty is removed too."""
        with self.db.write() as conn:
            study = conn.execute(
                sa.select(instances.c.study_instance_uid).where(
                    instances.c.sop_instance_uid == sop_instance_uid
                )
            ).scalar()
            if study is None:
                return False
            conn.execute(instances.delete().where(instances.c.sop_instance_uid == sop_instance_uid))
            left = conn.execute(
                sa.select(sa.func.count())
                .select_from(instances)
                .where(instances.c.study_instance_uid == study)
            ).scalar_one()
            if not left:
                conn.execute(
                    studies.delete().where(
                        studies.c.study_instance_uid == study,
                        studies.c.status == StudyStatus.RECEIVING.value,
                    )
                )
            return True
