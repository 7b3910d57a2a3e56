"""Referrals between a primary-care site and the hospital it refers to (双向转诊).

A referral is one row (the ServiceRequest and its Task's status) and a history of events, one per
change. Its status moves as a state machine::

    requested ──▶ accepted ──▶ completed   (the hospital's follow-up plan goes back down)
        │             │
        ├──▶ rejected ◀┘                   (with a reason)
        └──▶ cancelled ◀── accepted        (withdrawn by the referring site)

Every change writes its event in the same transaction as the status, with the notification the
change sends to the other side (which side, which ``[[notify.channels]]``, and a payload that
holds no patient identifier) queued once per channel (``referral_notifications``, sent by
``delivery.referral_notify``), so the history and what is announced can never disagree. A
change is checked against the row's ``version`` so two people updating one referral at once
cannot overwrite each other: the second gets ``StaleReferral``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from medgate.store.engine import utcnow
from medgate.store.queue import LeasedQueue
from medgate.store.rows import from_row
from medgate.store.schema import referral_events, referral_notifications, referrals

Status = Literal["requested", "accepted", "completed", "rejected", "cancelled"]
Urgency = Literal["routine", "urgent", "asap", "stat"]
Side = Literal["clinic", "hospital"]

#: status -> the statuses it may move to
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "requested": ("accepted", "rejected", "cancelled"),
    "accepted": ("completed", "rejected", "cancelled"),
    "completed": (),
    "rejected": (),
    "cancelled": (),
}
#: who makes each change: the receiving hospital answers, the referring site withdraws
MADE_BY: dict[str, Side] = {
    "requested": "clinic",
    "accepted": "hospital",
    "rejected": "hospital",
    "completed": "hospital",
    "cancelled": "clinic",
}


class ReferralError(Exception):
    """A change the referral's state does not allow; the message is safe to show."""


class IllegalTransition(ReferralError):
    """The referral's current status cannot move to the one asked for."""


class MissingField(ReferralError):
    """The change needs a field it did not get (a rejection's reason, the follow-up plan)."""


class StaleReferral(ReferralError):
    """Somebody else changed the referral since the caller read it."""


@dataclass(frozen=True)
class Evidence:
    """Why the patient is referred: a finding, a score, a study or an observation."""

    kind: Literal["finding", "score", "study", "observation"]
    display: str
    value: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class NewReferral:
    site: str | None
    patient_id: str
    patient_key: str
    urgency: Urgency
    reason: str
    requester: str
    evidence: Sequence[Evidence] = ()
    study_instance_uid: str | None = None
    performer: str | None = None
    origin: Literal["api", "cds", "review"] = "api"
    origin_ref: str | None = None


@dataclass(frozen=True)
class ReferralEvent:
    seq: int
    status: str
    actor: str
    note: str | None
    notify_side: str
    notify_channels: list[str]
    notify_payload: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class Referral:
    id: str
    site: str | None
    patient_id: str
    patient_key: str
    status: str
    urgency: str
    reason: str
    evidence: list[Evidence]
    study_instance_uid: str | None
    origin: str
    origin_ref: str | None
    requester: str
    performer: str | None
    status_reason: str | None
    follow_up_plan: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    events: list[ReferralEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Notification:
    """What one change announces, to which side, on which channels (no patient identifier)."""

    side: Side
    channels: list[str]
    payload: dict[str, Any]


def notification_for(
    referral_id: str, site: str | None, status: str, urgency: str, channels: list[str]
) -> Notification:
    """The message a change sends to the side that did not make it."""
    side: Side = "hospital" if MADE_BY[status] == "clinic" else "clinic"
    payload = {
        "kind": "referral",
        "referral": referral_id,
        "status": status,
        "urgency": urgency,
        "site": site,
        "to": side,
    }
    return Notification(side, channels, payload)


_QUEUE = LeasedQueue(referral_notifications, error_chars=500)
_SQLITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _writer_lock(engine: Engine) -> AbstractContextManager[Any]:
    """SQLite: one writer per engine in this process (a read-then-write transaction that loses
    the race would otherwise fail with "database is locked" instead of waiting); PostgreSQL:
    none, the guarded ``UPDATE`` decides."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(engine)
        if lock is None:
            lock = _SQLITE_LOCKS[engine] = threading.Lock()
    return lock


@dataclass(frozen=True)
class QueuedNotification:
    """One claimed message of one referral change to one channel."""

    id: int
    referral_id: str
    seq: int
    channel: str
    payload: dict[str, Any]
    attempts: int


class ReferralStore:
    """Reads and writes referrals and their history through one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, behind this process's SQLite writer lock."""
        with _writer_lock(self.engine), self.engine.begin() as conn:
            yield conn

    def create(self, new: NewReferral, channels: list[str]) -> tuple[Referral, bool]:
        """Store a referral in ``requested`` (its first event and notification with it).

        Returns (referral, created); a referral whose ``origin_ref`` is already stored (a CDS
        suggestion accepted twice) is returned as it is, not made again, also when two requests
        race to make it (the unique ``origin_ref`` decides)."""
        try:
            return self._create(new, channels)
        except sa.exc.IntegrityError:
            if new.origin_ref is None:
                raise
            with self.engine.connect() as conn:
                found = conn.execute(
                    sa.select(referrals.c.id).where(referrals.c.origin_ref == new.origin_ref)
                ).first()
                existing = self._get(conn, found.id) if found is not None else None
            if existing is None:
                raise
            return existing, False

    def _create(self, new: NewReferral, channels: list[str]) -> tuple[Referral, bool]:
        now = utcnow()
        with self._write() as conn:
            if new.origin_ref is not None:
                found = conn.execute(
                    sa.select(referrals.c.id).where(referrals.c.origin_ref == new.origin_ref)
                ).first()
                if found is not None:
                    existing = self._get(conn, found.id)
                    assert existing is not None
                    return existing, False
            referral_id = uuid.uuid4().hex
            conn.execute(
                referrals.insert().values(
                    id=referral_id,
                    site=new.site,
                    patient_id=new.patient_id,
                    patient_key=new.patient_key,
                    status="requested",
                    urgency=new.urgency,
                    reason=new.reason,
                    evidence_json=json.dumps([dataclasses.asdict(e) for e in new.evidence]),
                    study_instance_uid=new.study_instance_uid,
                    origin=new.origin,
                    origin_ref=new.origin_ref,
                    requester=new.requester,
                    performer=new.performer,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            note = notification_for(referral_id, new.site, "requested", new.urgency, channels)
            self._event(conn, referral_id, 1, "requested", new.requester, None, note, now)
            made = self._get(conn, referral_id)
        assert made is not None
        return made, True

    def transition(
        self,
        referral_id: str,
        status: str,
        actor: str,
        channels: list[str],
        *,
        reason: str | None = None,
        follow_up_plan: str | None = None,
        performer: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Move a referral to ``status`` if its state machine allows it (KeyError: no such id)."""
        now = utcnow()
        with self._write() as conn:
            current = self._get(conn, referral_id)
            if current is None:
                raise KeyError(referral_id)
            if expected_version is not None and expected_version != current.version:
                raise StaleReferral(
                    f"referral was changed (version {current.version}, "
                    f"you sent {expected_version}): read it again"
                )
            allowed = TRANSITIONS.get(current.status, ())
            if status not in allowed:
                moves = ", ".join(allowed) or "none (it is closed)"
                raise IllegalTransition(
                    f"a {current.status} referral cannot become {status}; allowed: {moves}"
                )
            if status in ("rejected", "cancelled") and not (reason and reason.strip()):
                raise MissingField(f"a {status} referral needs a reason")
            if status == "completed" and not (follow_up_plan and follow_up_plan.strip()):
                raise MissingField("completing a referral needs the follow-up plan for the clinic")
            values: dict[str, Any] = {
                "status": status,
                "version": current.version + 1,
                "updated_at": now,
            }
            if reason is not None:
                values["status_reason"] = reason.strip()
            if follow_up_plan is not None:
                values["follow_up_plan"] = follow_up_plan.strip()
            if performer is not None:
                values["performer"] = performer
            changed = conn.execute(
                referrals.update()
                .where(referrals.c.id == referral_id, referrals.c.version == current.version)
                .values(**values)
            ).rowcount
            if changed != 1:
                raise StaleReferral("referral was changed at the same time: read it again")
            note = notification_for(referral_id, current.site, status, current.urgency, channels)
            seq = len(current.events) + 1
            self._event(conn, referral_id, seq, status, actor, reason or follow_up_plan, note, now)
            updated = self._get(conn, referral_id)
        assert updated is not None
        return updated

    def get(self, referral_id: str) -> Referral | None:
        with self.engine.connect() as conn:
            return self._get(conn, referral_id)

    def find(
        self,
        *,
        site: str | None = None,
        patient_key: str | None = None,
        status: str | None = None,
    ) -> list[Referral]:
        """Referrals, newest first, filtered by site, patient key and status."""
        query = sa.select(referrals.c.id).order_by(referrals.c.created_at.desc())
        if site is not None:
            query = query.where(referrals.c.site == site)
        if patient_key is not None:
            query = query.where(referrals.c.patient_key == patient_key)
        if status is not None:
            query = query.where(referrals.c.status == status)
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(query)]
            found = [self._get(conn, i) for i in ids]
        return [r for r in found if r is not None]

    # ------------------------------------------------------------------ rows
    # ------------------------------------------------------------------ notification queue
    def claim_notifications(
        self, lease_seconds: float, now: dt.datetime | None = None, limit: int = 50
    ) -> list[QueuedNotification]:
        """Due messages, each claimed for ``lease_seconds`` by a guarded update (one sender)."""
        now = now or utcnow()
        lease_end = now + dt.timedelta(seconds=lease_seconds)
        rows = _QUEUE.take_due(self.engine, now, lease_end, limit=limit, write=self._write)
        return [from_row(QueuedNotification, r, payload=json.loads(r["payload"])) for r in rows]

    def notification_sent(self, notification_id: int, now: dt.datetime | None = None) -> None:
        with self._write() as conn:
            _QUEUE.attempted(
                conn, notification_id, status="sent", sent_at=now or utcnow(), last_error=None
            )

    def notification_failed(
        self, notification_id: int, error: str, retry_at: dt.datetime | None
    ) -> None:
        """A failed send: tried again at ``retry_at``, or ``dead`` when None."""
        with self._write() as conn:
            _QUEUE.failed(conn, notification_id, error, retry_at)

    def notifications_of(self, referral_id: str) -> list[dict[str, Any]]:
        """Every message of one referral with its state (status, attempts, sent_at, error)."""
        with self.engine.connect() as conn:
            return [
                {**row, "payload": json.loads(row["payload"])}
                for row in conn.execute(
                    sa.select(referral_notifications)
                    .where(referral_notifications.c.referral_id == referral_id)
                    .order_by(referral_notifications.c.seq, referral_notifications.c.channel)
                ).mappings()
            ]

    @staticmethod
    def _event(
        conn: Connection,
        referral_id: str,
        seq: int,
        status: str,
        actor: str,
        note: str | None,
        notification: Notification,
        now: dt.datetime,
    ) -> None:
        for channel in notification.channels:
            _QUEUE.insert(
                conn,
                now,
                referral_id=referral_id,
                seq=seq,
                channel=channel,
                payload=json.dumps(notification.payload, sort_keys=True),
            )
        conn.execute(
            referral_events.insert().values(
                referral_id=referral_id,
                seq=seq,
                status=status,
                actor=actor,
                note=note,
                notify_side=notification.side,
                notify_channels=json.dumps(notification.channels),
                notify_payload=json.dumps(notification.payload, sort_keys=True),
                created_at=now,
            )
        )

    @staticmethod
    def _get(conn: Connection, referral_id: str) -> Referral | None:
        row = (
            conn.execute(sa.select(referrals).where(referrals.c.id == referral_id))
            .mappings()
            .first()
        )
        if row is None:
            return None
        events = [
            from_row(
                ReferralEvent,
                e,
                notify_channels=json.loads(e["notify_channels"]),
                notify_payload=json.loads(e["notify_payload"]),
            )
            for e in conn.execute(
                sa.select(referral_events)
                .where(referral_events.c.referral_id == referral_id)
                .order_by(referral_events.c.seq)
            ).mappings()
        ]
        evidence = [Evidence(**e) for e in json.loads(row["evidence_json"])]
        return from_row(Referral, row, evidence=evidence, events=events)
