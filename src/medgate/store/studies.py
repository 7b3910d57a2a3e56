"""The studies table: one row per study, its status in the pipeline and its result JSON.

A study row is created (or set back to ``receiving``) by the instance write
(``InstanceIndex.add``, which runs ``receiving_upsert``); the job queue moves it on
(``medgate.store.jobs``). This module reads studies and sets a status by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from medgate.store.engine import Database, utcnow
from medgate.store.rows import fetch_all, fetch_one, from_row
from medgate.store.schema import instances, studies
from medgate.store.status import StudyStatus


@dataclass(frozen=True)
class StudyRow:
    """A study as the API, the worklist and the CLI show it."""

    study_instance_uid: str
    status: StudyStatus
    received_at: dt.datetime
    last_instance_at: dt.datetime
    updated_at: dt.datetime
    instances: int
    priority: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None

    @property
    def results_built_at(self) -> dt.datetime | None:
        """When the result objects were committed with the outbox (``JobQueue.complete``)."""
        stamp = (self.result or {}).get("results_built_at")
        return dt.datetime.fromisoformat(stamp) if stamp else None


def receiving_upsert(dialect_name: str) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO UPDATE`` that opens a study or sets it back to ``receiving``
    (parameters ``uid`` and ``now``), run in the same transaction as the instance row."""
    now: sa.BindParameter[dt.datetime] = sa.bindparam("now")
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    new_study = insert(studies).values(
        study_instance_uid=sa.bindparam("uid"),
        status=StudyStatus.RECEIVING.value,
        received_at=now,
        last_instance_at=now,
        updated_at=now,
    )
    return new_study.on_conflict_do_update(
        index_elements=[studies.c.study_instance_uid],
        set_={
            "status": StudyStatus.RECEIVING.value,
            "last_instance_at": new_study.excluded.last_instance_at,
            "updated_at": new_study.excluded.updated_at,
        },
    )


def set_status(
    conn: Connection,
    study_uid: str,
    status: StudyStatus,
    now: dt.datetime,
    *,
    reason: str | None = None,
    priority: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Set a study's status (and reason, priority, result) inside the caller's transaction."""
    values: dict[str, Any] = {
        "status": StudyStatus(status).value,
        "updated_at": now,
        "reason": reason,
    }
    if priority is not None:
        values["priority"] = priority
    if result is not None:
        values["result_json"] = json.dumps(result)
    conn.execute(studies.update().where(studies.c.study_instance_uid == study_uid).values(**values))


#: every study column and its instance count (one indexed count per study row)
_WITH_COUNT = sa.select(
    studies,
    sa.select(sa.func.count())
    .where(instances.c.study_instance_uid == studies.c.study_instance_uid)
    .scalar_subquery()
    .label("instances"),
)


def _row(data: Any) -> StudyRow:
    raw = data["result_json"]
    return from_row(
        StudyRow,
        data,
        status=StudyStatus(data["status"]),
        instances=int(data["instances"]),
        result=json.loads(raw) if raw else None,
    )


class StudyIndex:
    """Reads of the studies table, with each study's instance count."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, study_uid: str) -> StudyRow | None:
        query = _WITH_COUNT.where(studies.c.study_instance_uid == study_uid)
        return fetch_one(self.db.read, query, _row)

    def list(self, status: StudyStatus | str | None = None, limit: int = 1000) -> list[StudyRow]:
        """Studies oldest first, optionally only those in ``status``."""
        query = _WITH_COUNT.order_by(studies.c.received_at).limit(limit)
        if status:
            query = query.where(studies.c.status == StudyStatus(status).value)
        return fetch_all(self.db.read, query, _row)

    def set_status(
        self,
        study_uid: str,
        status: StudyStatus | str,
        *,
        reason: str | None = None,
        priority: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        """Set a status by hand (the job queue sets it together with the job's own state)."""
        with self.db.write() as conn:
            set_status(
                conn,
                study_uid,
                StudyStatus(status),
                utcnow(),
                reason=reason,
                priority=priority,
                result=result,
            )
