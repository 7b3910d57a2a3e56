"""SR / SEG / overlay / summary: standard-valid, readable back, deterministic, all-or-none."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from tests.support.reports_data import DOCS_IMAGES, HEART, ct_study, cxr_study, make_ct, make_dx
from tests.support.tools import require_tool

from medgate.core.config import ReportsConfig
from medgate.models.findings import StudyResult
from medgate.reports import ReportError, ResultObject, build_result_objects
from medgate.reports.builder import build_result_objects_with_pages
from medgate.reports.codes import PROCESSING_EQUIPMENT
from medgate.reports.validate import dciodvfy, dicom_sr_validator, encode

#: dciodvfy warnings we accept, each with the reason (docs/reports.md repeats them).
ACCEPTED_WARNINGS: tuple[str, ...] = (
    # pydicom's CT_small.dcm says PatientWeight 0.0; the Patient Study module is copied from the
    # source verbatim (changing patient data is not the gateway's business).
    "PatientWeight(0010,1030)[1]> - Value is zero",
    # CT_small.dcm has no Body Part Examined, so whether the part is paired is unknown: the
    # secondary captures then send Laterality empty (= unknown) rather than guess one.
    "Laterality(0020,0060)> - is only permitted to be empty when actually unknown",
)


#: PixelMed DicomSRValidator warnings we accept, each with the reason (docs/reports.md explains
#: them at length). Errors are never accepted.
ACCEPTED_SR_WARNINGS: tuple[tuple[str, str], ...] = (
    # The guidance TEXT items carry their own language (Chinese and English side by side);
    # PixelMed's TID 1500 row 14 (TEXT in "Qualitative Evaluations") lists no children.
    ('Language of Content Item and Descendants"): Content Item not in template', "language"),
    # The finding's present/absent qualitative evaluation (highdicom's QualitativeEvaluation in
    # the measurement group); PixelMed 20220618's TID 1501/1411 tables have no row for it.
    ('"Measurement Group")/CODE (', "qualitative evaluation"),
    # Algorithm identification (TID 4019) at group level: PixelMed's TID 1501 includes it, its
    # TID 1411 (volumetric groups) does not.
    ('"Measurement Group")/TEXT (11100', "algorithm identification"),
)


def _assert_sr_validator_clean(sr: Dataset) -> None:
    require_tool("java")
    result = dicom_sr_validator(sr)
    assert result.errors == [], result.output
    unexpected = [w for w in result.warnings if not any(p in w for p, _ in ACCEPTED_SR_WARNINGS)]
    assert unexpected == [], result.output
    assert "Found Root Template TID_1500 (MeasurementReport)" in result.output


def _by_kind(objects: list[ResultObject], kind: str) -> list[Dataset]:
    return [o.dataset for o in objects if o.kind == kind]


def _assert_dciodvfy_clean(objects: list[ResultObject]) -> None:
    require_tool("dciodvfy")
    for obj in objects:
        result = dciodvfy(obj.dataset)
        assert result.errors == [], f"{obj.kind}: {result.output}"
        unexpected = [w for w in result.warnings if not any(a in w for a in ACCEPTED_WARNINGS)]
        assert unexpected == [], f"{obj.kind}: {result.output}"


def _groups(report: hd.sr.MeasurementReport) -> list:
    return [
        *report.get_image_measurement_groups(),
        *report.get_planar_roi_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
    ]


@pytest.fixture
def cxr_objects(dx: Dataset, reports_config: ReportsConfig) -> tuple[StudyResult, list]:
    study = cxr_study(dx)
    return study, build_result_objects(study, [dx], reports_config)


@pytest.fixture
def ct_objects(ct: list[Dataset], reports_config: ReportsConfig) -> tuple[StudyResult, list]:
    study = ct_study(ct)
    return study, build_result_objects(study, ct, reports_config)


def test_cxr_objects_pass_dciodvfy(cxr_objects: tuple[StudyResult, list]) -> None:
    _, objects = cxr_objects
    assert sorted(o.kind for o in objects) == ["overlay", "overlay", "seg", "sr", "summary"]
    _assert_dciodvfy_clean(objects)


def test_ct_objects_pass_dciodvfy(ct_objects: tuple[StudyResult, list]) -> None:
    _, objects = ct_objects
    assert sorted(o.kind for o in objects) == ["overlay", "seg", "sr", "summary"]
    _assert_dciodvfy_clean(objects)


def test_ai_srs_pass_pixelmed_sr_validator(
    cxr_objects: tuple[StudyResult, list], ct_objects: tuple[StudyResult, list]
) -> None:
    """The reference SR validator: 0 errors on the CXR (TID 1501 groups) and CT (TID 1411) SRs,
    and only the warnings explained in docs/reports.md."""
    for _, objects in (cxr_objects, ct_objects):
        _assert_sr_validator_clean(_by_kind(objects, "sr")[0])


@pytest.mark.parametrize("sr_class", ["enhanced", "comprehensive"])
def test_other_sr_classes_pass_dciodvfy(dx: Dataset, sr_class: str) -> None:
    config = ReportsConfig(sr_class=sr_class, write_overlay=False, write_summary=False)
    objects = build_result_objects(cxr_study(dx), [dx], config)
    sr = _by_kind(objects, "sr")[0]
    expected = {
        "enhanced": "1.2.840.10008.5.1.4.1.1.88.22",
        "comprehensive": "1.2.840.10008.5.1.4.1.1.88.33",
    }
    assert sr.SOPClassUID == expected[sr_class]
    _assert_dciodvfy_clean(objects)


def test_sr_renders_in_dsrdump(cxr_objects: tuple[StudyResult, list], tmp_path: Path) -> None:
    dsrdump = require_tool("dsrdump")
    _, objects = cxr_objects
    path = tmp_path / "sr.dcm"
    path.write_bytes(encode(_by_kind(objects, "sr")[0]))
    proc = subprocess.run([dsrdump, "-Ec", str(path)], capture_output=True, timeout=60)
    text = proc.stdout.decode("utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    assert "Imaging Measurement Report" in text
    assert "Verification Flag   : UNVERIFIED" in text
    assert "Completion Flag     : COMPLETE" in text
    assert '(36118008,SCT,"Pneumothorax")' in text
    assert "Probability" in text
    assert "Recommendation" in text
    assert "Chinese (S)" in text


def test_sr_reads_back_the_same_findings(cxr_objects: tuple[StudyResult, list]) -> None:
    study, objects = cxr_objects
    sr_ds = _by_kind(objects, "sr")[0]
    sr = hd.sr.srread(io.BytesIO(encode(sr_ds)))
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = {g.tracking_identifier: g for g in _groups(report)}
    for result in study.model_results:
        for finding in result.findings:
            group = groups[f"{result.bundle_name} {finding.label}"]
            assert group.finding_type.value == finding.finding_type.value
            assert group.finding_type.scheme_designator == finding.finding_type.scheme
            assert [s.value.value for s in group.finding_sites] == [finding.finding_site.value]
            (evaluation,) = group.get_qualitative_evaluations()
            assert evaluation.name.value == finding.finding_type.value
            assert evaluation.value.value == ("52101004" if finding.present else "272519000")
            (probability,) = group.get_measurements(
                name=hd.sr.CodedConcept("122157", "DCM", "Probability")
            )
            assert probability.value == pytest.approx(finding.probability)
            assert probability.unit.value == "1"
        for measurement in result.measurements:
            group = groups[f"{result.bundle_name} {measurement.name.meaning}"]
            (read,) = group.get_measurements()
            assert read.name.value == measurement.name.value
            assert read.value == pytest.approx(measurement.value)
            assert read.unit.value == measurement.unit.value
            assert read.unit.scheme_designator == "UCUM"
            assert [s.value.value for s in read.finding_sites] == [HEART.value]
            # the CTR was measured on the heart segment, but the report also has whole-image
            # classifier groups: all groups are TID 1501 (see sr._groups) and the CTR group
            # refers to the radiograph it was measured on
            assert isinstance(group, hd.sr.MeasurementsAndQualitativeEvaluations)
            assert [i.referenced_sop_instance_uid for i in group.source_images] == [
                measurement.source_sop_instance_uids[0]
            ]
    (observer,) = [c for c in report.get_observer_contexts() if c.observer_type.value == "121007"]
    assert observer.observer_identifying_attributes.model_name.startswith("cxr_classifier 1.2.0")
    # study, series, flags, evidence, equipment
    assert sr_ds.StudyInstanceUID == study.study_instance_uid
    assert sr_ds.VerificationFlag == "UNVERIFIED"
    assert sr_ds.CompletionFlag == "COMPLETE"
    evidence = sr_ds.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in evidence.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert {str(ds.SOPInstanceUID) for ds in _by_kind(objects, "seg")} <= referenced
    models = [
        item
        for item in sr_ds.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodeValue == PROCESSING_EQUIPMENT.value
        and item.Manufacturer == "medgate"
    ]
    assert {m.ManufacturerModelName for m in models} == {"cxr_classifier", "cxr_lung_heart_seg"}
    assert "2.25.1234567890123456789" in {m.DeviceSerialNumber for m in models}


def test_sr_carries_guidance_text_in_both_languages(cxr_objects: tuple[StudyResult, list]) -> None:
    _, objects = cxr_objects
    sr = _by_kind(objects, "sr")[0]
    (container,) = [
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
    ]
    texts = [
        (item.ContentSequence[0].ConceptCodeSequence[0].CodeValue, item.TextValue)
        for item in container.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121075"  # Recommendation
    ]
    # two statements (enlarged heart, effusion), each in Chinese then English, tagged by language
    assert [language for language, _ in texts] == ["zh-CN", "en-US", "zh-CN", "en-US"]
    assert "超声心动图" in texts[0][1] and "echocardiography" in texts[1][1]
    assert "ctr-enlarged-heart" in texts[0][1] and "ESC Heart Failure" in texts[1][1]
    all_text = " ".join(item.TextValue for item in container.ContentSequence)
    assert "echocardiography" in all_text and "胸腔积液" in all_text
    assert "AI triage priority: urgent" in all_text
    # Chinese survives a Part 10 round trip (UTF-8)
    back = dcmread(io.BytesIO(encode(sr)))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "张^三"


def test_ct_sr_references_the_seg_and_measurement(
    ct: list[Dataset], ct_objects: tuple[StudyResult, list]
) -> None:
    study, objects = ct_objects
    sr = hd.sr.srread(io.BytesIO(encode(_by_kind(objects, "sr")[0])))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.tracking_identifier == "nodule 1"
    assert group.finding_type.value == "27925004"
    diameter = group.get_measurements(name=hd.sr.CodedConcept("81827009", "SCT", "Diameter"))[0]
    assert diameter.value == pytest.approx(7.0)
    assert diameter.unit.value == "mm"
    seg = _by_kind(objects, "seg")[0]
    ref = group.referenced_segment
    assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert ref.referenced_segment_numbers == [1]
    assert ref.source_series_for_segmentation.value == ct[0].SeriesInstanceUID
    assert study.model_results[0].findings[0].present


def test_seg_reads_back_mask_and_codes(ct: list[Dataset], ct_objects: tuple) -> None:
    study, objects = ct_objects
    (seg_ds,) = _by_kind(objects, "seg")
    seg = hd.seg.segread(io.BytesIO(encode(seg_ds)))
    (number,) = seg.segment_numbers
    description = seg.get_segment_description(number)
    assert description.segmented_property_type.value == "27925004"
    assert description.segmented_property_category.value == "49755003"
    assert description.algorithm_identification[0].AlgorithmName == "ct_nodule_seg"
    assert seg.SeriesInstanceUID != ct[0].SeriesInstanceUID
    source_series = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    assert source_series == {ct[0].SeriesInstanceUID}
    uids = [str(ds.SOPInstanceUID) for ds in ct]
    mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[number], combine_segments=True)
    expected = study.model_results[0].segmentation.masks["volume"]
    assert np.array_equal(mask.astype(bool), expected.astype(bool))


def test_overlays_are_labelled_secondary_captures(cxr_objects: tuple, dx: Dataset) -> None:
    _, objects = cxr_objects
    overlays = _by_kind(objects, "overlay")
    for overlay in overlays:
        assert overlay.BurnedInAnnotation == "YES"
        assert overlay.StudyInstanceUID == dx.StudyInstanceUID
        assert overlay.SourceImageSequence[0].ReferencedSOPInstanceUID == dx.SOPInstanceUID
        assert overlay.PhotometricInterpretation == "RGB"
        pixels = overlay.pixel_array
        # the burned-in label band is red text on black at the top-left
        band = pixels[:30, :200]
        assert (band[..., 0] > 200).any() and (band[..., 1] < 100).any()
    assert len({o.SeriesInstanceUID for o in overlays}) == 1


def test_reprocessing_yields_identical_uids(dx: Dataset, reports_config: ReportsConfig) -> None:
    first = build_result_objects(cxr_study(dx), [dx], reports_config)
    again = build_result_objects(cxr_study(dx), [dx], reports_config)
    assert [o.dataset.SOPInstanceUID for o in first] == [o.dataset.SOPInstanceUID for o in again]
    assert [o.dataset.SeriesInstanceUID for o in first] == [
        o.dataset.SeriesInstanceUID for o in again
    ]
    other = make_dx(seed=5)
    third = build_result_objects(cxr_study(other), [other], reports_config)
    assert not {o.dataset.SOPInstanceUID for o in first} & {o.dataset.SOPInstanceUID for o in third}


def test_study_without_findings_still_gets_an_sr(reports_config: ReportsConfig) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    study = StudyResult(study_instance_uid=str(ds.StudyInstanceUID))
    objects = build_result_objects(study, [ds], reports_config)
    assert [o.kind for o in objects] == ["sr", "summary"]
    _assert_dciodvfy_clean(objects)
    sr = hd.sr.srread(io.BytesIO(encode(objects[0].dataset)))
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.value.value == "281900007"  # No abnormality detected
    texts = " ".join(
        item.TextValue
        for container in objects[0].dataset.ContentSequence
        if container.ValueType == "CONTAINER"
        for item in container.get("ContentSequence", [])
        if item.ValueType == "TEXT"
    )
    assert "AI found no abnormality" in texts and "AI未发现其可识别的异常" in texts


def test_bad_input_raises_and_builds_nothing(dx: Dataset, reports_config: ReportsConfig) -> None:
    study = cxr_study(dx)
    study.model_results[1].segmentation.masks[str(dx.SOPInstanceUID)] = np.ones((10, 10), np.uint8)
    with pytest.raises(ReportError, match="source grid"):
        build_result_objects(study, [dx], reports_config)
    stranger = make_dx(seed=9)
    with pytest.raises(ReportError, match="another study"):
        build_result_objects(cxr_study(dx), [stranger], reports_config)
    with pytest.raises(ReportError, match="no source"):
        build_result_objects(cxr_study(dx), [], reports_config)
    bad_unit = cxr_study(dx)
    bad_unit.model_results[1].measurements[0].unit = HEART
    with pytest.raises(ReportError, match="UCUM"):
        build_result_objects(bad_unit, [dx], reports_config)


def test_save_overlay_and_summary_pictures(dx: Dataset, reports_config: ReportsConfig) -> None:
    """The pictures the docs show (docs/images), from the same code path as the DICOM objects."""
    objects, pages = build_result_objects_with_pages(cxr_study(dx), [dx], reports_config)
    ct = make_ct(slices=12, size=96)
    _, ct_pages = build_result_objects_with_pages(ct_study_for(ct), ct, reports_config)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    pages.overlays[0].save(DOCS_IMAGES / "overlay_cxr_segmentation.png")
    pages.overlays[1].save(DOCS_IMAGES / "overlay_cxr_heatmap.png")
    pages.summary.save(DOCS_IMAGES / "summary_cxr.png")
    ct_pages.overlays[0].save(DOCS_IMAGES / "overlay_ct_nodule.png")
    ct_pages.summary.save(DOCS_IMAGES / "summary_ct.png")
    summary = _by_kind(objects, "summary")[0]
    assert (summary.Rows, summary.Columns) == (pages.summary.height, pages.summary.width)
    assert np.array_equal(summary.pixel_array, np.asarray(pages.summary))
    for name in ("overlay_cxr_segmentation", "summary_cxr", "overlay_ct_nodule", "summary_ct"):
        assert (DOCS_IMAGES / f"{name}.png").stat().st_size > 10_000


def ct_study_for(ct: list[Dataset]) -> StudyResult:
    """The CT study with the nodule mask recomputed for the image size used."""
    return ct_study(ct)


def test_verified_sr_passes_both_validators_and_reads_back(
    cxr_objects: tuple[StudyResult, list],
) -> None:
    """The radiologist-verified SR (verdicts applied to the AI SR): dciodvfy clean, PixelMed 0
    errors, highdicom reads the verdicts, the observer and the predecessor."""
    import datetime as dt

    from medgate.reports.verified_sr import Reviewer, Verdict, build_verified_sr

    study, objects = cxr_objects
    ai = _by_kind(objects, "sr")[0]
    verified = build_verified_sr(
        ai,
        {
            "cxr_classifier effusion": Verdict("effusion", "confirmed", comment="meniscus"),
            "cxr_classifier cardiomegaly": Verdict("cardiomegaly", "rejected"),
        },
        Reviewer("Wang^Li", "rad-007", "Upstream Hospital"),
        sop_instance_uid="2.25.1001",
        series_instance_uid="2.25.1002",
        verified_at=dt.datetime(2026, 12, 6, 1, 2, 3, tzinfo=dt.UTC),
        report_text="Small effusion; heart size normal.",
    )
    result = dciodvfy(verified)
    assert result.errors == [] and result.warnings == [], result.output
    _assert_sr_validator_clean(verified)
    sr = hd.sr.srread(io.BytesIO(encode(verified)))
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Wang^Li"
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == "20261206010203+0000"
    ref = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ai.SOPInstanceUID
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = {g.tracking_identifier: g for g in _groups(report)}
    value = {
        k: g.get_qualitative_evaluations()[0].value.value
        for k, g in groups.items()
        if k != "cxr_lung_heart_seg Cardiothoracic Area Ratio"
    }
    # effusion was present (confirmed: stays), cardiomegaly present (rejected: absent),
    # pneumothorax had no verdict (stays as the AI said: absent)
    assert value == {
        "cxr_classifier effusion": "52101004",
        "cxr_classifier cardiomegaly": "272519000",
        "cxr_classifier pneumothorax": "272519000",
    }
    persons = [c for c in report.get_observer_contexts() if c.observer_type.value == "121006"]
    assert len(persons) == 1
    texts = [i.TextValue for i in sr.ContentSequence[-1].ContentSequence if i.ValueType == "TEXT"]
    assert "Radiologist verdict: effusion confirmed: meniscus" in texts
    assert "Small effusion; heart size normal." in texts
    # the AI's algorithm identification and probabilities stay as the AI reported them
    assert study.model_results[0].findings[1].probability == pytest.approx(
        groups["cxr_classifier effusion"].get_measurements()[0].value
    )
