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

#: Languages of content: RFC 5646 tags with the code meanings of CID 5000 (as the reference SR
#: validator, PixelMed's DicomSRValidator, lists them).
LANGUAGES: dict[str, CodedConcept] = {
    "zh": CodedConcept("zh-CN", "RFC5646", "Chinese (S)"),
    "en": CodedConcept("en-US", "RFC5646", "English (United States)"),
}

#: The performed procedure (the SR header's Performed Procedure Code Sequence) when the source
#: study carries no Procedure Code Sequence: the specific examination.
PROCEDURE_BY_MODALITY: dict[str, CodedConcept] = {
    "CT": CodedConcept("169069000", "SCT", "Computed tomography of chest"),
    "DX": CodedConcept("399208008", "SCT", "Plain chest X-ray"),
    "CR": CodedConcept("399208008", "SCT", "Plain chest X-ray"),
}
#: TID 1500's "Procedure reported" (content tree) takes its codes from CID 100 "Quantitative
#: Diagnostic Imaging Procedures", which has no chest CT or chest radiograph entry: the CT code
#: there is LOINC's "CT unspecified body region", everything else is "Imaging procedure".
IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
PROCEDURE_REPORTED_BY_MODALITY: dict[str, CodedConcept] = {
    "CT": CodedConcept("25045-6", "LN", "CT unspecified body region"),
}
#: TID 1411's concept name for the source series of a segmentation, spelled as the template
#: spells it (highdicom writes "Source Series for Segmentation").
SOURCE_SERIES_FOR_SEGMENTATION_MEANING = "Source series for segmentation"


def concept(code: Code) -> CodedConcept:
    """The highdicom concept for a contract ``Code``; raises ValueError on an empty value."""
    if not code.value or not code.scheme or not code.meaning:
        raise ValueError(f"incomplete code {code!r}: value, scheme and meaning are required")
    return CodedConcept(code.value, code.scheme, code.meaning[:64])
