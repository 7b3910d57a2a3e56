"""The patient and order facts that a result message carries, read from a study's own DICOM header.

The result JSON holds what the AI concluded; who the patient is and which order the study
answers (accession number) live only in the received instances, so they are read from the first
instance's header (pixel data skipped) when a message is built.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.valuerep import PersonName


@dataclass(frozen=True)
class NameParts:
    """One representation of a DICOM person name (alphabetic, ideographic or phonetic)."""

    family: str = ""
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""
    representation: str = "A"  # HL7 table 0465: A alphabetic, I ideographic, P phonetic


@dataclass(frozen=True)
class StudyHeader:
    patient_id: str
    issuer_of_patient_id: str = ""
    names: list[NameParts] = field(default_factory=list)
    birth_date: str = ""
    sex: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    referring_physician: str = ""

    @property
    def study_datetime(self) -> dt.datetime | None:
        """StudyDate + StudyTime as a UTC-naive datetime (DICOM carries no zone here)."""
        if len(self.study_date) != 8 or not self.study_date.isdigit():
            return None
        digits = "".join(c for c in self.study_time.split(".")[0] if c.isdigit())[:6]
        digits = digits.ljust(6, "0")
        try:
            return dt.datetime.strptime(self.study_date + digits, "%Y%m%d%H%M%S")
        except ValueError:
            return None


def _name_parts(name: PersonName) -> list[NameParts]:
    groups = [
        ("A", name.alphabetic),
        ("I", name.ideographic),
        ("P", name.phonetic),
    ]
    parts: list[NameParts] = []
    for representation, text in groups:
        if not text:
            continue
        pieces = (str(text).split("^") + [""] * 5)[:5]
        family, given, middle, prefix, suffix = pieces
        parts.append(NameParts(family, given, middle, prefix, suffix, representation))
    return parts


def read_study_header(path: str | Path) -> StudyHeader:
    """The header facts of one instance of the study (raises OSError / InvalidDicomError)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw_name = ds.get("PatientName")
    names = _name_parts(PersonName(raw_name)) if raw_name else []
    return StudyHeader(
        patient_id=str(ds.get("PatientID", "") or ""),
        issuer_of_patient_id=str(ds.get("IssuerOfPatientID", "") or ""),
        names=names,
        birth_date=str(ds.get("PatientBirthDate", "") or ""),
        sex=str(ds.get("PatientSex", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        study_time=str(ds.get("StudyTime", "") or ""),
        study_description=str(ds.get("StudyDescription", "") or ""),
        referring_physician=str(ds.get("ReferringPhysicianName", "") or ""),
    )
