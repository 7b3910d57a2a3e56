"""Coded concepts the reports use, and the bridge from the findings contract to highdicom.

Models name their findings with codes from their bundle metadata; the reports module only needs
to (a) turn those codes into highdicom ``CodedConcept`` objects and (b) recognise the few
findings the guidance rules act on. Recognition goes by code *and* by label/meaning, so a bundle
that uses RadLex instead of SNOMED CT for a nodule still gets its follow-up advice.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from medgate.models.findings import Code, Finding, Measurement

# ----------------------------------------------------------------------------- fixed concepts
PRESENT = codes.SCT.Present  # 52101004
ABSENT = codes.SCT.Absent  # 272519000
PROBABILITY = codes.DCM.Probability  # 122157
UNITY = CodedConcept("1", "UCUM", "no units")
RECOMMENDATION = codes.DCM.Recommendation  # 121075
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence  # DCM 123110
#: Purpose of reference for the model in ContributingEquipmentSequence (CID 7005): the model
#: *processed* the source images to derive new objects. 109103 "Modifying Equipment" would
#: claim the source images were changed, which they are not.
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment  # 109102

#: Languages of content (CID 5000 uses RFC 5646 tags).
LANGUAGES: dict[str, CodedConcept] = {
    "zh": CodedConcept("zh-CN", "RFC5646", "Chinese, China"),
    "en": CodedConcept("en-US", "RFC5646", "English, United States"),
}

#: Procedure codes when the source study carries none (Procedure Code Sequence).
PROCEDURE_BY_MODALITY: dict[str, CodedConcept] = {
    "CT": CodedConcept("169069000", "SCT", "Computed tomography of chest"),
    "DX": CodedConcept("399208008", "SCT", "Plain chest X-ray"),
    "CR": CodedConcept("399208008", "SCT", "Plain chest X-ray"),
}
IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging")

# ----------------------------------------------------------------------------- recognised findings
NODULE_CODES = {("SCT", "27925004"), ("SCT", "786838002"), ("SCT", "427359005")}
PNEUMOTHORAX_CODES = {("SCT", "36118008")}
EFFUSION_CODES = {("SCT", "60046008")}
CARDIOMEGALY_CODES = {("SCT", "287272002"), ("SCT", "8186001")}
CTR_CODES = {("LN", "59076-0"), ("99MEDGATE", "CTR")}
#: Measurement names that give a nodule's size (Fleischner: mean of long and short axis).
DIAMETER_CODES = {("SCT", "81827009")}
LONG_AXIS_CODES = {("SCT", "103339001")}
SHORT_AXIS_CODES = {("SCT", "103340004")}


def concept(code: Code) -> CodedConcept:
    """The highdicom concept for a contract ``Code``; raises ValueError on an empty value."""
    if not code.value or not code.scheme or not code.meaning:
        raise ValueError(f"incomplete code {code!r}: value, scheme and meaning are required")
    return CodedConcept(code.value, code.scheme, code.meaning[:64])


def contract_code(coded: CodedConcept) -> Code:
    """The contract ``Code`` for a highdicom concept read back from an SR."""
    return Code(value=coded.value, scheme=coded.scheme_designator, meaning=coded.meaning)


def _key(code: Code | None) -> tuple[str, str] | None:
    return None if code is None else (code.scheme.upper(), code.value)


def finding_is(finding: Finding, kind: str) -> bool:
    """Whether ``finding`` is a nodule / pneumothorax / effusion / cardiomegaly."""
    sets = {
        "nodule": NODULE_CODES,
        "pneumothorax": PNEUMOTHORAX_CODES,
        "effusion": EFFUSION_CODES,
        "cardiomegaly": CARDIOMEGALY_CODES,
    }
    words = {
        "nodule": ("nodule",),
        "pneumothorax": ("pneumothorax",),
        "effusion": ("effusion",),
        "cardiomegaly": ("cardiomegaly", "enlarged heart"),
    }
    if _key(finding.finding_type) in sets[kind]:
        return True
    text = f"{finding.label} {finding.finding_type.meaning}".lower().replace("_", " ")
    return any(word in text for word in words[kind])


def measurement_is_ctr(measurement: Measurement) -> bool:
    """Whether ``measurement`` is a cardiothoracic ratio."""
    if _key(measurement.name) in CTR_CODES:
        return True
    meaning = measurement.name.meaning.lower()
    return "cardiothoracic" in meaning or measurement.name.value.lower() == "ctr"


def axis_kind(measurement: Measurement) -> str | None:
    """'diameter', 'long' or 'short' for a size measurement in mm, else None."""
    if measurement.unit.value != "mm":
        return None
    key = _key(measurement.name)
    meaning = measurement.name.meaning.lower()
    if key in LONG_AXIS_CODES or "long axis" in meaning:
        return "long"
    if key in SHORT_AXIS_CODES or "short axis" in meaning:
        return "short"
    if key in DIAMETER_CODES or "diameter" in meaning:
        return "diameter"
    return None
