"""The notifications table: critical-result messages, one row per study and channel.

The row is the message's durable record: it is created before anything is sent (so a kill -9
loses nothing: the loop finds it pending after a restart), claimed with a lease before sending (so
two loops never send it at once), and marked ``sent`` right after the channel accepted it. The
unique (study, channel) pair means a study is announced at most once per channel, however often
the loop restarts. Escalation creates the next channel's row and clears ``escalate_at`` of the
current one in one transaction; an acknowledgement marks every row of the study.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from medgate.store.engine import utcnow
from medgate.store.queue import LeasedQueue
from medgate.store.rows import fetch_all, fetch_one, from_row
from medgate.store.schema import notifications, reviews, studies

_QUEUE = LeasedQueue(notifications, error_chars=500)


@dataclass(frozen=True)
class Notification:
    id: int
    study_instance_uid: str
    channel: str
    step: int
    token: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    escalate_at: dt.datetime | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    last_error: str | None


def _queue(
    conn: Connection,
    study_uid: str,
    channel: str,
    step: int,
    token: str,
    payload: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Queue one message (the unique study and channel pair refuses a second one)."""
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
    _QUEUE.insert(
        conn,
        now,
        study_instance_uid=study_uid,
        channel=channel,
        step=step,
        token=token,
        payload=text,
    )


def _row(data: Any) -> Notification:
    return from_row(Notification, data, payload=json.loads(data["payload"]))


class NotificationStore:
    """Reads and moves notification rows; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ creating
    def create(
        self,
        study_uid: str,
        channel: str,
        step: int,
        token: str,
        payload: dict[str, Any],
        now: dt.datetime | None = None,
    ) -> bool:
        """Queue a message unless the study already has one on ``channel``; True if added."""
        try:
            with self.engine.begin() as conn:
                _queue(conn, study_uid, channel, step, token, payload, now or utcnow())
        except IntegrityError:
            return False
        return True

    def critical_without_notification(
        self, since: dt.datetime | None = None, limit: int = 100
    ) -> list[str]:
        """Studies triaged ``critical`` whose results are built (since ``since``), that have no
        message yet and that no radiologist has reviewed already."""
        have = sa.select(notifications.c.study_instance_uid)
        reviewed = sa.select(reviews.c.study_instance_uid)
        conditions = [
            studies.c.priority == "critical",
            studies.c.result_json.is_not(None),
            studies.c.study_instance_uid.not_in(have),
            studies.c.study_instance_uid.not_in(reviewed),
        ]
        if since is not None:
            conditions.append(studies.c.updated_at >= since)
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(studies.c.study_instance_uid)
                    .where(*conditions)
                    .order_by(studies.c.updated_at)
                    .limit(limit)
                ).scalars()
            )

    # ------------------------------------------------------------------ sending
    def claim_due(self, lease_seconds: float, now: dt.datetime | None = None) -> list[Notification]:
        """Pending messages that are due, each claimed by moving its ``next_attempt_at`` past a
        lease (a row another loop moved first is not returned)."""
        now = now or utcnow()
        lease = now + dt.timedelta(seconds=lease_seconds)
        return [_row(data) for data in _QUEUE.take_due(self.engine, now, lease)]

    def sent(
        self, item_id: int, escalate_at: dt.datetime | None, now: dt.datetime | None = None
    ) -> None:
        with self.engine.begin() as conn:
            _QUEUE.attempted(
                conn,
                item_id,
                _QUEUE.is_pending(),
                status="sent",
                sent_at=now or utcnow(),
                escalate_at=escalate_at,
                last_error=None,
            )

    def failed(
        self, item_id: int, error: str, retry_at: dt.datetime | None, now: dt.datetime | None = None
    ) -> None:
        """A failed send: retried at ``retry_at``, or dead (escalated at once) when None."""
        escalate = {"escalate_at": now or utcnow()} if retry_at is None else {}
        with self.engine.begin() as conn:
            _QUEUE.failed(conn, item_id, error, retry_at, _QUEUE.is_pending(), **escalate)

    # ------------------------------------------------------------------ escalation and ack
    def escalations_due(self, now: dt.datetime | None = None) -> list[Notification]:
        """Sent (or dead) messages past their ``escalate_at`` whose study nobody acknowledged."""
        now = now or utcnow()
        acked = sa.select(notifications.c.study_instance_uid).where(
            notifications.c.acknowledged_at.is_not(None)
        )
        query = (
            sa.select(notifications)
            .where(
                notifications.c.status.in_(("sent", "dead")),
                notifications.c.escalate_at.is_not(None),
                notifications.c.escalate_at <= now,
                notifications.c.study_instance_uid.not_in(acked),
            )
            .order_by(notifications.c.id)
        )
        return fetch_all(self.engine.connect, query, _row)

    def escalate(
        self,
        current: Notification,
        channel: str | None,
        token: str,
        payload: dict[str, Any],
        now: dt.datetime | None = None,
    ) -> bool:
        """Stop ``current`` escalating and, when ``channel`` is given, queue the message there;
        one transaction, so a crash neither loses nor doubles the escalation."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            cleared = conn.execute(
                notifications.update()
                .where(notifications.c.id == current.id, notifications.c.escalate_at.is_not(None))
                .values(escalate_at=None)
            ).rowcount
            if cleared != 1 or channel is None:
                return False
            exists = conn.execute(
                sa.select(notifications.c.id).where(
                    notifications.c.study_instance_uid == current.study_instance_uid,
                    notifications.c.channel == channel,
                )
            ).first()
            if exists is not None:
                return False
            _queue(conn, current.study_instance_uid, channel, current.step + 1, token, payload, now)
        return True

    def acknowledge(
        self,
        *,
        item_id: int | None = None,
        token: str | None = None,
        by: str,
        now: dt.datetime | None = None,
    ) -> Notification | None:
        """Acknowledge the study of one message (by id or by its link's token): every message of
        that study stops escalating. None when no message matches."""
        condition = (
            notifications.c.id == item_id if item_id is not None else notifications.c.token == token
        )
        now = now or utcnow()
        with self.engine.begin() as conn:
            data = conn.execute(sa.select(notifications).where(condition)).mappings().first()
            if data is None:
                return None
            conn.execute(
                notifications.update()
                .where(
                    notifications.c.study_instance_uid == data["study_instance_uid"],
                    notifications.c.acknowledged_at.is_(None),
                )
                .values(acknowledged_at=now, acknowledged_by=by[:128], escalate_at=None)
            )
            conn.execute(
                notifications.update()
                .where(
                    notifications.c.study_instance_uid == data["study_instance_uid"],
                    notifications.c.status.in_(("sent", "pending")),
                )
                .values(status="acknowledged")  # an unsent one is no longer needed
            )
            fresh = (
                conn.execute(sa.select(notifications).where(notifications.c.id == data["id"]))
                .mappings()
                .first()
            )
        return _row(fresh)

    def by_token(self, token: str) -> Notification | None:
        query = sa.select(notifications).where(notifications.c.token == token)
        return fetch_one(self.engine.connect, query, _row)

    def of_study(self, study_uid: str) -> list[Notification]:
        query = (
            sa.select(notifications)
            .where(notifications.c.study_instance_uid == study_uid)
            .order_by(notifications.c.step)
        )
        return fetch_all(self.engine.connect, query, _row)
