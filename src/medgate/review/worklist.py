"""The reading worklist: studies by priority then arrival, flagged when they waited too long.

A study's wait counts from its arrival (first instance received). Each priority has a maximum
wait (``serving.worklist_max_wait_minutes``: critical 15 min, urgent 1 h, routine 24 h by
default); a study not yet triaged is held to the routine limit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from medgate.core.config import Settings
from medgate.store.db import Index
from medgate.store.engine import utcnow

PRIORITY_ORDER = {"critical": 0, "urgent": 1, "routine": 2}
WORKLIST_STATUSES = ("queued", "processing", "done", "failed", "not-processed")


def worklist(
    index: Index,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    statuses: tuple[str, ...] = WORKLIST_STATUSES,
) -> list[dict[str, Any]]:
    """Worklist entries (dicts), most urgent first, oldest first within a priority."""
    now = now or utcnow()
    limits = settings.serving.worklist_max_wait_minutes
    entries: list[dict[str, Any]] = []
    for row in index.studies.list(limit=100_000):
        if row.status not in statuses:
            continue
        priority = row.priority
        waited = (now - row.received_at).total_seconds() / 60.0
        limit = limits.get(priority or "routine", limits.get("routine", 1440.0))
        result = row.result or {}
        entries.append(
            {
                "study_instance_uid": row.study_instance_uid,
                "status": row.status,
                "priority": priority,
                "received_at": row.received_at.isoformat(),
                "waiting_minutes": round(waited, 2),
                "max_wait_minutes": limit,
                "overdue": waited > limit,
                "reasons": list(result.get("reasons") or []),
                "instances": row.instances,
            }
        )
    entries.sort(key=lambda e: (PRIORITY_ORDER.get(e["priority"] or "", 3), e["received_at"]))
    return entries


def overdue_count(index: Index, settings: Settings) -> int:
    """Studies waiting past their limit (for ``/metrics``)."""
    return sum(1 for entry in worklist(index, settings) if entry["overdue"])
