"""The claim, lease, renewal and retry steps every durable send queue of the store shares.

A queue row (``outbox``, ``deliveries``, ``notifications``, ``referral_notifications``) is
``pending`` until it is done, and carries ``attempts``, ``next_attempt_at`` and ``last_error``.
A sender claims a due row with a guarded ``UPDATE`` that moves the row's lease column to the
lease's end: a row another sender moved first is not touched (rowcount 0), so one row is never
sent twice at once, on SQLite and PostgreSQL alike, and a dead sender's row is due again when its
lease ends. Every outcome counts the attempt in the same statement that records it. The steps
take the caller's connection, so each store keeps its own transactions and locks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement

Write = Callable[[], AbstractContextManager[Connection]]


class _LeaseLost(Exception):
    """Rolls back a renewal that found part of the claim taken."""


@dataclass(frozen=True)
class LeasedQueue:
    """One queue table; ``lease_column`` holds the claim's end (``next_attempt_at`` itself where
    the lease is a postponement, or a column of its own that an attempt's outcome clears)."""

    table: sa.Table
    lease_column: str = "next_attempt_at"
    pending: str = "pending"
    dead: str = "dead"
    error_chars: int | None = None

    @property
    def c(self) -> ReadOnlyColumnCollection[str, sa.Column[Any]]:
        return self.table.c

    def is_pending(self) -> ColumnElement[bool]:
        return self.c.status == self.pending

    def insert(self, conn: Connection, now: dt.datetime, **values: Any) -> None:
        """Queue one row, due at ``now`` with no attempt yet (``values`` may set another
        ``status``, e.g. a row stored already refused)."""
        fresh: dict[str, Any] = {"status": self.pending, "attempts": 0, "next_attempt_at": now}
        if "refusals" in self.c:
            fresh["refusals"] = 0
        if "created_at" in self.c:
            fresh["created_at"] = now
        conn.execute(self.table.insert().values({**fresh, **values}))

    def due(self, now: dt.datetime, *conditions: ColumnElement[bool]) -> sa.Select[Any]:
        """Pending rows whose next attempt is due (and ``conditions``), oldest first."""
        return (
            sa.select(self.table)
            .where(self.is_pending(), self.c.next_attempt_at <= now, *conditions)
            .order_by(self.c.id)
        )

    def take(
        self, conn: Connection, row_id: int, lease_until: dt.datetime, *guard: ColumnElement[bool]
    ) -> bool:
        """Hold a pending row until ``lease_until`` if ``guard`` still holds; True when this
        caller won it."""
        moved = conn.execute(
            self.table.update()
            .where(self.c.id == row_id, self.is_pending(), *guard)
            .values({self.lease_column: lease_until})
        ).rowcount
        return bool(moved == 1)

    def take_due(
        self,
        engine: Engine,
        now: dt.datetime,
        lease_until: dt.datetime,
        *,
        limit: int | None = None,
        write: Write | None = None,
    ) -> list[RowMapping]:
        """Read the due rows, then take each in its own short transaction, only if its
        ``next_attempt_at`` is still the one read (compare and set): the rows this caller won."""
        query = self.due(now) if limit is None else self.due(now).limit(limit)
        with engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        begin = write or engine.begin
        taken: list[RowMapping] = []
        for row in rows:
            with begin() as conn:
                if self.take(
                    conn, row["id"], lease_until, self.c.next_attempt_at == row["next_attempt_at"]
                ):
                    taken.append(row)
        return taken

    def renew(
        self,
        write: Write,
        ids: Collection[int],
        held_until: dt.datetime,
        new_until: dt.datetime,
    ) -> bool:
        """Move the lease of every still-pending row of a claim from ``held_until`` to
        ``new_until``, all or none; False (nothing changed) when one of them no longer carries
        ``held_until``: its lease ran out and another sender took it."""
        try:
            with write() as conn:
                pending = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(self.table)
                    .where(self.c.id.in_(ids), self.is_pending())
                ).scalar_one()
                moved = conn.execute(
                    self.table.update()
                    .where(
                        self.c.id.in_(ids),
                        self.is_pending(),
                        self.c[self.lease_column] == held_until,
                    )
                    .values({self.lease_column: new_until})
                ).rowcount
                if moved != pending:
                    raise _LeaseLost
        except _LeaseLost:
            return False
        return True

    def attempted(
        self,
        conn: Connection,
        row_id: int,
        *guard: ColumnElement[bool],
        status: str | None = None,
        retry_at: dt.datetime | None = None,
        refused: bool = False,
        **values: Any,
    ) -> int:
        """Count one attempt at a row and record its outcome: a new ``status`` (done or dead),
        or due again at ``retry_at``; ``refused`` also counts a refusal (for queues that bound
        them), and a lease of its own column ends. Returns the rows changed."""
        changes: dict[str, Any] = {"attempts": self.c.attempts + 1, **values}
        if status is not None:
            changes["status"] = status
        if retry_at is not None:
            changes["next_attempt_at"] = retry_at
        if refused:
            changes["refusals"] = self.c.refusals + 1
        if self.lease_column != "next_attempt_at":
            changes[self.lease_column] = None
        return int(
            conn.execute(
                self.table.update().where(self.c.id == row_id, *guard).values(changes)
            ).rowcount
        )

    def failed(
        self,
        conn: Connection,
        row_id: int,
        error: str,
        retry_at: dt.datetime | None,
        *guard: ColumnElement[bool],
        **values: Any,
    ) -> int:
        """A failed attempt: due again at ``retry_at``, or ``dead`` when there is none."""
        return self.attempted(
            conn,
            row_id,
            *guard,
            status=self.dead if retry_at is None else None,
            retry_at=retry_at,
            last_error=error[: self.error_chars],
            **values,
        )
