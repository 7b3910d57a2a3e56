"""Two-way referral through the API: up, accepted, back down with the plan; FHIR ServiceRequest +
Task at every step (parsed by fhir.resources); illegal moves refused; sites kept apart."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from tests.support.referral_site import HOSPITAL, SITE_A, SITE_B

from medgate.core.config import Settings

PATIENT = "PID-A-0042"
UP = {
    "patient_id": PATIENT,
    "reason": "CT: solid nodule 9.5 mm, right upper lobe; China-PAR high risk",
    "urgency": "urgent",
    "evidence": [
        {"kind": "finding", "display": "Nodule", "value": "9.5 mm"},
        {"kind": "score", "display": "China-PAR 10-year ASCVD risk", "value": "12.4%"},
        {"kind": "study", "display": "Chest CT", "reference": "1.2.826.0.1.3680043.8.498.1"},
    ],
    "performer": "City Hospital, thoracic surgery",
}


def refer(client: TestClient, headers: dict[str, str] = SITE_A, **changes: Any) -> dict[str, Any]:
    response = client.post("/api/v1/referrals", json={**UP, **changes}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def fhir_pair(client: TestClient, referral_id: str) -> tuple[ServiceRequest, Task]:
    sr = client.get(f"/fhir/ServiceRequest/{referral_id}", headers=HOSPITAL)
    task = client.get(f"/fhir/Task/{referral_id}", headers=HOSPITAL)
    assert sr.status_code == 200 and task.status_code == 200, (sr.text, task.text)
    assert task.headers["content-type"].startswith("application/fhir+json")
    return ServiceRequest.model_validate(sr.json()), Task.model_validate(task.json())


def test_referral_goes_up_is_accepted_and_comes_back_down_with_the_plan(
    client: TestClient, settings: Settings
) -> None:
    made = refer(client)
    assert made["status"] == "requested" and made["site"] == "clinic-a"
    assert made["history"][0]["notified"] == "hospital"
    assert made["history"][0]["channels"] == ["referral-desk"]
    sr, task = fhir_pair(client, made["id"])
    assert (sr.status, sr.priority, sr.intent) == ("active", "urgent", "order")
    assert sr.reasonCode and sr.supportingInfo and sr.note and sr.subject and task.focus
    assert sr.reasonCode[0].text == UP["reason"]
    assert sr.supportingInfo[0].reference == "DiagnosticReport/1.2.826.0.1.3680043.8.498.1"
    assert {n.text for n in sr.note} == {
        "finding: Nodule = 9.5 mm",
        "score: China-PAR 10-year ASCVD risk = 12.4%",
    }
    assert sr.subject.identifier and sr.subject.identifier.value == PATIENT
    assert task.status == "requested" and task.focus.reference == f"ServiceRequest/{made['id']}"

    accepted = client.patch(
        f"/api/v1/referrals/{made['id']}",
        json={"status": "accepted", "version": made["version"]},
        headers=HOSPITAL,
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["history"][-1]["notified"] == "clinic"
    assert accepted.json()["history"][-1]["channels"] == ["clinic-a-mail"]
    assert fhir_pair(client, made["id"])[1].status == "accepted"

    plan = "Lobectomy done; CT follow-up at 3 and 12 months at the clinic; no smoking."
    done = client.patch(
        f"/api/v1/referrals/{made['id']}",
        json={"status": "completed", "follow_up_plan": plan},
        headers=HOSPITAL,
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert [e["status"] for e in body["history"]] == ["requested", "accepted", "completed"]
    assert body["follow_up_plan"] == plan and body["history"][-1]["notified"] == "clinic"
    sr, task = fhir_pair(client, made["id"])
    assert (sr.status, task.status) == ("completed", "completed")
    assert task.output and task.output[0].valueString == plan

    # The site sees the plan; the audit trail has each change with the patient only hashed.
    seen = client.get(f"/api/v1/referrals/{made['id']}", headers=SITE_A).json()
    assert seen["follow_up_plan"] == plan
    trail = settings.audit_path.read_text()
    events = [json.loads(line) for line in trail.splitlines()]
    changes = [e for e in events if e["event"].startswith("referral-")]
    assert [e["details"]["status"] for e in changes] == ["requested", "accepted", "completed"]
    assert all(e["details"]["patient"].startswith("h:") for e in changes)
    assert PATIENT not in trail


def test_rejection_needs_a_reason_and_closes_the_referral(client: TestClient) -> None:
    made = refer(client)
    url = f"/api/v1/referrals/{made['id']}"
    no_reason = client.patch(url, json={"status": "rejected"}, headers=HOSPITAL)
    assert no_reason.status_code == 422
    assert "needs a reason" in no_reason.json()["detail"]
    rejected = client.patch(
        url,
        json={"status": "rejected", "reason": "no thoracic surgeon this month"},
        headers=HOSPITAL,
    )
    assert rejected.status_code == 200
    sr, task = fhir_pair(client, made["id"])
    assert (sr.status, task.status) == ("revoked", "rejected")
    assert task.statusReason and task.statusReason.text == "no thoracic surgeon this month"
    again = client.patch(url, json={"status": "accepted"}, headers=HOSPITAL)
    assert again.status_code == 409
    assert "a rejected referral cannot become accepted" in again.json()["detail"]


def test_illegal_and_stale_changes_are_refused_and_change_nothing(client: TestClient) -> None:
    made = refer(client)
    url = f"/api/v1/referrals/{made['id']}"
    skip = client.patch(url, json={"status": "completed", "follow_up_plan": "x"}, headers=HOSPITAL)
    assert skip.status_code == 409
    assert "allowed: accepted, rejected, cancelled" in skip.json()["detail"]
    ok = client.patch(url, json={"status": "accepted"}, headers=HOSPITAL)
    assert ok.status_code == 200
    stale = client.patch(
        url, json={"status": "rejected", "reason": "r", "version": 1}, headers=HOSPITAL
    )
    assert stale.status_code == 409 and "read it again" in stale.json()["detail"]
    no_plan = client.patch(url, json={"status": "completed"}, headers=HOSPITAL)
    assert no_plan.status_code == 422 and "follow-up plan" in no_plan.json()["detail"]
    unknown = client.patch(url, json={"status": "in-progress"}, headers=HOSPITAL)
    assert unknown.status_code == 422
    after = client.get(url, headers=HOSPITAL).json()
    assert after["status"] == "accepted" and after["version"] == 2
    assert len(after["history"]) == 2
    assert (
        client.patch(
            "/api/v1/referrals/nope", json={"status": "accepted"}, headers=HOSPITAL
        ).status_code
        == 404
    )


def test_a_site_withdraws_its_own_referral_but_cannot_answer_it(client: TestClient) -> None:
    made = refer(client)
    url = f"/api/v1/referrals/{made['id']}"
    answer = client.patch(url, json={"status": "accepted"}, headers=SITE_A)
    assert answer.status_code == 403 and "receiving hospital" in answer.json()["detail"]
    withdrawn = client.patch(
        url,
        json={"status": "cancelled", "reason": "patient chose another hospital"},
        headers=SITE_A,
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["history"][-1]["notified"] == "hospital"
    assert fhir_pair(client, made["id"])[1].status == "cancelled"


def test_site_tokens_see_only_their_own_referrals(client: TestClient) -> None:
    a = refer(client)
    b = refer(client, SITE_B, patient_id="PID-B-7")
    url = f"/api/v1/referrals/{a['id']}"
    assert client.get(url, headers=SITE_B).status_code == 403
    assert (
        client.patch(url, json={"status": "cancelled", "reason": "x"}, headers=SITE_B).status_code
        == 403
    )
    assert client.get(f"/fhir/ServiceRequest/{a['id']}", headers=SITE_B).status_code == 403
    assert client.get(f"/fhir/Task/{a['id']}", headers=SITE_B).status_code == 403
    seen_by_b = [r["id"] for r in client.get("/api/v1/referrals", headers=SITE_B).json()]
    assert seen_by_b == [b["id"]]
    bundle = client.get("/fhir/Task", headers=SITE_B).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [b["id"]]
    assert len(client.get("/api/v1/referrals", headers=HOSPITAL).json()) == 2
    for_other_site = client.post(
        "/api/v1/referrals", json={**UP, "site": "clinic-b"}, headers=SITE_A
    )
    assert for_other_site.status_code == 403
    assert client.get("/api/v1/referrals").status_code == 401


def test_fhir_search_by_patient_and_status(client: TestClient) -> None:
    a = refer(client)
    refer(client, patient_id="PID-A-other")
    sr, _ = fhir_pair(client, a["id"])
    patient_ref = sr.subject.reference
    found = client.get("/fhir/ServiceRequest", params={"patient": patient_ref}, headers=HOSPITAL)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [a["id"]]
    by_identifier = client.get(
        "/fhir/Task", params={"subject:identifier": PATIENT}, headers=SITE_A
    ).json()
    assert [e["resource"]["id"] for e in by_identifier["entry"]] == [a["id"]]
    assert (
        client.get("/fhir/Task", params={"status": "completed"}, headers=HOSPITAL).json()["total"]
        == 0
    )
    bad = client.get("/fhir/Task", params={"owner": "x"}, headers=HOSPITAL)
    assert bad.status_code == 400
