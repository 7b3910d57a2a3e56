"""A radiologist's review of a study: check the verdicts, write the verified SR, queue it.

``submit_review`` is what ``POST /api/v1/studies/{uid}/review`` and the ``/review`` page run. It
refuses (``ReviewRejected`` with an HTTP status and a message) a study medgate does not know, one
without AI results, verdicts on findings the AI did not report, and a second review that differs
from the first without ``amend``. An identical request sent again (a retry after a lost answer)
gets the stored review back and sends nothing new.

Durability follows the worker's rule: the verified SR's file is written first (atomically, its
name is its deterministic UID), then the review row and the outbox row are committed in one
transaction. A crash before the commit leaves an orphan file that the retried request rewrites
with the same name; after the commit the outbox sender delivers the SR.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy.exc import IntegrityError

from medgate.core.config import Settings
from medgate.core.uids import derived_uid
from medgate.reports.errors import ReportError
from medgate.reports.validate import check_object, encode
from medgate.reports.verified_sr import VERDICTS, Reviewer, Verdict, build_verified_sr
from medgate.store.db import Index
from medgate.store.engine import utcnow
from medgate.store.files import atomic_write
from medgate.store.outbox import add_results
from medgate.store.reviews import ReviewRow, ReviewStore, insert_review
from medgate.trust.audit import AuditLog

KIND = "verified-sr"


class ReviewRejected(Exception):
    """A review that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: a review request's verdicts are the verified SR's, checked here before the SR is built
VerdictInput = Verdict


@dataclass(frozen=True)
class ReviewInput:
    """The body of a review request (already parsed)."""

    reviewer_name: str
    reviewer_id: str
    verdicts: tuple[VerdictInput, ...]
    report_text: str = ""
    amend: bool = False

    def fingerprint(self) -> str:
        """SHA-256 of what the review says (not of ``amend``): equal requests, equal reviews."""
        body = {
            "reviewer": [self.reviewer_name, self.reviewer_id],
            "verdicts": sorted(
                [v.finding, v.verdict, v.value, v.comment.strip()] for v in self.verdicts
            ),
            "report_text": self.report_text.strip(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ReviewOutcome:
    review: ReviewRow
    created: bool  # False: the same review was already stored (a retried request)


def _ai_sr_uid(result: dict[str, Any]) -> str | None:
    for obj in result.get("result_objects") or []:
        if obj.get("kind") == "sr":
            return str(obj["sop_instance_uid"])
    return None


def _tracking_identifiers(findings: list[dict[str, Any]]) -> dict[str, list[str]]:
    """label -> the SR measurement groups (tracking identifiers) of the findings with it."""
    by_label: dict[str, list[str]] = {}
    for f in findings:
        tracking = (f.get("tracking_id") or f"{f['bundle']} {f['label']}")[:64]
        by_label.setdefault(str(f["label"]), []).append(tracking)
    return by_label


def _check(request: ReviewInput, findings: list[dict[str, Any]]) -> None:
    if not request.reviewer_name.strip() or not request.reviewer_id.strip():
        raise ReviewRejected(422, "reviewer.name and reviewer.id are required")
    if not request.verdicts:
        raise ReviewRejected(422, "a review needs at least one verdict")
    known = {str(f["label"]) for f in findings}
    unknown = sorted({v.finding for v in request.verdicts} - known)
    if unknown:
        raise ReviewRejected(
            422,
            f"unknown finding label(s) {', '.join(unknown)}; "
            f"this study's findings are {', '.join(sorted(known))}",
        )
    labels = [v.finding for v in request.verdicts]
    if len(labels) != len(set(labels)):
        raise ReviewRejected(422, "one verdict per finding: a label appears twice")
    for v in request.verdicts:
        if v.verdict not in VERDICTS:
            raise ReviewRejected(
                422, f"verdict {v.verdict!r} for {v.finding}: one of {', '.join(VERDICTS)}"
            )
        if v.verdict == "modified" and v.value is None:
            raise ReviewRejected(422, f"a 'modified' verdict for {v.finding} needs a value")


def _read(path: str | None, what: str) -> pydicom.Dataset:
    if path is None or not Path(path).exists():
        raise ReviewRejected(409, f"the {what} is not in the store; the study cannot be verified")
    return pydicom.dcmread(path)


def submit_review(
    index: Index,
    settings: Settings,
    audit: AuditLog,
    study_uid: str,
    request: ReviewInput,
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> ReviewOutcome:
    """Store ``request`` as the study's review and queue its verified SR (see module doc)."""
    row = index.studies.get(study_uid)
    if row is None:
        raise ReviewRejected(404, f"no study with StudyInstanceUID {study_uid}")
    result = row.result or {}
    findings: list[dict[str, Any]] = list(result.get("findings") or [])
    ai_sr_uid = _ai_sr_uid(result)
    if not findings or ai_sr_uid is None:
        raise ReviewRejected(409, "the study has no AI results to review yet")
    _check(request, findings)

    store = ReviewStore(index.engine)
    fingerprint = request.fingerprint()
    latest = store.latest(study_uid)
    if latest is not None and latest.request_sha256 == fingerprint:
        return ReviewOutcome(latest, created=False)
    if latest is not None and not request.amend:
        raise ReviewRejected(
            409,
            f"the study was already reviewed (revision {latest.revision} at "
            f'{latest.created_at.isoformat()}); send "amend": true to replace that review',
        )
    revision = latest.revision + 1 if latest is not None else 1
    ai_sr = _read(store.result_path(ai_sr_uid), "AI SR")
    earlier = (
        _read(store.result_path(latest.sr_sop_instance_uid), "earlier verified SR")
        if latest
        else None
    )

    by_label = _tracking_identifiers(findings)
    verdicts = {
        tracking: dataclasses.replace(v, comment=v.comment.strip())
        for v in request.verdicts
        for tracking in by_label[v.finding]
    }
    stamp = now or utcnow()
    sop_uid = derived_uid(study_uid, KIND, ai_sr_uid, str(revision), fingerprint)
    try:
        verified = build_verified_sr(
            ai_sr,
            verdicts,
            Reviewer(
                request.reviewer_name.strip(),
                request.reviewer_id.strip(),
                settings.reports.institution_name,
            ),
            sop_instance_uid=sop_uid,
            series_instance_uid=derived_uid(study_uid, KIND, "series"),
            verified_at=stamp,
            report_text=request.report_text,
            earlier=earlier,
        )
        check_object("sr", verified, study_uid, None)
    except ReportError as exc:
        raise ReviewRejected(422, f"the verified SR cannot be written: {exc}") from exc

    results_dir = Path(settings.storage.path) / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{sop_uid}.dcm"
    atomic_write(path, (encode(verified),))
    review = ReviewRow(
        id=0,
        study_instance_uid=study_uid,
        revision=revision,
        reviewer_id=request.reviewer_id.strip(),
        reviewer_name=request.reviewer_name.strip(),
        verdicts=[
            {"finding": v.finding, "verdict": v.verdict, "value": v.value, "comment": v.comment}
            for v in request.verdicts
        ],
        report_text=request.report_text.strip() or None,
        request_sha256=fingerprint,
        sr_sop_instance_uid=sop_uid,
        predecessor_sop_instance_uid=ai_sr_uid,
        bundle_versions={str(m["name"]): str(m["version"]) for m in result.get("models") or []},
        created_at=stamp,
    )
    try:
        with index.db.write() as conn:
            review_id = insert_review(conn, review)
            add_results(conn, [(sop_uid, study_uid, KIND, str(path))], stamp)
    except IntegrityError as exc:
        raise ReviewRejected(
            409, "another review of this study was stored at the same time"
        ) from exc
    audit.record(
        "review-verdict",
        actor=f"reviewer:{review.reviewer_id}",
        study_uid=study_uid,
        sop_instance_uid=sop_uid,
        details={
            "revision": revision,
            "via": actor,
            "verdicts": [[v.finding, v.verdict] for v in request.verdicts],
            "amend": latest is not None,
            "report_text": bool(review.report_text),
        },
    )
    return ReviewOutcome(dataclasses.replace(review, id=review_id), created=True)
