"""Studies with built results, as the receiver and the worker leave them, for the delivery tests,
and the two sites (their calling AEs, HL7 peers and tokens) they are delivered to.

``add_study`` writes one DICOM instance (UTF-8 Chinese patient name, accession number) under the
storage folder and the rows the receiver and the worker write for it: the instance row with the
calling AE that sent it, and the ``done`` study row whose result JSON is made by the worker's own
``study_result_json`` from a real ``StudyResult`` (findings, a measurement, guidance from the
clinical rules, the SR among the result objects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tests.support.stored_study import insert_done_study

from medgate.core.config import Settings
from medgate.models.findings import (
    Code,
    Finding,
    Measurement,
    ModelResult,
    StudyResult,
    TriageResult,
)

TOKEN_A = "token-site-a"
TOKEN_B = "token-site-b"
ADMIN = "token-admin"
RESULTS_ONLY = "token-results-only"
NODULE = Code(value="27925004", scheme="SCT", meaning="Nodule")
LUNG = Code(value="39607008", scheme="SCT", meaning="Lung structure")
EFFUSION = Code(value="60046008", scheme="SCT", meaning="Pleural effusion")
DIAMETER = Code(value="81827009", scheme="SCT", meaning="Diameter")
MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def sites_config(port_a: int, port_b: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "clinic-a",
            "calling_aes": ["CLINIC_A_CT"],
            "hl7": {"host": "127.0.0.1", "port": port_a, "receiving_facility": "CLINIC_A"},
            "tokens": {TOKEN_A: ["results", "fhir"]},
        },
        {
            "name": "clinic-b",
            "calling_aes": ["CLINIC_B_DX"],
            "hl7": {"host": "127.0.0.1", "port": port_b},
            "tokens": {TOKEN_B: ["results", "fhir"]},
        },
    ]


def result_json(
    study_uid: str,
    sr_uid: str | None = None,
    *,
    nodule_mm: float | None = 9.5,
    priority: str = "urgent",
) -> dict[str, Any]:
    """A chest CT's result JSON as the worker writes it: a nodule of ``nodule_mm`` (none when
    None), no effusion, guidance from the clinical rules, and the SR ``sr_uid`` when given."""
    from medgate.clinical.guidance import guidance_for
    from medgate.pipeline.routing import RouteDecision
    from medgate.pipeline.worker import study_result_json

    findings = []
    measurements = []
    if nodule_mm is not None:
        size = Measurement(name=DIAMETER, value=nodule_mm, unit=MM, finding_site=LUNG)
        measurements.append(size)
        findings.append(
            Finding(
                label="nodule",
                finding_type=NODULE,
                finding_site=LUNG,
                probability=0.91,
                present=True,
                measurements=[size],
            )
        )
    findings.append(
        Finding(label="effusion", finding_type=EFFUSION, probability=0.07, present=False)
    )
    model = ModelResult(
        bundle_name="ct_nodule_seg",
        bundle_version="1.0.0",
        task="segmentation",
        findings=findings,
        measurements=measurements,
    )
    study = StudyResult(
        study_instance_uid=study_uid,
        model_results=[model],
        triage=TriageResult(
            priority=priority, reasons=[f"nodule {nodule_mm} mm"] if nodule_mm else []
        ),
    )
    study.guidance = list(guidance_for(study, patient_age=61))
    decision = RouteDecision(bundles={"ct_nodule_seg": []}, rules=["chest-ct"])
    objects = (
        [{"sop_instance_uid": sr_uid, "sop_class_uid": SR_CLASS, "kind": "sr"}] if sr_uid else []
    )
    return study_result_json(study, decision, objects)


def write_instance(
    folder: Path,
    study_uid: str,
    patient_id: str,
    name: str,
    accession: str | None = None,
    *,
    sex: str = "F",
    study_date: str = "20261205",
    description: str | None = None,
) -> Path:
    """One chest CT instance (UTF-8 names) saved under ``folder``; its path."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = "19650304"
    ds.PatientSex = sex
    if accession is not None:
        ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.StudyTime = "093000"
    if description is not None:
        ds.StudyDescription = description
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def add_study(
    engine: sa.engine.Engine,
    settings: Settings,
    *,
    calling_ae: str,
    patient_id: str = "PID-0001",
    name: str = "Wang^Fang=王^芳",
    accession: str = "ACC-7",
) -> str:
    """A ``done`` study sent by ``calling_ae``; returns its StudyInstanceUID."""
    study_uid = generate_uid()
    path = write_instance(
        Path(settings.storage.path) / "instances", study_uid, patient_id, name, accession
    )
    ds = pydicom.dcmread(path)
    result = result_json(study_uid, generate_uid())
    return insert_done_study(
        engine,
        ds,
        path,
        calling_ae=calling_ae,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        result=result,
    )
