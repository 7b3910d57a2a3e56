"""A finished study put straight into the store: one instance row and a ``done`` study row with
its result JSON, for tests of what comes after the worker (delivery, the /clinic pages)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa

from medgate.store.schema import instances, studies


def insert_done_study(
    engine: sa.engine.Engine,
    ds: pydicom.Dataset,
    path: Path,
    *,
    calling_ae: str,
    transfer_syntax_uid: str,
    result: dict[str, Any],
) -> str:
    """Index ``ds`` (stored at ``path``) as sent by ``calling_ae``, and its study as ``done``
    with ``result``; returns the StudyInstanceUID."""
    study_uid = str(ds.StudyInstanceUID)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            instances.insert().values(
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=study_uid,
                series_instance_uid=str(ds.SeriesInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=transfer_syntax_uid,
                modality=str(ds.get("Modality", "CT")),
                calling_ae=calling_ae,
                received_at=now,
                size=path.stat().st_size,
                sha256="0" * 64,
                path=str(path),
            )
        )
        conn.execute(
            studies.insert().values(
                study_instance_uid=study_uid,
                status="done",
                received_at=now,
                last_instance_at=now,
                updated_at=now,
                priority=result["priority"],
                result_json=json.dumps(result),
            )
        )
    return study_uid
