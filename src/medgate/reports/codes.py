"""Coded concepts the reports use, and the bridge from the findings contract to highdicom.

Models name their findings with codes from their bundle metadata; the reports turn those codes
into highdicom ``CodedConcept`` objects here. Which findings the guidance rules act on is a
clinical question and lives in ``medgate.clinical.findings``.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from medgate.models.findings import Code

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


def concept(code: Code) -> CodedConcept:
    """The highdicom concept for a contract ``Code``; raises ValueError on an empty value."""
    if not code.value or not code.scheme or not code.meaning:
        raise ValueError(f"incomplete code {code!r}: value, scheme and meaning are required")
    return CodedConcept(code.value, code.scheme, code.meaning[:64])
