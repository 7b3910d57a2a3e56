"""Liveness and readiness probes (always open, no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, response: Response) -> dict[str, object]:
    """The index is reachable; 503 otherwise."""
    try:
        request.app.state.index.queue_depth()
    except Exception as exc:  # noqa: BLE001 - any database failure means not ready
        response.status_code = 503
        return {"status": "not-ready", "reason": type(exc).__name__}
    return {"status": "ready"}
