"""The delivery queue and report status: rows of ``deliveries`` and ``result_reports``.

A delivery is one message to one destination (a site's HIS over HL7 v2). Its id is deterministic
(study, destination, result status), and its payload is stored when it is queued, so a restart
after ``kill -9`` resends the very same bytes under the same id and never makes a second message.
A row is claimed under a lease (a guarded ``UPDATE``, safe on SQLite and PostgreSQL), so two
senders never send it at once and a killed sender's row is taken up again when the lease ends.
Messages to one destination leave in the order they were queued: a final result never overtakes
the preliminary one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from medgate.store.engine import aware, utcnow
from medgate.store.queue import LeasedQueue
from medgate.store.rows import fetch_all, fetch_one, from_row
from medgate.store.schema import (
    deliveries,
    instances,
    outbox,
    result_reports,
    reviews,
    studies,
)

#: a message is held by the ``lease_until`` of its claim; ``next_attempt_at`` is its back-off
_QUEUE = LeasedQueue(deliveries, lease_column="lease_until", dead="dead-letter")


@dataclass(frozen=True)
class Message:
    """One message: where it goes and its exact bytes (as text)."""

    message_id: str
    study_instance_uid: str
    site: str
    destination: str
    channel: str
    result_status: str
    payload: str


@dataclass(frozen=True)
class NewDelivery(Message):
    """A message to queue (``status`` other than pending, with ``error``: stored refused)."""

    status: str = "pending"
    error: str | None = None


@dataclass(frozen=True)
class Delivery(Message):
    """A claimed message, ready to send."""

    id: int
    attempts: int
    refusals: int


class DeliveryStore:
    """Reads and writes the delivery queue and the report status through one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ queueing
    def enqueue(self, rows: Sequence[NewDelivery], conn: Connection | None = None) -> int:
        """Queue messages whose id is not queued yet; returns how many were added."""
        if conn is None:
            with self.engine.begin() as own:
                return self.enqueue(rows, own)
        added = 0
        now = utcnow()
        for row in rows:
            exists = conn.execute(
                sa.select(deliveries.c.id).where(deliveries.c.message_id == row.message_id)
            ).first()
            if exists is not None:
                continue
            columns = dataclasses.asdict(row)
            _QUEUE.insert(conn, now, last_error=columns.pop("error"), **columns)
            added += 1
        return added

    def results_without_report(self, limit: int = 100) -> list[dict[str, Any]]:
        """``done`` studies with a result that have no report status yet (nothing queued)."""
        query = (
            _BUILT.select_from(
                studies.outerjoin(
                    result_reports,
                    result_reports.c.study_instance_uid == studies.c.study_instance_uid,
                )
            )
            .where(result_reports.c.study_instance_uid.is_(None))
            .order_by(studies.c.updated_at)
            .limit(limit)
        )
        return fetch_all(self.engine.connect, query, _built)

    def reviewed_not_final(self, limit: int = 100) -> list[dict[str, Any]]:
        """Studies whose latest review (``reviews``) is stored but whose report is not final
        yet: (uid, reviewer_id, verdicts, revision), oldest review first."""
        return self._latest_reviews(
            sa.or_(result_reports.c.status.is_(None), result_reports.c.status == "preliminary"),
            limit,
        )

    def reviewed_since_final(self, limit: int = 100) -> list[dict[str, Any]]:
        """Studies whose latest review was stored after their result was made final (an
        amended review): (uid, reviewer_id, verdicts, revision)."""
        return self._latest_reviews(
            sa.and_(
                result_reports.c.status.in_(("final", "amended")),
                reviews.c.created_at > result_reports.c.final_at,
            ),
            limit,
        )

    def _latest_reviews(self, condition: Any, limit: int) -> list[dict[str, Any]]:
        latest = (
            sa.select(
                reviews.c.study_instance_uid.label("uid"),
                sa.func.max(reviews.c.revision).label("revision"),
            )
            .group_by(reviews.c.study_instance_uid)
            .subquery()
        )
        query = (
            sa.select(
                reviews.c.study_instance_uid,
                reviews.c.reviewer_id,
                reviews.c.verdicts_json,
                reviews.c.revision,
            )
            .join(
                latest,
                sa.and_(
                    latest.c.uid == reviews.c.study_instance_uid,
                    latest.c.revision == reviews.c.revision,
                ),
            )
            .outerjoin(
                result_reports,
                result_reports.c.study_instance_uid == reviews.c.study_instance_uid,
            )
            .where(condition)
            .order_by(reviews.c.created_at)
            .limit(limit)
        )
        return fetch_all(self.engine.connect, query, _review)

    def built_results(self, study_uid: str | None = None) -> list[dict[str, Any]]:
        """``done`` studies with a result (uid, result, updated_at), oldest first."""
        query = _BUILT.order_by(studies.c.received_at)
        if study_uid is not None:
            query = query.where(studies.c.study_instance_uid == study_uid)
        return fetch_all(self.engine.connect, query, _built)

    def record_preliminary(
        self, study_uid: str, rows: Sequence[NewDelivery], issued_at: dt.datetime | None = None
    ) -> int:
        """Mark the study's result preliminary and queue its messages in one transaction."""
        with self.engine.begin() as conn:
            if _report_status(conn, study_uid) is None:
                conn.execute(
                    result_reports.insert().values(
                        study_instance_uid=study_uid,
                        status="preliminary",
                        issued_at=issued_at or utcnow(),
                    )
                )
            return self.enqueue(rows, conn)

    def record_final(
        self,
        study_uid: str,
        rows: Sequence[NewDelivery],
        *,
        verified_by: str | None,
        final_result: dict[str, Any] | None,
    ) -> int:
        """Mark the study's result final (after review) and queue its messages in one
        transaction; a second call keeps the first verdict and queues nothing new."""
        now = utcnow()
        payload = json.dumps(final_result) if final_result is not None else None
        with self.engine.begin() as conn:
            status = _report_status(conn, study_uid)
            if status is None:
                conn.execute(
                    result_reports.insert().values(
                        study_instance_uid=study_uid,
                        status="final",
                        issued_at=now,
                        final_at=now,
                        verified_by=verified_by,
                        final_result_json=payload,
                    )
                )
            elif status != "final":
                _verify(conn, study_uid, "final", verified_by, payload, now)
            return self.enqueue(rows, conn)

    def record_amended(
        self,
        study_uid: str,
        rows: Sequence[NewDelivery],
        *,
        verified_by: str | None,
        amended_result: dict[str, Any],
    ) -> int:
        """A review amended after the final result: the report becomes ``amended`` with the new
        verified result, and the correction messages are queued, in one transaction."""
        with self.engine.begin() as conn:
            _verify(conn, study_uid, "amended", verified_by, json.dumps(amended_result), utcnow())
            return self.enqueue(rows, conn)

    def report(self, study_uid: str) -> dict[str, Any] | None:
        """The study's report status row (``preliminary`` or ``final``), or None."""
        query = sa.select(result_reports).where(result_reports.c.study_instance_uid == study_uid)
        return fetch_one(self.engine.connect, query, _report_row)

    def reports(self) -> dict[str, dict[str, Any]]:
        """Every study's report status, by StudyInstanceUID."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(result_reports)).mappings().all()
        return {r["study_instance_uid"]: _report_row(r) for r in rows}

    # ------------------------------------------------------------------ sending
    def claim_due(
        self, limit: int = 20, lease_seconds: float = 60.0, now: dt.datetime | None = None
    ) -> list[Delivery]:
        """Claim pending messages that are due, oldest first, at most one per destination
        and study at a time (order kept); each claim is a guarded UPDATE, so a message is
        held by one sender only."""
        now = now or utcnow()
        earlier = deliveries.alias("earlier")
        waiting_behind = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.study_instance_uid == deliveries.c.study_instance_uid,
                earlier.c.destination == deliveries.c.destination,
                earlier.c.status == "pending",
                earlier.c.id < deliveries.c.id,
            )
            .exists()
        )
        free = sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now)
        query = _QUEUE.due(now, free, ~waiting_behind).limit(limit)
        lease_until = now + dt.timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            rows = conn.execute(query).mappings().all()
            return [
                from_row(Delivery, row)
                for row in rows
                if _QUEUE.take(conn, row["id"], lease_until, free)
            ]

    def delivered(self, delivery_id: int, ack_code: str) -> None:
        with self.engine.begin() as conn:
            _QUEUE.attempted(
                conn,
                delivery_id,
                status="delivered",
                delivered_at=utcnow(),
                ack_code=ack_code,
                last_error=None,
            )

    def retry(
        self,
        delivery_id: int,
        delay_seconds: float,
        error: str,
        *,
        refused: bool,
        ack_code: str | None = None,
    ) -> None:
        retry_at = utcnow() + dt.timedelta(seconds=delay_seconds)
        with self.engine.begin() as conn:
            _QUEUE.attempted(
                conn,
                delivery_id,
                retry_at=retry_at,
                refused=refused,
                ack_code=ack_code,
                last_error=error[:1000],
            )

    def dead(self, delivery_id: int, error: str, ack_code: str | None = None) -> None:
        with self.engine.begin() as conn:
            _QUEUE.attempted(
                conn,
                delivery_id,
                status="dead-letter",
                refused=True,
                ack_code=ack_code,
                last_error=error[:1000],
            )

    # ------------------------------------------------------------------ reading
    def for_study(self, study_uid: str) -> list[dict[str, Any]]:
        """The study's deliveries (without payloads), oldest first."""
        return self.entries(study_uid=study_uid)

    def entries(
        self, study_uid: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        columns = [c for c in deliveries.c if c.name != "payload"]
        query = sa.select(*columns).order_by(deliveries.c.id)
        if study_uid is not None:
            query = query.where(deliveries.c.study_instance_uid == study_uid)
        if status is not None:
            query = query.where(deliveries.c.status == status)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            for key in ("next_attempt_at", "lease_until", "created_at", "delivered_at"):
                row[key] = aware(row[key])
        return rows

    def destination_states(self, study_uid: str) -> dict[str, dict[str, Any]]:
        """Where the study's messages stand, per destination, in the shape of the PACS's
        (``state``, ``objects``, ``confirmed``, ``confirmed_at``): ``dead-letter`` if any
        message was dead-lettered, else ``pending`` while any waits, else ``delivered``."""
        states: dict[str, dict[str, Any]] = {}
        for row in self.for_study(study_uid):
            entry = states.setdefault(
                row["destination"],
                {"state": "delivered", "objects": 0, "confirmed": 0, "confirmed_at": None},
            )
            entry["objects"] += 1
            if row["status"] == "delivered":
                entry["confirmed"] += 1
                at = row["delivered_at"]
                if at is not None and (entry["confirmed_at"] is None or at > entry["confirmed_at"]):
                    entry["confirmed_at"] = at
            elif row["status"] == "dead-letter":
                entry["state"] = "dead-letter"
            elif entry["state"] != "dead-letter":
                entry["state"] = "pending"
        for entry in states.values():
            at = entry["confirmed_at"]
            entry["confirmed_at"] = at.isoformat() if at is not None else None
        return states

    def calling_aes(self, study_uids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Calling AE titles that sent each study's instances (the study's site comes from
        them), for the given studies or all."""
        query = sa.select(instances.c.study_instance_uid, instances.c.calling_ae).distinct()
        if study_uids is not None:
            query = query.where(instances.c.study_instance_uid.in_(list(study_uids)))
        result: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for uid, ae in conn.execute(query):
                result.setdefault(uid, set())
                if ae:
                    result[uid].add(ae.strip())
        return result

    def result_files(self, study_uid: str) -> list[dict[str, str]]:
        """The study's result objects in the outbox (UID, kind, file), in the order queued."""
        query = (
            sa.select(outbox.c.sop_instance_uid, outbox.c.kind, outbox.c.path)
            .where(outbox.c.study_instance_uid == study_uid)
            .order_by(outbox.c.id)
        )
        with self.engine.connect() as conn:
            return [
                {"sop_instance_uid": r.sop_instance_uid, "kind": r.kind, "path": r.path}
                for r in conn.execute(query)
            ]

    def payloads(self, study_uid: str, destination: str) -> list[str]:
        """The queued texts of every message of a study to one destination, oldest first."""
        query = (
            sa.select(deliveries.c.payload)
            .where(
                deliveries.c.study_instance_uid == study_uid,
                deliveries.c.destination == destination,
            )
            .order_by(deliveries.c.id)
        )
        with self.engine.connect() as conn:
            return [str(payload) for (payload,) in conn.execute(query)]

    def first_instance_paths(self, study_uids: Iterable[str]) -> dict[str, str]:
        """The first received instance's file of each study (one query)."""
        first = (
            sa.select(
                instances.c.study_instance_uid,
                instances.c.path,
                sa.func.row_number()
                .over(
                    partition_by=instances.c.study_instance_uid,
                    order_by=(instances.c.received_at, instances.c.sop_instance_uid),
                )
                .label("n"),
            )
            .where(instances.c.study_instance_uid.in_(list(study_uids)))
            .subquery()
        )
        query = sa.select(first.c.study_instance_uid, first.c.path).where(first.c.n == 1)
        with self.engine.connect() as conn:
            return {str(uid): str(path) for uid, path in conn.execute(query)}

    def first_instance_path(self, study_uid: str) -> str | None:
        """The file of the study's first received instance (its header names the patient)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(instances.c.path)
                .where(instances.c.study_instance_uid == study_uid)
                .order_by(instances.c.received_at, instances.c.sop_instance_uid)
                .limit(1)
            ).first()
        return str(row.path) if row is not None else None


#: ``done`` studies with a result: (uid, result, updated_at) rows, read by ``_built``
_BUILT = sa.select(studies.c.study_instance_uid, studies.c.result_json, studies.c.updated_at).where(
    studies.c.status == "done", studies.c.result_json.is_not(None)
)


def _built(row: Any) -> dict[str, Any]:
    return {
        "study_instance_uid": row["study_instance_uid"],
        "result": json.loads(row["result_json"]),
        "updated_at": aware(row["updated_at"]),
    }


def _review(row: Any) -> dict[str, Any]:
    return {
        "study_instance_uid": row["study_instance_uid"],
        "reviewer_id": row["reviewer_id"],
        "verdicts": json.loads(row["verdicts_json"]),
        "revision": int(row["revision"]),
    }


def _report_status(conn: Connection, study_uid: str) -> str | None:
    """The study's report status, None before its first report."""
    query = sa.select(result_reports.c.status).where(
        result_reports.c.study_instance_uid == study_uid
    )
    return conn.execute(query).scalar()


def _verify(
    conn: Connection,
    study_uid: str,
    status: str,
    verified_by: str | None,
    result_json: str | None,
    now: dt.datetime,
) -> None:
    """Record the reviewed result (``final`` or ``amended``) of a study's report."""
    conn.execute(
        result_reports.update()
        .where(result_reports.c.study_instance_uid == study_uid)
        .values(status=status, final_at=now, verified_by=verified_by, final_result_json=result_json)
    )


def _report_row(row: Any) -> dict[str, Any]:
    data = dict(row)
    for key in ("issued_at", "final_at"):
        data[key] = aware(data.get(key))
    raw = data.pop("final_result_json", None)
    data["final_result"] = json.loads(raw) if raw else None
    return data
