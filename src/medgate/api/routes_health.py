"""Liveness, readiness and metrics (always open, no authentication, no PHI)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response

from medgate.serving import metrics as pipeline_metrics

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (on the event loop: no thread-pool hop for a liveness probe)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, object]:
    """The index is reachable (503 otherwise); lists models that failed to load."""
    try:
        await asyncio.to_thread(request.app.state.index.jobs.depth)
    except Exception as exc:
        response.status_code = 503
        return {"status": "not-ready", "reason": type(exc).__name__}
    body: dict[str, object] = {"status": "ready"}
    client = request.app.state.model_client
    if client is not None:
        status = await client.astatus()
        body["models"] = {name: s.get("loaded", False) for name, s in status.items()}
        failed = {name: s.get("error") for name, s in status.items() if not s.get("loaded")}
        if failed:
            body["model_errors"] = failed
    return body


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text: queue depth, outbox, per-stage latency, model batch sizes, errors."""
    from medgate.review.worklist import overdue_count

    state = request.app.state

    def gauges() -> dict[str, float]:
        return {
            "medgate_queue_depth": float(state.index.jobs.depth()),
            "medgate_outbox_pending": float(state.index.outbox.pending_count()),
            "medgate_studies_overdue": float(overdue_count(state.index, state.settings)),
        }

    values = await asyncio.to_thread(gauges)
    try:
        snapshot = await asyncio.to_thread(state.metrics.snapshot)
    except Exception as exc:
        log.warning("metrics snapshot unavailable: %s", exc)
        snapshot = {}
    from medgate.api.routes_review import review_metrics_text  # per-model figures from verdicts

    review = await asyncio.to_thread(review_metrics_text, state)
    return Response(
        pipeline_metrics.render(snapshot, values) + review,
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
