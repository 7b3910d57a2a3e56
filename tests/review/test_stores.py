"""The reviews and notifications tables on SQLite and PostgreSQL: one review per revision, one
message per study and channel, leases, escalation once, acknowledgement of the whole study."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError

from medgate.store.db import Index
from medgate.store.notifications import NotificationStore
from medgate.store.reviews import ReviewRow, ReviewStore, insert_review
from medgate.store.schema import studies

T0 = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC)


def _review(revision: int, sr_uid: str) -> ReviewRow:
    return ReviewRow(
        id=0,
        study_instance_uid="1.2.3",
        revision=revision,
        reviewer_id="rad-007",
        reviewer_name="Wang^Li",
        verdicts=[
            {"finding": "pneumothorax", "verdict": "confirmed", "value": None, "comment": "肺尖"}
        ],
        report_text="报告",
        request_sha256="a" * 64,
        sr_sop_instance_uid=sr_uid,
        predecessor_sop_instance_uid="2.25.1",
        bundle_versions={"tiny_cxr": "0.0.1"},
        created_at=T0 + dt.timedelta(minutes=revision),
    )


def test_reviews_one_row_per_revision(database_url: str) -> None:
    index = Index(database_url)
    try:
        with index.db.write() as conn:
            insert_review(conn, _review(1, "2.25.10"))
        with pytest.raises(IntegrityError), index.db.write() as conn:
            insert_review(conn, _review(1, "2.25.11"))  # the same revision twice
        with index.db.write() as conn:
            insert_review(conn, _review(2, "2.25.12"))
        store = ReviewStore(index.engine)
        latest = store.latest("1.2.3")
        assert (
            latest is not None
            and latest.revision == 2
            and latest.created_at == T0 + dt.timedelta(minutes=2)
        )
        assert latest.verdicts[0]["comment"] == "肺尖" and latest.bundle_versions == {
            "tiny_cxr": "0.0.1"
        }
        assert [r.revision for r in store.of_study("1.2.3")] == [1, 2]
        assert [r.revision for r in store.current()] == [2]
        assert store.summary_of("9.9") == {"status": "unreviewed"}
    finally:
        index.close()


def test_notifications_lease_escalate_once_and_ack(database_url: str) -> None:
    index = Index(database_url)
    try:
        with index.db.write() as conn:
            conn.execute(
                studies.insert().values(
                    study_instance_uid="1.2.3",
                    status="done",
                    received_at=T0,
                    last_instance_at=T0,
                    updated_at=T0,
                    priority="critical",
                    result_json="{}",
                )
            )
        store = NotificationStore(index.engine)
        assert store.critical_without_notification(T0 - dt.timedelta(hours=1)) == ["1.2.3"]
        assert store.critical_without_notification(T0 + dt.timedelta(hours=1)) == []
        assert store.create("1.2.3", "a", 0, "tok-a", {"x": 1}, T0)
        assert not store.create("1.2.3", "a", 0, "tok-a2", {"x": 1}, T0)  # once per channel
        assert store.critical_without_notification() == []
        (claimed,) = store.claim_due(30, T0)
        assert store.claim_due(30, T0) == []  # leased: a second loop gets nothing
        store.sent(claimed.id, T0 + dt.timedelta(minutes=5), T0)
        assert store.escalations_due(T0 + dt.timedelta(minutes=4)) == []
        (due,) = store.escalations_due(T0 + dt.timedelta(minutes=6))
        assert store.escalate(due, "b", "tok-b", {"x": 2}, T0 + dt.timedelta(minutes=6))
        assert not store.escalate(due, "b", "tok-b", {"x": 2}, T0 + dt.timedelta(minutes=6))
        assert store.escalations_due(T0 + dt.timedelta(minutes=7)) == []
        rows = store.of_study("1.2.3")
        assert [(r.channel, r.step, r.status) for r in rows] == [
            ("a", 0, "sent"),
            ("b", 1, "pending"),
        ]
        acked = store.acknowledge(
            token="tok-a", by="reviewer:rad-007", now=T0 + dt.timedelta(minutes=8)
        )
        assert acked is not None and acked.acknowledged_by == "reviewer:rad-007"
        # the whole study is acknowledged: the pending escalation is not sent any more
        assert {r.status for r in store.of_study("1.2.3")} == {"acknowledged"}
        assert store.claim_due(30, T0 + dt.timedelta(hours=1)) == []
        assert store.acknowledge(item_id=999, by="x") is None
    finally:
        index.close()
