"""The radiologist's verdicts over HTTP: ``POST/GET /api/v1/studies/{uid}/review``.

The ``/review`` pages post to the same endpoint. Access: a bearer token with the ``review`` (or
``admin``) scope, or a review session cookie (``medgate.api.pages.session``). Errors are 4xx
with a message: 404 unknown study, 409 no AI results yet or already reviewed (send ``amend``),
422 unknown finding labels or malformed verdicts. With ``refer`` the review also opens a
referral for the study's patient (``origin = "review"``, one per review revision).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from medgate.api.pages.session import Reviewer
from medgate.api.routes_referrals import refer_from_review
from medgate.review.monitoring import (
    ModelFigures,
    model_figures,
    prometheus_text,
    validation_ppv,
)
from medgate.review.verdicts import ReviewInput, ReviewRejected, VerdictInput, submit_review
from medgate.store.notifications import NotificationStore
from medgate.store.reviews import ReviewStore
from medgate.trust.audit import AuditLog, open_audit

router = APIRouter(prefix="/api/v1", tags=["review"])


class ReviewerBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    id: str = Field(min_length=1, max_length=128)


class VerdictBody(BaseModel):
    finding: str = Field(min_length=1, max_length=64, description="the finding's label")
    verdict: Literal["confirmed", "rejected", "modified"]
    value: float | None = Field(None, description="modified: the corrected measurement")
    comment: str = Field("", max_length=1000)


class ReferBody(BaseModel):
    """The radiologist refers the patient up (上转) on the strength of this review."""

    reason: str = Field(min_length=1, max_length=2000)
    urgency: Literal["routine", "urgent", "asap", "stat"] = "urgent"
    performer: str | None = Field(None, max_length=128, description="the receiving hospital")


class ReviewBody(BaseModel):
    reviewer: ReviewerBody
    verdicts: list[VerdictBody] = Field(min_length=1)
    report_text: str = Field("", max_length=10000)
    amend: bool = False
    refer: ReferBody | None = Field(
        None, description="also refer the patient: a referral with the confirmed findings"
    )


def audit_log(request: Request) -> AuditLog:
    log = getattr(request.app.state, "review_audit", None)
    if log is None:
        log = open_audit(request.app.state.settings)
        request.app.state.review_audit = log
    return log


def review_json(request: Request, study_uid: str) -> dict[str, Any] | None:
    """The study's ``review`` block: ``{status, reviewer, at, verdicts, ...}`` or None."""
    latest = ReviewStore(request.app.state.index.engine).latest(study_uid)
    return latest.summary() if latest is not None else None


@router.post("/studies/{study_instance_uid}/review")
def post_review(
    study_instance_uid: str,
    body: ReviewBody,
    request: Request,
    response: Response,
    access: Reviewer,
) -> dict[str, Any]:
    """Record the radiologist's verdicts and queue the verified SR for the PACS (201; 200 when
    the same review was already stored)."""
    # A session says who signed in: that identity is recorded, whatever the body says.
    review = ReviewInput(
        reviewer_name=access.name or body.reviewer.name,
        reviewer_id=access.reviewer_id or body.reviewer.id,
        verdicts=tuple(
            VerdictInput(v.finding, v.verdict, v.value, v.comment) for v in body.verdicts
        ),
        report_text=body.report_text,
        amend=body.amend,
    )
    try:
        outcome = submit_review(
            request.app.state.index,
            request.app.state.settings,
            audit_log(request),
            study_instance_uid,
            review,
            actor=access.via,
        )
    except ReviewRejected as exc:
        raise HTTPException(exc.status, exc.message) from exc
    response.status_code = 201 if outcome.created else 200
    answer: dict[str, Any] = {
        "study_instance_uid": study_instance_uid,
        "review": outcome.review.summary(),
    }
    if body.refer is not None:
        referral = refer_from_review(
            request,
            study_instance_uid,
            outcome.review,
            reason=body.refer.reason,
            urgency=body.refer.urgency,
            performer=body.refer.performer,
        )
        answer["referral"] = {"id": referral.id, "status": referral.status}
    return answer


@router.get("/studies/{study_instance_uid}/review")
def get_review(study_instance_uid: str, request: Request, _: Reviewer) -> dict[str, Any]:
    """The study's current review and every earlier revision."""
    if request.app.state.index.studies.get(study_instance_uid) is None:
        raise HTTPException(404, f"no study with StudyInstanceUID {study_instance_uid}")
    rows = ReviewStore(request.app.state.index.engine).of_study(study_instance_uid)
    return {
        "study_instance_uid": study_instance_uid,
        "review": rows[-1].summary() if rows else {"status": "unreviewed"},
        "revisions": [r.summary() for r in rows],
    }


#: Row ids are 64-bit signed integers in SQLite and PostgreSQL: a larger id is a 422, not a 500.
MAX_ROW_ID = 2**63 - 1


@router.post("/notifications/{notification_id}/ack")
def ack_notification(
    request: Request,
    notification_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],
    access: Reviewer,
) -> dict[str, Any]:
    """Acknowledge a critical-result message: its study escalates no further."""
    by = f"reviewer:{access.reviewer_id}" if access.reviewer_id else access.via
    item = NotificationStore(request.app.state.index.engine).acknowledge(
        item_id=notification_id, by=by
    )
    if item is None:
        raise HTTPException(404, f"no notification {notification_id}")
    audit_log(request).record(
        "critical-acknowledged",
        actor=by,
        study_uid=item.study_instance_uid,
        details={"notification": item.id, "channel": item.channel},
    )
    return {
        "id": item.id,
        "status": item.status,
        "acknowledged_at": item.acknowledged_at.isoformat() if item.acknowledged_at else None,
        "acknowledged_by": item.acknowledged_by,
    }


def review_figures(state: Any) -> list[ModelFigures]:
    """Per-model figures from the verdicts, with each bundle's validation PPV (its metadata)."""
    bundles = getattr(state, "bundles", None)
    if bundles is None:
        from medgate.models.registry import discover_bundles

        found, _ = discover_bundles(state.settings.models.path)
        bundles = {b.name: b for b in found}
    validation = {(b.name, b.version): validation_ppv(b.spec.metrics) for b in bundles.values()}
    return model_figures(state.index, state.settings, validation)


def review_metrics_text(state: Any) -> bytes:
    """The per-model review gauges for ``/metrics``."""
    return prometheus_text(review_figures(state))


def include(app: FastAPI) -> None:
    """Wire the review API, the /review pages and their static files into ``app``; start the
    critical-result notification loop with the app when channels are configured."""
    from fastapi.staticfiles import StaticFiles

    from medgate.api.pages.views import STATIC, pages

    app.include_router(router)
    app.mount("/review/static", StaticFiles(directory=str(STATIC)), name="review-static")
    app.include_router(pages)
    settings = app.state.settings
    if settings.notify.channels:
        from medgate.review.notify import Notifier

        def start() -> None:
            app.state.notifier = Notifier(settings, app.state.index, open_audit(settings)).start()

        def stop() -> None:
            notifier = getattr(app.state, "notifier", None)
            if notifier is not None:
                notifier.stop()

        app.router.on_startup.append(start)
        app.router.on_shutdown.append(stop)
