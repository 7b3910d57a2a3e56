"""Label, code and preprocessing presets for the chest radiograph bundles.

The codes are what the SR and SEG writers put into the PACS, so they are chosen from SNOMED CT
where a concept exists; the cardiothoracic ratio has no code that we could verify offline and
uses the local scheme ``99MEDGATE`` (a private coding scheme, allowed by DICOM).
"""

from __future__ import annotations

from typing import Any

from medgate.models.bundle import (
    MeasurementDef,
    OutputLabel,
    Postprocessing,
    Preprocessing,
    Routing,
    TransformSpec,
)
from medgate.models.findings import Code

SCT = "SCT"

LUNG = Code(value="39607008", scheme=SCT, meaning="Lung structure")
HEART = Code(value="80891009", scheme=SCT, meaning="Heart structure")
PLEURA = Code(value="3120008", scheme=SCT, meaning="Pleural membrane structure")
ANATOMICAL_STRUCTURE = Code(value="91723000", scheme=SCT, meaning="Anatomical Structure")
UNITLESS = Code(value="1", scheme="UCUM", meaning="no units")
CTR = Code(value="CTR", scheme="99MEDGATE", meaning="Cardiothoracic ratio")


def _label(
    name: str, index: int, code: Code, site: Code, en: str, zh: str, **extra: Code
) -> OutputLabel:
    """One output label with its finding site and its plain-language names."""
    return OutputLabel(
        name=name,
        index=index,
        code=code,
        finding_site=site,
        description={"en": en, "zh": zh},
        **extra,
    )


def _finding(value: str, meaning: str) -> Code:
    return Code(value=value, scheme=SCT, meaning=meaning)


CXR_FINDING_LABELS: list[OutputLabel] = [
    _label(
        "nodule", 0, _finding("786838002", "Pulmonary nodule"), LUNG, "lung nodule or mass",
        "肺结节或肿块",
    ),
    _label(
        "effusion", 1, _finding("60046008", "Pleural effusion"), PLEURA, "pleural effusion",
        "胸腔积液",
    ),
    _label(
        "pneumothorax", 2, _finding("36118008", "Pneumothorax"), PLEURA, "pneumothorax", "气胸"
    ),
    _label(
        "cardiomegaly", 3, _finding("8186001", "Cardiomegaly"), HEART, "enlarged heart",
        "心脏增大",
    ),
]  # fmt: skip

LUNG_HEART_LABELS: list[OutputLabel] = [
    _label("lung", 1, LUNG, LUNG, "lung fields", "肺野", category=ANATOMICAL_STRUCTURE),
    _label("heart", 2, HEART, HEART, "heart", "心脏", category=ANATOMICAL_STRUCTURE),
]

CTR_MEASUREMENT = MeasurementDef(
    name="cardiothoracic_ratio",
    code=CTR,
    unit=UNITLESS,
    method="cardiothoracic_ratio",
    finding_site=HEART,
    reference_range=(0.0, 0.5),
)

CXR_ROUTING = Routing(
    modalities=["DX", "CR"],
    body_parts=["CHEST"],
    sop_class_uids=[
        "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
        "1.2.840.10008.5.1.4.1.1.1",  # CR
    ],
    max_slices=1,
)


def radiograph_preprocessing(size: int) -> Preprocessing:
    """Percentile intensity window to [0, 1], then area resize to ``size`` x ``size``."""
    return Preprocessing(
        input_kind="radiograph",
        spatial_size=[size, size],
        transforms=[
            TransformSpec(
                name="ScaleIntensityRangePercentiles",
                args={"lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True},
            ),
            TransformSpec(name="Resize", args={"spatial_size": [size, size], "mode": "area"}),
        ],
    )


def preset(name: str, size: int) -> dict[str, Any]:
    """The MedgateSpec fields (except metrics/checksums) for a preset name."""
    if name == "cxr_findings":
        return {
            "task": "classification",
            "labels": CXR_FINDING_LABELS,
            "preprocessing": radiograph_preprocessing(size),
            "postprocessing": Postprocessing(
                activation="sigmoid", output="logits", heatmap_output="maps"
            ),
            "routing": CXR_ROUTING,
        }
    if name == "cxr_lung_heart":
        return {
            "task": "segmentation",
            "labels": LUNG_HEART_LABELS,
            "measurements": [CTR_MEASUREMENT],
            "preprocessing": radiograph_preprocessing(size),
            "postprocessing": Postprocessing(activation="softmax", output="logits"),
            "routing": CXR_ROUTING,
        }
    raise ValueError(f"unknown preset {name!r}; known: cxr_findings, cxr_lung_heart")
