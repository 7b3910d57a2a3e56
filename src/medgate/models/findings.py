"""The findings contract between model deployments, the pipeline, the reports and the API.

A model run produces a ``ModelResult``: coded findings with probabilities, measurements with UCUM
units and, for segmentation models, label masks on the source image grid. The reports module turns
these into SR / SEG / overlays without knowing which model made them, and the API serialises them
as JSON. Masks are numpy arrays and are excluded from JSON.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Code(BaseModel):
    """A coded concept (SNOMED CT ``SCT``, RadLex ``RADLEX``, DICOM ``DCM``, UCUM ``UCUM``)."""

    model_config = ConfigDict(frozen=True)

    value: str
    scheme: str
    meaning: str


class Measurement(BaseModel):
    """A numeric measurement with its UCUM unit (e.g. nodule diameter in ``mm``, CTR in ``1``)."""

    name: Code
    value: float
    unit: Code
    finding_site: Code | None = None
    segment_number: int | None = Field(default=None, description="SEG segment this was measured on")
    source_sop_instance_uids: list[str] = Field(default_factory=list)


class Finding(BaseModel):
    """A qualitative evaluation: a coded finding, present or absent, with its probability."""

    label: str = Field(description="the bundle's output label, e.g. 'nodule'")
    finding_type: Code
    finding_site: Code | None = None
    probability: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    present: bool
    measurements: list[Measurement] = Field(default_factory=list)
    tracking_id: str | None = Field(default=None, description="human-readable tracking identifier")


class Segment(BaseModel):
    """One segment of a label mask: which label value in the mask, and what it is."""

    number: int = Field(ge=1)
    label: str
    category: Code
    type: Code
    finding_site: Code | None = None


class SegmentationOutput(BaseModel):
    """Label masks aligned with source images: ``masks[sop_instance_uid]`` is (rows, cols) uint8,
    or for a volume one (frames, rows, cols) array under the key ``"volume"`` with
    ``frame_sop_instance_uids`` giving the source instance of each frame."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    segments: list[Segment]
    masks: dict[str, np.ndarray] = Field(default_factory=dict, exclude=True)
    frame_sop_instance_uids: list[str] = Field(default_factory=list)


class ModelResult(BaseModel):
    """What one bundle said about one study."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    bundle_name: str
    bundle_version: str
    task: Literal["classification", "segmentation", "detection", "triage", "tabular"]
    findings: list[Finding] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    segmentation: SegmentationOutput | None = None
    heatmaps: dict[str, np.ndarray] = Field(
        default_factory=dict, exclude=True, description="sop_instance_uid -> float map in [0, 1]"
    )
    source_sop_instance_uids: list[str] = Field(default_factory=list)
    device_uid: str | None = Field(
        None, description="UID identifying this trained model; changes with every retrain"
    )
    scores: dict[str, float] = Field(
        default_factory=dict,
        description="label -> probability as the model gave it; without thresholds (a plain "
        "MONAI bundle) these are the only output, with no present/absent call",
    )


Priority = Literal["critical", "urgent", "routine"]


class TriageResult(BaseModel):
    """A study's priority and the reasons for it."""

    priority: Priority
    reasons: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    bundle_name: str | None = None
    bundle_version: str | None = None


class GuidanceStatement(BaseModel):
    """A plain-language recommendation for a primary-care doctor, citing rule and guideline."""

    rule_id: str
    rule_version: str
    urgency: Literal["emergency", "urgent", "soon", "routine", "none"]
    text: dict[str, str] = Field(description="language code ('zh', 'en') -> text")
    guideline: str


class StudyResult(BaseModel):
    """Everything medgate concluded about one study."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    study_instance_uid: str
    model_results: list[ModelResult] = Field(default_factory=list)
    triage: TriageResult | None = None
    guidance: list[GuidanceStatement] = Field(default_factory=list)
