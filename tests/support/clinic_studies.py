"""Studies with results as the receiver and worker leave them, for the /clinic tests.

Each study is one real DICOM instance (UTF-8 Chinese name) under the storage folder, its
instance row (with the calling AE that says which site sent it) and its ``done`` study row,
whose result JSON comes from the worker's own ``study_result_json`` with guidance from the
clinical rules; ``verify`` marks it final the way a radiologist's review does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import sqlalchemy as sa
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tests.support.delivery_studies import result_json, write_instance
from tests.support.stored_study import insert_done_study

from medgate.core.config import Settings
from medgate.store.deliveries import DeliveryStore
from medgate.store.schema import studies


def add_study(
    engine: sa.engine.Engine,
    settings: Settings,
    *,
    calling_ae: str,
    patient_id: str,
    name: str,
    sex: str = "F",
    study_date: str = "20261205",
    nodule_mm: float | None = 9.5,
    priority: str = "urgent",
) -> str:
    """A ``done`` chest CT sent by ``calling_ae``; returns its StudyInstanceUID."""
    study_uid = generate_uid()
    path = write_instance(
        Path(settings.storage.path) / "instances",
        study_uid,
        patient_id,
        name,
        sex=sex,
        study_date=study_date,
        description="胸部CT平扫 Chest CT",
    )
    ds = pydicom.dcmread(path)
    result = result_json(study_uid, nodule_mm=nodule_mm, priority=priority)
    return insert_done_study(
        engine,
        ds,
        path,
        calling_ae=calling_ae,
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        result=result,
    )


def verify(engine: sa.engine.Engine, study_uid: str) -> None:
    """Mark the study's result final, as a radiologist's review does."""
    with engine.connect() as conn:
        raw = conn.execute(
            sa.select(studies.c.result_json).where(studies.c.study_instance_uid == study_uid)
        ).scalar_one()
    DeliveryStore(engine).record_final(
        study_uid, [], verified_by="h:reviewer", final_result=json.loads(raw)
    )
