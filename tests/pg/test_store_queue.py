"""The shared queue steps (``medgate.store.queue.LeasedQueue``) on SQLite and PostgreSQL: one
sender wins a claim, a lapsed lease is taken over, a renewal that finds part of its claim taken
changes nothing, and an attempt's outcome counts attempts and refusals and ends a lease."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from medgate.store.engine import aware
from medgate.store.queue import LeasedQueue
from medgate.store.schema import deliveries, metadata, outbox, referral_notifications

NOW = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    made = sa.create_engine(url)
    metadata.create_all(made)
    yield made
    made.dispose()


def _row(engine: Engine, table: sa.Table, row_id: int) -> dict:
    with engine.connect() as conn:
        found = dict(conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().one())
    return {k: aware(v) if isinstance(v, dt.datetime) else v for k, v in found.items()}


def test_one_sender_wins_and_a_lapsed_lease_is_taken_over(engine: Engine) -> None:
    queue = LeasedQueue(referral_notifications)
    with engine.begin() as conn:
        queue.insert(conn, NOW, referral_id="r1", seq=1, channel="mail", payload="{}")
    lease = NOW + dt.timedelta(seconds=30)

    first = queue.take_due(engine, NOW, lease)
    second = queue.take_due(engine, NOW, lease)

    assert [r["channel"] for r in first] == ["mail"]
    assert second == []  # held: its next attempt is the lease's end
    assert queue.take_due(engine, lease - dt.timedelta(seconds=1), lease) == []
    later = lease + dt.timedelta(seconds=1)
    taken_over = queue.take_due(engine, later, later + dt.timedelta(seconds=30))
    assert [r["id"] for r in taken_over] == [first[0]["id"]]


def test_failed_attempt_is_retried_then_dead_with_its_error_cut(engine: Engine) -> None:
    queue = LeasedQueue(referral_notifications, error_chars=5)
    with engine.begin() as conn:
        queue.insert(conn, NOW, referral_id="r1", seq=1, channel="sms", payload="{}")
    (row,) = queue.take_due(engine, NOW, NOW + dt.timedelta(seconds=30))
    retry_at = NOW + dt.timedelta(minutes=2)

    with engine.begin() as conn:
        assert queue.failed(conn, row["id"], "timeout talking to gateway", retry_at) == 1
    retried = _row(engine, referral_notifications, row["id"])
    assert (retried["status"], retried["attempts"], retried["last_error"]) == (
        "pending",
        1,
        "timeo",
    )
    assert retried["next_attempt_at"] == retry_at

    with engine.begin() as conn:
        queue.failed(conn, row["id"], "refused", None)
    dead = _row(engine, referral_notifications, row["id"])
    assert (dead["status"], dead["attempts"], dead["last_error"]) == ("dead", 2, "refus")
    assert queue.take_due(engine, retry_at, retry_at + dt.timedelta(seconds=30)) == []


def test_renewal_is_all_or_none(engine: Engine) -> None:
    queue = LeasedQueue(outbox)
    with engine.begin() as conn:
        for n in (1, 2):
            queue.insert(
                conn,
                NOW,
                sop_instance_uid=f"1.2.{n}",
                study_instance_uid="1.2",
                kind="sr",
                path=f"/r/{n}",
            )
    held = NOW + dt.timedelta(seconds=20)
    with engine.begin() as conn:
        ids = [r["id"] for r in conn.execute(queue.due(NOW)).mappings()]
        assert all(queue.take(conn, i, held) for i in ids)

    renewed = held + dt.timedelta(seconds=20)
    assert queue.renew(engine.begin, ids, held, renewed)

    stolen = renewed + dt.timedelta(seconds=99)
    with engine.begin() as conn:  # the lease ran out and another sender took the second one
        conn.execute(outbox.update().where(outbox.c.id == ids[1]).values(next_attempt_at=stolen))
    assert not queue.renew(engine.begin, ids, renewed, renewed + dt.timedelta(seconds=20))
    assert _row(engine, outbox, ids[0])["next_attempt_at"] == renewed  # rolled back
    assert _row(engine, outbox, ids[1])["next_attempt_at"] == stolen


def test_outcome_counts_a_refusal_and_ends_a_lease_of_its_own_column(engine: Engine) -> None:
    queue = LeasedQueue(deliveries, lease_column="lease_until", dead="dead-letter")
    with engine.begin() as conn:
        queue.insert(
            conn,
            NOW,
            message_id="m1",
            study_instance_uid="1.2",
            site="s",
            destination="his",
            channel="hl7",
            result_status="P",
            payload="MSH|",
        )
        (row_id,) = conn.execute(sa.select(deliveries.c.id)).scalars()
        free = deliveries.c.lease_until.is_(None)
        assert queue.take(conn, row_id, NOW + dt.timedelta(seconds=60), free)
        assert not queue.take(conn, row_id, NOW + dt.timedelta(seconds=60), free)
        queue.attempted(conn, row_id, status="dead-letter", refused=True, last_error="AR")

    dead = _row(engine, deliveries, row_id)
    assert (dead["status"], dead["attempts"], dead["refusals"]) == ("dead-letter", 1, 1)
    assert dead["lease_until"] is None
    assert dead["next_attempt_at"] == NOW  # a dead letter keeps when it was last due
