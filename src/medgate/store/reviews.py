"""The reviews table: each radiologist review of a study, one row per revision.

A review row is written in the same transaction as the outbox row of the verified SR that
carries it (``insert_review`` takes the caller's connection), so a review is either stored and
on its way to the PACS, or neither. ``request_sha256`` lets a retried request be recognised and
answered with the stored review instead of a second SR.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from medgate.store.rows import fetch_all, fetch_one, from_row
from medgate.store.schema import outbox, reviews


@dataclass(frozen=True)
class ReviewRow:
    """One stored review (a revision of a study's review)."""

    id: int
    study_instance_uid: str
    revision: int
    reviewer_id: str
    reviewer_name: str
    verdicts: list[dict[str, Any]]
    report_text: str | None
    request_sha256: str
    sr_sop_instance_uid: str
    predecessor_sop_instance_uid: str
    bundle_versions: dict[str, str]
    created_at: dt.datetime

    def summary(self) -> dict[str, Any]:
        """What the study JSON shows as ``review``."""
        return {
            "status": "verified",
            "revision": self.revision,
            "reviewer": {"name": self.reviewer_name, "id": self.reviewer_id},
            "at": self.created_at.isoformat(),
            "verdicts": self.verdicts,
            "report_text": self.report_text,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
        }


def _row(data: Any) -> ReviewRow:
    return from_row(
        ReviewRow,
        data,
        verdicts=json.loads(data["verdicts_json"]),
        bundle_versions=json.loads(data["bundle_versions"]),
    )


def _revisions(study_uid: str) -> sa.Select[Any]:
    return sa.select(reviews).where(reviews.c.study_instance_uid == study_uid)


def insert_review(conn: Connection, row: ReviewRow) -> int:
    """Insert a review inside the caller's transaction; IntegrityError when the revision (or the
    SR UID) is taken, i.e. another review of the study won the race."""
    result = conn.execute(
        reviews.insert().values(
            study_instance_uid=row.study_instance_uid,
            revision=row.revision,
            reviewer_id=row.reviewer_id,
            reviewer_name=row.reviewer_name,
            verdicts_json=json.dumps(row.verdicts, ensure_ascii=False, sort_keys=True),
            report_text=row.report_text,
            request_sha256=row.request_sha256,
            sr_sop_instance_uid=row.sr_sop_instance_uid,
            predecessor_sop_instance_uid=row.predecessor_sop_instance_uid,
            bundle_versions=json.dumps(row.bundle_versions, sort_keys=True),
            created_at=row.created_at,
        )
    )
    key = result.inserted_primary_key
    return int(key[0]) if key else 0


class ReviewStore:
    """Reads reviews, and where a study's stored result objects are."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def latest(self, study_uid: str) -> ReviewRow | None:
        """The study's current review (highest revision), if any."""
        query = _revisions(study_uid).order_by(reviews.c.revision.desc()).limit(1)
        return fetch_one(self.engine.connect, query, _row)

    def summary_of(self, study_uid: str) -> dict[str, Any]:
        """The study JSON's ``review``: the current review, or ``{"status": "unreviewed"}``."""
        latest = self.latest(study_uid)
        return latest.summary() if latest is not None else {"status": "unreviewed"}

    def of_study(self, study_uid: str) -> list[ReviewRow]:
        """Every revision of the study's review, oldest first."""
        return fetch_all(
            self.engine.connect, _revisions(study_uid).order_by(reviews.c.revision), _row
        )

    def current(self) -> list[ReviewRow]:
        """Each reviewed study's current review (labels, monitoring)."""
        query = sa.select(reviews).order_by(reviews.c.study_instance_uid, reviews.c.revision)
        rows = fetch_all(self.engine.connect, query, _row)
        latest = {row.study_instance_uid: row for row in rows}  # the last revision wins
        return list(latest.values())

    def reviewed_studies(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(reviews.c.study_instance_uid).distinct()).scalars())

    def result_path(self, sop_instance_uid: str) -> str | None:
        """The stored file of a result object medgate queued (its outbox row's path)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(outbox.c.path).where(outbox.c.sop_instance_uid == sop_instance_uid)
            ).scalar()
