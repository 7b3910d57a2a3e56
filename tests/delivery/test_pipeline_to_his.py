"""End to end without Ray: a clinic's modality sends a radiograph (DCMTK storescu, calling AE of
site A) to medgate's receiver; the worker runs the real tiny ONNX model in-process; the delivery
loop sends the preliminary ORU^R01 to site A's HIS, and nothing to site B's."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.delivery_studies import sites_config
from tests.support.his_listener import MllpHis
from tests.support.serving import phantom_bytes, serving_overrides, study_uid_of, wait_for
from tests.support.tools import require_tool

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port
from medgate.delivery.site_delivery import SiteDelivery
from medgate.models.registry import discover_bundles
from medgate.pipeline.worker import Worker
from medgate.serving.deployments import LocalModelClient
from medgate.serving.inference import load_predictor
from medgate.store.db import Index
from medgate.trust.audit import AuditLog


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.serving import write_bundle

    root = tmp_path_factory.mktemp("delivery-bundles")
    write_bundle(root, "tiny_cxr")
    return root


@pytest.fixture
def pipeline_settings(
    tmp_path: Path, tiny_bundles: Path, his_a: MllpHis, his_b: MllpHis
) -> Settings:
    sections = serving_overrides(tiny_bundles)
    extra: dict[str, dict[str, Any]] = {
        "dicom": {"host": "127.0.0.1", "port": free_port(), "study_idle_seconds": 0.5},
        "pacs": {"host": "127.0.0.1", "port": free_port()},  # no PACS: its results wait queued
        "storage": {"path": str(tmp_path / "store"), "min_free_mb": 0},
        "audit": {"hash_key": "delivery-test-key"},
        "serving": {"poll_seconds": 0.1},
        "delivery": {"hl7": {"poll_seconds": 0.2}},
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    settings = load_settings(None, **sections)
    return settings.model_copy(
        update={"sites": Settings(sites=sites_config(his_a.port, his_b.port)).sites}
    )


@pytest.fixture
def running(pipeline_settings: Settings) -> Iterator[Index]:
    settings = pipeline_settings
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    audit = AuditLog(settings.audit_path, settings.audit.hash_key)
    bundles, _ = discover_bundles(settings.models.path)
    by_name = {b.name: b for b in bundles}
    model = LocalModelClient({"tiny_cxr": load_predictor(by_name["tiny_cxr"], "cpu")})
    dicom = DicomService(settings, index=index, audit=audit).start()
    worker = Worker(settings, index, model, store=dicom.store, audit=audit, bundles=by_name)
    worker.start()
    his = SiteDelivery(settings, index.engine, audit).start()
    try:
        yield index
    finally:
        his.stop()
        worker.stop()
        dicom.stop()
        index.close()


def test_radiograph_from_site_a_ends_as_preliminary_oru_at_a_only(
    pipeline_settings: Settings,
    running: Index,
    his_a: MllpHis,
    his_b: MllpHis,
    tmp_path: Path,
) -> None:
    data = phantom_bytes(77, PatientID="CLINIC-A-0042", AccessionNumber="A2026-0042")
    path = tmp_path / "radiograph.dcm"
    path.write_bytes(data)
    uid = study_uid_of(data)
    sent = subprocess.run(
        [
            require_tool("storescu"),
            "-aet",
            "CLINIC_A_CT",
            "-aec",
            pipeline_settings.dicom.ae_title,
            "127.0.0.1",
            str(pipeline_settings.dicom.port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: len(his_a.received) >= 1, 120, what="the ORU at site A's HIS")
    [received] = his_a.received
    message = received.message
    assert message.oru_r01_patient_result.oru_r01_patient.pid.pid_3.to_er7() == "CLINIC-A-0042"
    order = message.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_2.to_er7() == "A2026-0042"
    assert order.obr.obr_3.to_er7() == f"{uid}^MEDGATE"
    assert order.obr.obr_25.to_er7() == "P"
    row = running.studies.get(uid)
    assert row is not None and row.result is not None
    coded = [
        group.obx.obx_3.to_er7().split("^")[0]
        for group in order.oru_r01_observation
        if group.obx.obx_2.to_er7() == "CE" and not group.obx.obx_3.to_er7().startswith("363698007")
    ]
    assert coded == [f["finding_type"]["value"] for f in row.result["findings"]]
    assert his_b.received == []


def test_review_saved_through_the_review_module_sends_the_verified_final_oru(
    pipeline_settings: Settings,
    running: Index,
    his_a: MllpHis,
    tmp_path: Path,
) -> None:
    from medgate.review.verdicts import ReviewInput, VerdictInput, submit_review

    data = phantom_bytes(78, PatientID="CLINIC-A-0043")
    path = tmp_path / "radiograph.dcm"
    path.write_bytes(data)
    uid = study_uid_of(data)
    storescu = require_tool("storescu")
    port = str(pipeline_settings.dicom.port)
    sent = subprocess.run(
        [storescu, "-aet", "CLINIC_A_CT", "-aec", "MEDGATE", "127.0.0.1", port, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: len(his_a.received) == 1, 120, what="the preliminary ORU")
    row = running.studies.get(uid)
    assert row is not None and row.result is not None
    first = row.result["findings"][0]
    audit = AuditLog(pipeline_settings.audit_path, pipeline_settings.audit.hash_key)
    review = ReviewInput(
        reviewer_name="Li^Na",
        reviewer_id="rad-007",
        verdicts=(VerdictInput(finding=first["label"], verdict="rejected"),),
    )
    submit_review(running, pipeline_settings, audit, uid, review, actor="rad-007")

    wait_for(lambda: len(his_a.received) == 2, 60, what="the final ORU after the review")
    final = his_a.received[1].message
    order = final.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "F"
    code = first["finding_type"]["value"]
    [obx] = [
        g.obx
        for g in order.oru_r01_observation
        if g.obx.obx_3.to_er7().startswith(f"{code}^") and g.obx.obx_2.to_er7() == "CE"
    ]
    # the radiologist rejected the AI's call: the clinic gets the opposite, as verified
    expected = "272519000^Absent^SCT" if first["present"] else "52101004^Present^SCT"
    assert obx.obx_5.to_er7() == expected and obx.obx_11.to_er7() == "F"
