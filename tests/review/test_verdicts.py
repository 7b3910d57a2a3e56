"""POST /api/v1/studies/{uid}/review: verdicts stored, audited, a verified SR queued once."""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import pydicom
import pytest
from tests.support.review_gateway import RESULTS_TOKEN, REVIEW_TOKEN, Gateway

from medgate.reports.validate import dciodvfy

AUTH = {"Authorization": f"Bearer {REVIEW_TOKEN}"}


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reviewer": {"name": "Wang^Li", "id": "rad-007"},
        "verdicts": [
            {"finding": "pneumothorax", "verdict": "confirmed", "comment": "apical rim"},
            {"finding": "nodule", "verdict": "rejected"},
        ],
        "report_text": "Right apical pneumothorax. No nodule.",
    }
    body.update(changes)
    return body


def _evaluations(sr: pydicom.Dataset) -> dict[str, str]:
    report = hd.sr.srread(io.BytesIO(_bytes(sr))).content
    return {
        g.tracking_identifier: g.get_qualitative_evaluations()[0].value.meaning
        for g in report.get_image_measurement_groups()  # type: ignore[attr-defined]
        if g.get_qualitative_evaluations()
    }


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_review_writes_a_verified_sr_into_the_outbox_once(gateway: Gateway) -> None:
    uid = gateway.process(41)
    study = gateway.index.studies.get(uid)
    assert study is not None and study.result is not None
    ai_uid = next(
        o["sop_instance_uid"] for o in study.result["result_objects"] if o["kind"] == "sr"
    )
    ai_present = {f["label"]: f["present"] for f in study.result["findings"]}
    before = len(gateway.index.outbox.list(study_uid=uid))

    answer = gateway.client.post(f"/api/v1/studies/{uid}/review", json=_body(), headers=AUTH)
    assert answer.status_code == 201, answer.text
    review = answer.json()["review"]
    assert review["status"] == "verified" and review["reviewer"] == {
        "name": "Wang^Li",
        "id": "rad-007",
    }
    assert [v["verdict"] for v in review["verdicts"]] == ["confirmed", "rejected"]

    queued = [o for o in gateway.index.outbox.list(study_uid=uid) if o.kind == "verified-sr"]
    assert len(queued) == 1 and len(gateway.index.outbox.list(study_uid=uid)) == before + 1
    sr = pydicom.dcmread(queued[0].path)
    assert sr.SOPInstanceUID == review["sr_sop_instance_uid"]
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Wang^Li"
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai_uid
    # verdicts applied: confirmed keeps the AI's call, rejected turns it over
    evaluations = _evaluations(sr)
    expected_ptx = "Present" if ai_present["pneumothorax"] else "Absent"
    expected_nodule = "Absent" if ai_present["nodule"] else "Present"
    assert evaluations["tiny_cxr pneumothorax"] == expected_ptx
    assert evaluations["tiny_cxr nodule"] == expected_nodule
    result = dciodvfy(sr)
    assert result.errors == [] and result.warnings == [], result.output

    # a retried POST (lost answer) sends nothing twice
    again = gateway.client.post(f"/api/v1/studies/{uid}/review", json=_body(), headers=AUTH)
    assert again.status_code == 200 and again.json()["review"] == review
    assert len(gateway.index.outbox.list(study_uid=uid)) == before + 1

    # the study JSON carries the review
    results = {"Authorization": f"Bearer {RESULTS_TOKEN}"}
    detail = gateway.client.get(f"/api/v1/studies/{uid}", headers=results).json()
    assert detail["review"]["status"] == "verified"
    assert detail["review"]["reviewer"]["id"] == "rad-007" and detail["review"]["at"]
    assert [v["finding"] for v in detail["review"]["verdicts"]] == ["pneumothorax", "nodule"]
    # stored and readable back; audited with who and what, no patient data in the trail
    read = gateway.client.get(f"/api/v1/studies/{uid}/review", headers=AUTH).json()
    assert read["review"]["sr_sop_instance_uid"] == review["sr_sop_instance_uid"]
    (entry,) = [e for e in gateway.audit.trace(uid) if e["event"] == "review-verdict"]
    assert entry["actor"] == "reviewer:rad-007"
    assert entry["details"]["verdicts"] == [["pneumothorax", "confirmed"], ["nodule", "rejected"]]
    log = gateway.settings.audit_path.read_text()
    source = pydicom.dcmread(queued[0].path)
    assert str(source.PatientID) not in log and uid not in log


def test_conflicting_second_review_needs_amend(gateway: Gateway) -> None:
    uid = gateway.process(42)
    first = gateway.client.post(f"/api/v1/studies/{uid}/review", json=_body(), headers=AUTH)
    assert first.status_code == 201
    changed = _body(verdicts=[{"finding": "pneumothorax", "verdict": "rejected"}])
    refused = gateway.client.post(f"/api/v1/studies/{uid}/review", json=changed, headers=AUTH)
    assert refused.status_code == 409 and "amend" in refused.json()["detail"]
    amended = gateway.client.post(
        f"/api/v1/studies/{uid}/review", json={**changed, "amend": True}, headers=AUTH
    )
    assert amended.status_code == 201, amended.text
    second = amended.json()["review"]
    assert second["revision"] == 2
    assert second["sr_sop_instance_uid"] != first.json()["review"]["sr_sop_instance_uid"]
    sr = pydicom.dcmread(
        next(
            o.path
            for o in gateway.index.outbox.list(study_uid=uid)
            if o.sop_instance_uid == second["sr_sop_instance_uid"]
        )
    )
    predecessors = {
        s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in sr.PredecessorDocumentsSequence
        for s in item.ReferencedSeriesSequence
    }
    assert first.json()["review"]["sr_sop_instance_uid"] in predecessors
    history = gateway.client.get(f"/api/v1/studies/{uid}/review", headers=AUTH).json()
    assert [r["revision"] for r in history["revisions"]] == [1, 2]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (_body(verdicts=[{"finding": "fracture", "verdict": "confirmed"}]), 422, "unknown finding"),
        (_body(verdicts=[{"finding": "nodule", "verdict": "maybe"}]), 422, "verdict"),
        (_body(verdicts=[{"finding": "nodule", "verdict": "modified"}]), 422, "needs a value"),
        (_body(verdicts=[]), 422, ""),
    ],
)
def test_bad_reviews_are_refused_and_store_nothing(
    gateway: Gateway, body: dict[str, Any], status: int, message: str
) -> None:
    uid = gateway.process(43)
    before = len(gateway.index.outbox.list(study_uid=uid))
    answer = gateway.client.post(f"/api/v1/studies/{uid}/review", json=body, headers=AUTH)
    assert answer.status_code == status, answer.text
    assert message in str(answer.json()["detail"])
    assert len(gateway.index.outbox.list(study_uid=uid)) == before
    assert gateway.client.get(f"/api/v1/studies/{uid}/review", headers=AUTH).json()["review"] == {
        "status": "unreviewed"
    }


def test_study_without_results_and_unknown_study(gateway: Gateway) -> None:
    from tests.support.serving import ingest, phantom_bytes

    uid = ingest(gateway.store, phantom_bytes(44))  # received, not processed yet
    results = {"Authorization": f"Bearer {RESULTS_TOKEN}"}
    assert gateway.client.get(f"/api/v1/studies/{uid}", headers=results).json()["review"] == {
        "status": "unreviewed"
    }
    answer = gateway.client.post(f"/api/v1/studies/{uid}/review", json=_body(), headers=AUTH)
    assert answer.status_code == 409 and "no AI results" in answer.json()["detail"]
    missing = gateway.client.post("/api/v1/studies/1.2.3.4/review", json=_body(), headers=AUTH)
    assert missing.status_code == 404


def test_review_needs_the_review_scope(gateway: Gateway) -> None:
    uid = gateway.process(45)
    url = f"/api/v1/studies/{uid}/review"
    assert gateway.client.post(url, json=_body()).status_code == 401
    other = {"Authorization": f"Bearer {RESULTS_TOKEN}"}
    assert gateway.client.post(url, json=_body(), headers=other).status_code == 401
    assert gateway.client.post(url, json=_body(), headers=AUTH).status_code == 201


def test_verdicts_show_in_medgate_audit_trace(gateway: Gateway, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from medgate.cli.main import app

    uid = gateway.process(46)
    assert gateway.client.post(
        f"/api/v1/studies/{uid}/review", json=_body(), headers=AUTH
    ).is_success
    config = tmp_path / "medgate.toml"
    config.write_text(
        f'[storage]\npath = "{gateway.settings.storage.path}"\n'
        f'[audit]\nhash_key = "{gateway.settings.audit.hash_key}"\n'
    )
    trace = CliRunner().invoke(
        app, ["audit", "trace", "--study", uid, "--config", str(config)], env={"COLUMNS": "300"}
    )
    assert trace.exit_code == 0, trace.output
    assert trace.output.find("model-run") < trace.output.find("review-verdict")
    assert "reviewer:rad-007" in trace.output and "pneumothorax" in trace.output


def test_refer_from_a_review_opens_one_referral_with_the_confirmed_findings(
    gateway: Gateway,
) -> None:
    """Issue 21's "refer" from a review: the patient of the reviewed study is referred up, with
    the confirmed findings and the verified SR as evidence; a retried POST makes no second one."""
    uid = gateway.process(42)
    refer = {"reason": "Pneumothorax confirmed: chest surgery", "urgency": "stat"}
    first = gateway.client.post(
        f"/api/v1/studies/{uid}/review", json=_body(refer=refer), headers=AUTH
    )
    assert first.status_code == 201, first.text
    referral = first.json()["referral"]
    assert referral["status"] == "requested"
    again = gateway.client.post(
        f"/api/v1/studies/{uid}/review", json=_body(refer=refer), headers=AUTH
    )
    assert again.status_code == 200 and again.json()["referral"]["id"] == referral["id"]

    results = {"Authorization": f"Bearer {RESULTS_TOKEN}"}
    stored = gateway.client.get(f"/api/v1/referrals/{referral['id']}", headers=results)
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["urgency"] == "stat" and body["study_instance_uid"] == uid
    assert body["origin"] == "review"
    findings = {e["display"]: e for e in body["evidence"] if e["kind"] == "finding"}
    assert set(findings) == {"pneumothorax"}  # confirmed; the rejected nodule is no evidence
    sr_uid = first.json()["review"]["sr_sop_instance_uid"]
    assert findings["pneumothorax"]["reference"] == sr_uid
    everyone = gateway.client.get("/api/v1/referrals", headers=results).json()
    assert [r["id"] for r in everyone] == [referral["id"]]


def test_refer_needs_a_reason(gateway: Gateway) -> None:
    uid = gateway.process(43)
    answer = gateway.client.post(
        f"/api/v1/studies/{uid}/review", json=_body(refer={"reason": ""}), headers=AUTH
    )
    assert answer.status_code == 422
    assert gateway.index.studies.get(uid) is not None
    assert gateway.client.get(f"/api/v1/studies/{uid}/review", headers=AUTH).json()["review"] == {
        "status": "unreviewed"
    }
