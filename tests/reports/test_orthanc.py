"""A real Orthanc (Debian's package) accepts every result object into the source study."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pydicom import Dataset
from tests.support.reports_data import ct_study, cxr_study

from medgate.core.config import ReportsConfig
from medgate.core.uids import derived_uid
from medgate.dicom.orthanc import OrthancServer
from medgate.reports import build_result_objects
from medgate.reports.validate import encode
from medgate.reports.verified_sr import Reviewer, Verdict, build_verified_sr


def test_orthanc_accepts_results_into_the_source_study(
    orthanc_factory: Callable[..., OrthancServer],
    dx: Dataset,
    ct: list[Dataset],
    reports_config: ReportsConfig,
) -> None:
    orthanc = orthanc_factory()
    for sources, study in (([dx], cxr_study(dx)), (ct, ct_study(ct))):
        for ds in sources:
            orthanc.upload(encode(ds))
        objects = build_result_objects(study, sources, reports_config)
        for obj in objects:
            answer = orthanc.upload(encode(obj.dataset))
            assert answer["Status"] == "Success", answer
        instances = orthanc.study_instances(study.study_instance_uid)
        stored = {i["MainDicomTags"]["SOPInstanceUID"] for i in instances}
        expected = {str(ds.SOPInstanceUID) for ds in sources} | {
            str(o.dataset.SOPInstanceUID) for o in objects
        }
        assert stored == expected
        # results are in the source study, under the same patient, in their own series
        study_id = orthanc.find_study(study.study_instance_uid)
        info = orthanc.get(f"/studies/{study_id}")
        assert info["PatientMainDicomTags"]["PatientID"] == sources[0].PatientID
        modalities = {
            orthanc.get(f"/series/{s}")["MainDicomTags"].get("Modality") for s in info["Series"]
        }
        assert {"SR", "OT"} <= modalities
        if any(o.kind == "seg" for o in objects):
            assert "SEG" in modalities
        # sending the same results again replaces nothing new: deterministic UIDs
        again = build_result_objects(study, sources, reports_config)
        for obj in again:
            orthanc.upload(encode(obj.dataset))
        assert len(orthanc.study_instances(study.study_instance_uid)) == len(expected)
        # the radiologist-verified SR joins the same study, in its own series
        ai = next(o.dataset for o in objects if o.kind == "sr")
        first = study.model_results[0]
        tracking = first.findings[0].tracking_id or f"{first.bundle_name} {first.findings[0].label}"
        verified = build_verified_sr(
            ai,
            {tracking: Verdict(first.findings[0].label, "confirmed")},
            Reviewer("Wang^Li", "rad-007", "Upstream Hospital"),
            sop_instance_uid=derived_uid(study.study_instance_uid, "verified"),
            series_instance_uid=derived_uid(study.study_instance_uid, "verified-series"),
            verified_at=dt.datetime.now(dt.UTC),
        )
        assert orthanc.upload(encode(verified))["Status"] == "Success"
        tags = orthanc.get(
            f"/instances/{orthanc.find_instance(str(verified.SOPInstanceUID))}/simplified-tags"
        )
        assert tags["VerificationFlag"] == "VERIFIED"
        assert tags["StudyInstanceUID"] == study.study_instance_uid
