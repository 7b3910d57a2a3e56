"""Study status and results: ``/api/v1/studies``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from medgate.security import require_scope

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(require_scope("results"))])


class StudySummary(BaseModel):
    study_instance_uid: str
    status: str
    instances: int
    received_at: str
    priority: str | None = None


class StudyDetail(StudySummary):
    updated_at: str
    reason: str | None = None
    result: dict[str, Any] | None = None


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "study_instance_uid": row["study_instance_uid"],
        "status": row["status"],
        "instances": row["instances"],
        "received_at": row["received_at"].isoformat(),
        "priority": row.get("priority"),
    }


@router.get("/studies", response_model=list[StudySummary])
def list_studies(request: Request, status: str | None = None) -> list[dict[str, Any]]:
    """Every study medgate knows, oldest first, optionally filtered by status."""
    return [_summary(row) for row in request.app.state.index.list_studies(status=status)]


@router.get("/studies/{study_instance_uid}", response_model=StudyDetail)
def get_study(study_instance_uid: str, request: Request) -> dict[str, Any]:
    """One study's status, and its findings, priority and result UIDs once processed."""
    row = request.app.state.index.get_study(study_instance_uid)
    if row is None:
        raise HTTPException(404, f"no study with StudyInstanceUID {study_instance_uid}")
    return {
        **_summary(row),
        "updated_at": row["updated_at"].isoformat(),
        "reason": row.get("reason"),
        "result": row.get("result"),
    }
