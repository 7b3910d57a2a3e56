"""The study's TID 1500 Measurement Report (highdicom), as the IHE AI Results profile asks.

One SR per study and run set. It carries: language of content; the run set as the device
observer; the procedure reported (from the source study's Procedure Code Sequence, else derived
from the modality); an image library of every source instance; one measurement group per finding
(tracking identifier + UID, finding type and site, a present/absent qualitative evaluation, the
probability as a NUM with unit ``1``, measurements with UCUM units, the source region or the SEG
segment they were made on, the algorithm identification); and, in TID 1500's "Qualitative
Evaluations" container, the guidance for the primary-care doctor as TEXT items in each configured
language, each with its own language modifier. A study without findings still gets an SR with a
"no abnormality detected" evaluation.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from medgate.models.findings import Finding, GuidanceStatement, Measurement, ModelResult
from medgate.reports.codes import (
    ABSENT,
    IMAGING_PROCEDURE,
    LANGUAGES,
    PRESENT,
    PROBABILITY,
    PROCEDURE_BY_MODALITY,
    PROCEDURE_REPORTED_BY_MODALITY,
    QUALITATIVE_EVALUATIONS,
    RECOMMENDATION,
    SOURCE_SERIES_FOR_SEGMENTATION_MEANING,
    UNITY,
    concept,
)
from medgate.reports.context import (
    CHARACTER_SET,
    SERIES_NUMBERS,
    BuildContext,
    device_uid,
    model_equipment,
    models_label,
)
from medgate.reports.errors import ReportError
from medgate.reports.seg import SegIndex, SegRef

NO_ABNORMALITY = hd.sr.CodedConcept("281900007", "SCT", "No abnormality detected")
CLINICAL_FINDING = hd.sr.CodedConcept("404684003", "SCT", "Clinical finding")
COMMENT = codes.DCM.Comment  # 121106: the triage line
SR_CLASSES: dict[str, type[hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR | hd.sr.EnhancedSR]] = {
    "comprehensive3d": hd.sr.Comprehensive3DSR,
    "comprehensive": hd.sr.ComprehensiveSR,
    "enhanced": hd.sr.EnhancedSR,
}

Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def _algorithm(
    result: ModelResult, finding: Finding | None = None
) -> hd.sr.AlgorithmIdentification:
    parameters = [f"threshold={finding.threshold:g}"] if finding is not None else None
    return hd.sr.AlgorithmIdentification(
        name=result.bundle_name[:64], version=result.bundle_version[:64], parameters=parameters
    )


def _measurement(m: Measurement, result: ModelResult, ctx: BuildContext) -> hd.sr.Measurement:
    if m.unit.scheme.upper() != "UCUM":
        raise ReportError(f"{result.bundle_name}: measurement unit {m.unit.value!r} is not UCUM")
    images = [
        hd.sr.SourceImageForMeasurement(str(ctx.source(uid).SOPClassUID), uid)
        for uid in m.source_sop_instance_uids
    ]
    return hd.sr.Measurement(
        name=concept(m.name),
        value=float(m.value),
        unit=hd.sr.CodedConcept(m.unit.value, "UCUM", m.unit.meaning),
        finding_sites=[hd.sr.FindingSite(concept(m.finding_site))] if m.finding_site else None,
        algorithm_id=_algorithm(result),
        referenced_images=images or None,
    )


def _probability(finding: Finding, result: ModelResult) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=PROBABILITY,
        value=float(finding.probability),
        unit=UNITY,
        algorithm_id=_algorithm(result, finding),
    )


def _segment_ref(
    measurements: list[Measurement], result: ModelResult, segs: SegIndex
) -> SegRef | None:
    for m in measurements:
        if m.segment_number is not None:
            ref = segs.refs.get((result.bundle_name, m.segment_number))
            if ref is not None and ref.frames:
                return ref
    return None


def _bbox_region(result: ModelResult, number: int, ctx: BuildContext) -> hd.sr.ImageRegion | None:
    """A polyline around a segment on its (largest) 2D plane, when no SEG is written."""
    seg = result.segmentation
    if seg is None:
        return None
    planes: list[tuple[str, np.ndarray]] = []
    if "volume" in seg.masks:
        planes = list(zip(seg.frame_sop_instance_uids, seg.masks["volume"], strict=False))
    else:
        planes = list(seg.masks.items())
    best = max(planes, key=lambda p: int(np.count_nonzero(p[1] == number)), default=None)
    if best is None or not np.any(best[1] == number):
        return None
    rows, cols = np.nonzero(best[1] == number)
    x0, x1 = float(cols.min()), float(cols.max() + 1)
    y0, y1 = float(rows.min()), float(rows.max() + 1)
    source = ctx.source(best[0])
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]),
        source_image=hd.sr.SourceImageForRegion(str(source.SOPClassUID), best[0]),
    )


def _group_sources(
    uids: list[str], ctx: BuildContext
) -> list[hd.sr.SourceImageForMeasurementGroup]:
    return [
        hd.sr.SourceImageForMeasurementGroup(str(ctx.source(uid).SOPClassUID), uid)
        for uid in sorted(set(uids))
    ]


def _group(
    common: dict[str, Any],
    measurements: list[Measurement],
    result: ModelResult,
    ctx: BuildContext,
    segs: SegIndex,
    allow_roi: bool = True,
) -> Group:
    """The measurement group with the best image reference available: the SEG segment the
    measurements were made on, else a region around the segment, else the source images.

    ``allow_roi=False`` asks for the source images only (TID 1501): see ``_groups``."""
    ref = _segment_ref(measurements, result, segs) if allow_roi else None
    if ref is not None:
        # One segment of the SEG, all its frames: the whole segment is the region.
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=str(ref.dataset.SOPClassUID),
            sop_instance_uid=str(ref.dataset.SOPInstanceUID),
            segment_number=ref.segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(
                str(ctx.source(ref.source_uids[0]).SeriesInstanceUID)
            ),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, **common
        )
    numbers = [m.segment_number for m in measurements if m.segment_number is not None]
    region = _bbox_region(result, numbers[0], ctx) if numbers and allow_roi else None
    if region is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=region, **common
        )
    uids = [u for m in measurements for u in m.source_sop_instance_uids]
    uids = uids or list(result.source_sop_instance_uids)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        source_images=_group_sources(uids, ctx) or None, **common
    )


def _finding_group(
    finding: Finding, result: ModelResult, ctx: BuildContext, segs: SegIndex, allow_roi: bool
) -> Group:
    tracking = hd.sr.TrackingIdentifier(
        uid=ctx.uid(result.bundle_name, "finding", finding.label),
        identifier=(finding.tracking_id or f"{result.bundle_name} {finding.label}")[:64],
    )
    common = {
        "tracking_identifier": tracking,
        "finding_type": concept(finding.finding_type),
        "algorithm_id": _algorithm(result, finding),
        "finding_sites": (
            [hd.sr.FindingSite(concept(finding.finding_site))] if finding.finding_site else None
        ),
        "measurements": [
            _probability(finding, result),
            *(_measurement(m, result, ctx) for m in finding.measurements),
        ],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(
                concept(finding.finding_type), PRESENT if finding.present else ABSENT
            )
        ],
    }
    return _group(common, finding.measurements, result, ctx, segs, allow_roi)


def _measurement_group(
    m: Measurement, result: ModelResult, ctx: BuildContext, segs: SegIndex, allow_roi: bool
) -> Group:
    """A group for a model-level measurement (e.g. the cardiothoracic ratio)."""
    common = {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=ctx.uid(result.bundle_name, "measurement", m.name.scheme, m.name.value),
            identifier=f"{result.bundle_name} {m.name.meaning}"[:64],
        ),
        "algorithm_id": _algorithm(result),
        "finding_sites": [hd.sr.FindingSite(concept(m.finding_site))] if m.finding_site else None,
        "measurements": [_measurement(m, result, ctx)],
    }
    return _group(common, [m], result, ctx, segs, allow_roi)


def _build_groups(ctx: BuildContext, segs: SegIndex, allow_roi: bool) -> list[Group]:
    groups: list[Group] = []
    for result in ctx.study.model_results:
        groups.extend(_finding_group(f, result, ctx, segs, allow_roi) for f in result.findings)
        groups.extend(
            _measurement_group(m, result, ctx, segs, allow_roi) for m in result.measurements
        )
    if not any(r.findings for r in ctx.study.model_results):
        groups.insert(0, _no_finding_group(ctx))
    return groups


def _groups(ctx: BuildContext, segs: SegIndex) -> list[Group]:
    """The report's measurement groups, all of one kind.

    TID 1500 lets one "Imaging Measurements" container mix TID 1501 groups (a classifier's
    findings, on whole images) with TID 1410/1411 groups (measurements on a region or segment),
    but the reference validator (PixelMed's DicomSRValidator) checks every group of the container
    against one template, chosen by whether any group has a region or segment, and so reports
    errors on a mixed report. A mixed report is therefore written with TID 1501 groups only: the
    ROI measurements then reference the images they were made on (the SEG stays in the evidence
    and in the study)."""
    groups = _build_groups(ctx, segs, allow_roi=True)
    kinds = {type(g) is hd.sr.MeasurementsAndQualitativeEvaluations for g in groups}
    return groups if len(kinds) == 1 else _build_groups(ctx, segs, allow_roi=False)


def _no_finding_group(ctx: BuildContext) -> Group:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.uid("no-finding"), identifier="AI: no finding"
        ),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(CLINICAL_FINDING, NO_ABNORMALITY)],
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=models_label(ctx.study), version=ctx.config.manufacturer[:64]
        )
        if not ctx.study.model_results
        else _algorithm(ctx.study.model_results[0]),
    )


def _procedures(ctx: BuildContext) -> list[hd.sr.CodedConcept]:
    """The performed procedure: the source study's codes, else the examination by modality."""
    found = []
    for item in ctx.first.get("ProcedureCodeSequence", []):
        try:
            found.append(hd.sr.CodedConcept.from_dataset(item))
        except (AttributeError, ValueError):
            continue
    if found:
        return found
    modality = str(ctx.first.get("Modality", ""))
    return [PROCEDURE_BY_MODALITY.get(modality, IMAGING_PROCEDURE)]


def _procedure_reported(ctx: BuildContext) -> list[hd.sr.CodedConcept]:
    """TID 1500's "Procedure reported", from CID 100 (see ``codes.PROCEDURE_REPORTED_BY_...``)."""
    modality = str(ctx.first.get("Modality", ""))
    return [PROCEDURE_REPORTED_BY_MODALITY.get(modality, IMAGING_PROCEDURE)]


def _template_meanings(items: Any) -> None:
    """Code meanings as the templates spell them, where highdicom spells them otherwise."""
    for item in items:
        for name in item.get("ConceptNameCodeSequence", []):
            if name.CodeValue == "121232" and name.CodingSchemeDesignator == "DCM":
                name.CodeMeaning = SOURCE_SERIES_FOR_SEGMENTATION_MEANING
        _template_meanings(item.get("ContentSequence", []))


def _text_item(name: hd.sr.CodedConcept, text: str, language: str) -> hd.sr.TextContentItem:
    item = hd.sr.TextContentItem(
        name=name, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    item.ContentSequence = hd.sr.LanguageOfContentItemAndDescendants(LANGUAGES[language])
    return item


def _evaluations_container(
    guidance: list[GuidanceStatement], ctx: BuildContext
) -> hd.sr.ContainerContentItem | None:
    items: list[hd.sr.TextContentItem] = []
    triage = ctx.study.triage
    if triage is not None:
        reasons = "; ".join(triage.reasons) or "-"
        items.append(
            _text_item(COMMENT, f"AI triage priority: {triage.priority} ({reasons})", "en")
        )
    for statement in guidance:
        for language in ctx.config.languages:
            text = statement.text.get(language)
            if text:
                cite = f" [{statement.rule_id} {statement.rule_version}; {statement.guideline}]"
                items.append(_text_item(RECOMMENDATION, text + cite, language))
    if not items:
        return None
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_sr(ctx: BuildContext, segs: SegIndex, guidance: list[GuidanceStatement]) -> Dataset:
    """The Measurement Report for the study, in ``config.sr_class``."""
    groups = _groups(ctx, segs)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_observer_uid(ctx),
            name="medgate AI",
            manufacturer_name=ctx.config.manufacturer[:64],
            model_name=models_label(ctx.study),
        ),
    )
    root_language = "en" if "en" in ctx.config.languages else ctx.config.languages[0]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_procedure_reported(ctx),
        imaging_measurements=groups,
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            LANGUAGES[root_language]
        ),
        referenced_images=list(ctx.sources.values()),
    )
    container = _evaluations_container(guidance, ctx)
    if container is not None:
        report[0].ContentSequence.append(container)
    _template_meanings(report[0].ContentSequence)
    sr_class = SR_CLASSES[ctx.config.sr_class]
    return sr_class(
        evidence=[*ctx.sources.values(), *segs.datasets],
        content=report[0],
        series_instance_uid=ctx.uid("sr", "series"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=ctx.uid("sr", "instance"),
        instance_number=1,
        manufacturer=ctx.config.manufacturer[:64],
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=ctx.config.institution_name[:64],
        performed_procedure_codes=_procedures(ctx),
        contributing_equipment=[model_equipment(r, ctx.config) for r in ctx.study.model_results],
        series_description="AI measurement report"[:64],
        manufacturer_model_name=models_label(ctx.study),
        software_versions=_software_versions(ctx),
        specific_character_set=CHARACTER_SET,
    )


def _observer_uid(ctx: BuildContext) -> str:
    results = ctx.study.model_results
    if len(results) == 1:
        return device_uid(results[0])
    return ctx.uid("device-observer")


def _software_versions(ctx: BuildContext) -> str | list[str]:
    from medgate import __version__

    versions = [f"medgate {__version__}"]
    versions += [f"{r.bundle_name} {r.bundle_version}"[:64] for r in ctx.study.model_results]
    return versions[0] if len(versions) == 1 else versions
