"""The outbox: result objects waiting for their destination to confirm them.

An object stays ``pending`` until the PACS confirms it (``sent``) or refuses it
``pacs.send_max_attempts`` times (``dead``). A sender claims due objects by moving their
``next_attempt_at`` past a short lease; while it sends, a heartbeat renews the lease
(``Outbox.renew``), so a second instance never sends them at the same time, and the objects of a
sender that died are due again one lease later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medgate.store.engine import Database, utcnow
from medgate.store.queue import LeasedQueue
from medgate.store.rows import count_rows, fetch_all, from_row
from medgate.store.schema import outbox
from medgate.store.status import OutboxStatus

DEFAULT_LEASE_SECONDS = 20.0
_QUEUE = LeasedQueue(outbox, pending=OutboxStatus.PENDING.value, dead=OutboxStatus.DEAD.value)


class NewResult(NamedTuple):
    """A result object to queue: ``(sop_instance_uid, study_instance_uid, kind, path)``."""

    sop_instance_uid: str
    study_instance_uid: str
    kind: str
    path: str


@dataclass(frozen=True)
class OutboxItem:
    """One outbox row."""

    id: int
    sop_instance_uid: str
    study_instance_uid: str
    kind: str
    path: str
    status: OutboxStatus
    attempts: int
    refusals: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    sent_at: dt.datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """Where a study's result objects stand at one destination."""

    state: str  # "none" (no objects), "pending", "delivered", "dead-letter"
    objects: int
    confirmed: int
    confirmed_at: dt.datetime | None


@dataclass(frozen=True)
class OutboxClaim:
    """Items one sender holds, and the lease (``next_attempt_at``) it set: the claim's token."""

    ids: frozenset[int]
    lease_until: dt.datetime


def _item(row: Any) -> OutboxItem:
    return from_row(OutboxItem, row, status=OutboxStatus(row["status"]))


def add_results(
    conn: Connection, items: Sequence[tuple[str, str, str, str]], now: dt.datetime
) -> int:
    """Queue result objects inside the caller's transaction; an object whose UID is already in
    the outbox is left as it is (re-processing a study yields the same UIDs and must not send
    twice). Returns how many were added."""
    added = 0
    for sop_uid, study_uid, kind, path in items:
        exists = conn.execute(
            sa.select(outbox.c.id).where(outbox.c.sop_instance_uid == sop_uid)
        ).first()
        if exists is not None:
            continue
        _QUEUE.insert(
            conn, now, sop_instance_uid=sop_uid, study_instance_uid=study_uid, kind=kind, path=path
        )
        added += 1
    return added


class Outbox:
    """The outbox table: queue, claim, renew, and record each destination's answer."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, items: Sequence[tuple[str, str, str, str]]) -> int:
        """Queue result objects, all or none (see ``add_results``)."""
        with self.db.write() as conn:
            return add_results(conn, items, utcnow())

    def due(self, limit: int = 50, now: dt.datetime | None = None) -> list[OutboxItem]:
        now = now or utcnow()
        return fetch_all(self.db.read, _QUEUE.due(now).limit(limit), _item)

    def claim(
        self, item_ids: Sequence[int], lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> OutboxClaim:
        """Claim due items for one send: a guarded ``UPDATE`` moves ``next_attempt_at`` to the
        lease's end, so another sender skips them until the lease runs out."""
        now = utcnow()
        until = now + dt.timedelta(seconds=lease_seconds)
        with self.db.write() as conn:
            claimed = [
                i for i in item_ids if _QUEUE.take(conn, i, until, outbox.c.next_attempt_at <= now)
            ]
        return OutboxClaim(frozenset(claimed), until)

    def renew(self, claim: OutboxClaim, lease_seconds: float) -> OutboxClaim | None:
        """Extend a claim's lease; None (nothing changed) when one of its items that is still
        pending no longer carries the claim's own lease end: the lease ran out and another
        sender took it. The caller renews only the items it has not finished yet."""
        until = utcnow() + dt.timedelta(seconds=lease_seconds)
        if not _QUEUE.renew(self.db.write, claim.ids, claim.lease_until, until):
            return None
        return OutboxClaim(claim.ids, until)

    def sent(self, item_id: int) -> None:
        """The destination confirmed the object."""
        with self.db.write() as conn:
            _QUEUE.attempted(conn, item_id, status=OutboxStatus.SENT.value, sent_at=utcnow())

    def retry(
        self, item_id: int, delay_seconds: float, error: str, *, refused: bool = False
    ) -> None:
        """Try again after ``delay_seconds``; ``refused`` counts a PACS failure status (bounded
        by ``pacs.send_max_attempts``), as opposed to an unreachable PACS (retried until it is
        back)."""
        retry_at = utcnow() + dt.timedelta(seconds=delay_seconds)
        with self.db.write() as conn:
            _QUEUE.attempted(conn, item_id, retry_at=retry_at, refused=refused, last_error=error)

    def dead(self, item_id: int, error: str) -> None:
        """Refused for good: the dead letter, shown by ``medgate outbox``."""
        with self.db.write() as conn:
            _QUEUE.attempted(
                conn, item_id, status=OutboxStatus.DEAD.value, refused=True, last_error=error
            )

    def list(
        self, status: OutboxStatus | str | None = None, study_uid: str | None = None
    ) -> list[OutboxItem]:
        query = sa.select(outbox).order_by(outbox.c.id)
        if status:
            query = query.where(outbox.c.status == OutboxStatus(status).value)
        if study_uid:
            query = query.where(outbox.c.study_instance_uid == study_uid)
        return fetch_all(self.db.read, query, _item)

    def pending_count(self) -> int:
        return count_rows(self.db.read, outbox, _QUEUE.is_pending())

    def delivery(self, study_uid: str) -> Delivery:
        """A study's delivery to the PACS: ``delivered`` only once every object is confirmed."""
        items = self.list(study_uid=study_uid)
        sent = [i.sent_at for i in items if i.status == OutboxStatus.SENT and i.sent_at]
        if not items:
            state = "none"
        elif any(i.status == OutboxStatus.DEAD for i in items):
            state = "dead-letter"
        elif len(sent) == len(items):
            state = "delivered"
        else:
            state = "pending"
        return Delivery(
            state=state,
            objects=len(items),
            confirmed=len(sent),
            confirmed_at=max(sent) if state == "delivered" and sent else None,
        )
