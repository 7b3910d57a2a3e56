"""What the study header says that the guidance rules need: patient age and projection.

Read once per study from the source images' DICOM attributes (already in memory; no I/O) so that
the pipeline and the report builder use the same values. ``ViewPosition`` (0018,5101) gives the
radiographic projection (PA, AP, LL, ...). ``PatientPosition`` (0018,5100, defined terms HFS,
HFP, FFS, FFP, HFDR, HFDL, FFDR, FFDL) gives supine (HFS, FFS) and decubitus (HFDR, HFDL, FFDR,
FFDL); ``ViewPosition`` RLD / LLD (right / left lateral decubitus) is decubitus too. Prone (HFP,
FFP) is neither. The guidance judges a cardiothoracic ratio on a PA film only, never on an AP,
lateral, supine or decubitus one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Projection = Literal["PA", "AP", "lateral", "other", "unknown"]

_PER_YEAR = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}


@dataclass(frozen=True)
class StudyContext:
    """Patient age in whole years, the projection of the radiograph and whether the patient lay
    supine or decubitus, when the header says (None: not recorded)."""

    patient_age: int | None = None
    projection: Projection = "unknown"
    supine: bool | None = None
    decubitus: bool | None = None


def age_from_dicom(value: str) -> int | None:
    """Whole years from a DICOM AS value (``052Y``, ``006M``, ``010W``, ``100D``), else None."""
    value = value.strip()
    if len(value) == 4 and value[:3].isdigit() and value[3] in _PER_YEAR:
        return int(int(value[:3]) / _PER_YEAR[value[3]])
    return None


def projection_from_dicom(view_position: str) -> Projection:
    """PA / AP / lateral from ViewPosition (DICOM PS3.3 C.8.11.5: AP, PA, LL, RL, RLD, ...)."""
    value = view_position.strip().upper()
    if value == "PA":
        return "PA"
    if value == "AP":
        return "AP"
    if value in {"LL", "RL", "LAT", "LATERAL"}:
        return "lateral"
    return "other" if value else "unknown"


SUPINE_POSITIONS = frozenset({"HFS", "FFS"})
DECUBITUS_POSITIONS = frozenset({"HFDR", "HFDL", "FFDR", "FFDL"})
DECUBITUS_VIEWS = frozenset({"RLD", "LLD"})


def supine_from_dicom(patient_position: str) -> bool | None:
    """True for supine patient positions (HFS, FFS), False for prone (HFP, FFP) and decubitus
    (HFDR, HFDL, FFDR, FFDL, see ``decubitus_from_dicom``) ones; None when not recorded."""
    value = patient_position.strip().upper()
    if not value:
        return None
    return value in SUPINE_POSITIONS


def decubitus_from_dicom(patient_position: str, view_position: str = "") -> bool | None:
    """True for a decubitus patient position (HFDR, HFDL, FFDR, FFDL) or view (RLD, LLD), False
    for any other recorded patient position, None when the patient position is not recorded (a
    view such as PA says nothing about how the patient lay)."""
    position = patient_position.strip().upper()
    if position in DECUBITUS_POSITIONS or view_position.strip().upper() in DECUBITUS_VIEWS:
        return True
    return False if position else None


def study_context(sources: Sequence[Any]) -> StudyContext:
    """The context from the first source image that carries each attribute."""
    age: int | None = None
    projection: Projection = "unknown"
    supine: bool | None = None
    decubitus: bool | None = None
    for ds in sources:
        if age is None:
            age = age_from_dicom(str(ds.get("PatientAge", "") or ""))
        if projection == "unknown":
            projection = projection_from_dicom(str(ds.get("ViewPosition", "") or ""))
        if supine is None:
            supine = supine_from_dicom(str(ds.get("PatientPosition", "") or ""))
        if decubitus is None:
            decubitus = decubitus_from_dicom(
                str(ds.get("PatientPosition", "") or ""), str(ds.get("ViewPosition", "") or "")
            )
    return StudyContext(patient_age=age, projection=projection, supine=supine, decubitus=decubitus)
