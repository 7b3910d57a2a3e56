"""Study status and results, and the reading worklist: ``/api/v1/studies``, ``/api/v1/worklist``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from medgate.api.security import require_scope
from medgate.api.site_scope import require_study_visible, visible_study_uids
from medgate.review.worklist import worklist
from medgate.store.deliveries import DeliveryStore
from medgate.store.outbox import Delivery
from medgate.store.reviews import ReviewStore
from medgate.store.status import StudyStatus
from medgate.store.studies import StudyRow

router = APIRouter(
    prefix="/api/v1", tags=["studies"], dependencies=[Depends(require_scope("results"))]
)


class StudySummary(BaseModel):
    study_instance_uid: str
    status: str
    instances: int
    received_at: str
    priority: str | None = None


class DestinationDelivery(BaseModel):
    """One destination's confirmation of a study's result objects: ``done`` means built, and
    only ``delivered`` means the destination confirmed every object."""

    state: str
    objects: int
    confirmed: int
    confirmed_at: str | None = None


class StudyDetail(StudySummary):
    updated_at: str
    reason: str | None = None
    results_built_at: str | None = None
    delivery: dict[str, DestinationDelivery] = {}
    findings: list[dict[str, Any]] = []
    reasons: list[str] = []
    guidance: list[dict[str, Any]] = []
    result_uids: list[str] = []
    result: dict[str, Any] | None = None
    review: dict[str, Any] = {"status": "unreviewed"}  # the radiologist's (routes_review)


class WorklistEntry(BaseModel):
    study_instance_uid: str
    status: str
    priority: str | None = None
    received_at: str
    waiting_minutes: float
    max_wait_minutes: float
    overdue: bool
    reasons: list[str] = []
    instances: int


def _summary(row: StudyRow) -> dict[str, Any]:
    return {
        "study_instance_uid": row.study_instance_uid,
        "status": row.status,
        "instances": row.instances,
        "received_at": row.received_at.isoformat(),
        "priority": row.priority,
    }


@router.get("/studies", response_model=list[StudySummary])
def list_studies(request: Request, status: str | None = None) -> list[dict[str, Any]]:
    """Every study medgate knows, oldest first, optionally filtered by status."""
    if status is not None and status not in set(StudyStatus):
        raise HTTPException(400, f"unknown status {status!r}; one of {', '.join(StudyStatus)}")
    rows = request.app.state.index.studies.list(status=status)
    visible = visible_study_uids(request, [row.study_instance_uid for row in rows])
    return [_summary(row) for row in rows if row.study_instance_uid in visible]


@router.get("/studies/{study_instance_uid}", response_model=StudyDetail)
def get_study(study_instance_uid: str, request: Request) -> dict[str, Any]:
    """One study's status, and its findings, priority, guidance and result UIDs once processed."""
    index = request.app.state.index
    row = index.studies.get(study_instance_uid)
    if row is None:
        raise HTTPException(404, f"no study with StudyInstanceUID {study_instance_uid}")
    require_study_visible(request, study_instance_uid)
    result = row.result or {}
    built = row.results_built_at
    return {
        **_summary(row),
        "updated_at": row.updated_at.isoformat(),
        "reason": row.reason,
        "results_built_at": built.isoformat() if built else None,
        "delivery": {
            "pacs": _delivery(index.outbox.delivery(study_instance_uid)),
            **DeliveryStore(index.engine).destination_states(study_instance_uid),  # hl7:<site>
        },
        "findings": result.get("findings", []),
        "reasons": result.get("reasons", []),
        "guidance": result.get("guidance", []),
        "result_uids": [obj["sop_instance_uid"] for obj in result.get("result_objects", [])],
        "result": row.result,
        "review": ReviewStore(index.engine).summary_of(study_instance_uid),
    }


def _delivery(state: Delivery) -> dict[str, Any]:
    confirmed = state.confirmed_at
    return {
        "state": state.state,
        "objects": state.objects,
        "confirmed": state.confirmed,
        "confirmed_at": confirmed.isoformat() if confirmed else None,
    }


@router.get("/worklist", response_model=list[WorklistEntry])
def get_worklist(request: Request, overdue_only: bool = False) -> list[dict[str, Any]]:
    """Studies by priority (critical, urgent, routine, untriaged) then arrival; ``overdue`` marks
    those waiting past their priority's maximum wait."""
    entries = worklist(request.app.state.index, request.app.state.settings)
    visible = visible_study_uids(request, [e["study_instance_uid"] for e in entries])
    entries = [e for e in entries if e["study_instance_uid"] in visible]
    return [e for e in entries if e["overdue"]] if overdue_only else entries
