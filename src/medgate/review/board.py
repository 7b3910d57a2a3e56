"""What the reviewer's worklist page shows: each study with its AI findings, age, site,
modality and whether a radiologist has reviewed it, filtered and in reading order.

The order is the reading worklist's (``review.worklist``: priority, then arrival); this module
adds what a radiologist scans a row for and the filters of the ``/review`` page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from medgate.core.config import Settings
from medgate.delivery.sites import site_for_aes
from medgate.review.worklist import worklist
from medgate.store.db import Index
from medgate.store.reviews import ReviewStore


@dataclass(frozen=True)
class BoardFilters:
    """The page's filters; None means "any"."""

    site: str | None = None
    modality: str | None = None
    priority: str | None = None
    reviewed: bool | None = None


@dataclass
class BoardRow:
    study_instance_uid: str
    status: str
    priority: str | None
    received_at: dt.datetime
    waiting_minutes: float
    overdue: bool
    modality: str
    site: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    reviewed: bool = False
    reviewer: str = ""
    reviewed_at: dt.datetime | None = None


def present_findings(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The AI's present findings, most probable first."""
    findings = [f for f in (result or {}).get("findings") or [] if f.get("present")]
    return sorted(findings, key=lambda f: -float(f.get("probability") or 0.0))


def board(
    index: Index,
    settings: Settings,
    filters: BoardFilters | None = None,
    *,
    now: dt.datetime | None = None,
) -> list[BoardRow]:
    """The worklist rows for ``/review``, most urgent first, filtered by ``filters``."""
    filters = filters or BoardFilters()
    reviews = {r.study_instance_uid: r for r in ReviewStore(index.engine).current()}
    rows: list[BoardRow] = []
    for entry in worklist(index, settings, now=now):
        uid = entry["study_instance_uid"]
        instances = index.instances.of_study(uid)
        modalities = sorted({i.modality for i in instances if i.modality})
        site = site_for_aes(settings, [i.calling_ae or "" for i in instances])
        study = index.studies.get(uid)
        review = reviews.get(uid)
        row = BoardRow(
            study_instance_uid=uid,
            status=str(entry["status"]),
            priority=entry["priority"],
            received_at=dt.datetime.fromisoformat(entry["received_at"]),
            waiting_minutes=float(entry["waiting_minutes"]),
            overdue=bool(entry["overdue"]) and review is None,
            modality="/".join(modalities),
            site=site.name if site is not None else "",
            findings=present_findings(study.result if study is not None else None),
            reviewed=review is not None,
            reviewer=review.reviewer_name if review is not None else "",
            reviewed_at=review.created_at if review is not None else None,
        )
        if filters.site and row.site != filters.site:
            continue
        if filters.modality and filters.modality not in modalities:
            continue
        if filters.priority and (row.priority or "") != filters.priority:
            continue
        if filters.reviewed is not None and row.reviewed != filters.reviewed:
            continue
        rows.append(row)
    return rows
