"""The hospital's system moves a referral on in FHIR terms: PUT /fhir/Task/{id} with the Task's
status, reason and follow-up plan; the same state machine and site rules as the API, errors as
OperationOutcomes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.task import Task
from tests.support.referral_site import HOSPITAL, SITE_A, SITE_B


def task_of(client: TestClient, referral_id: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Task/{referral_id}", headers=HOSPITAL)
    assert response.status_code == 200
    return response.json()


def put(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.put(f"/fhir/Task/{body['id']}", json=body, headers=headers)


def outcome(response: Any) -> str:
    parsed = OperationOutcome.model_validate(response.json())
    return str(parsed.issue[0].diagnostics)


def test_task_update_accepts_then_completes_with_the_plan(client: TestClient) -> None:
    made = client.post(
        "/api/v1/referrals",
        json={"patient_id": "A-77", "reason": "HbA1c 10.2 %, insulin start", "urgency": "routine"},
        headers=SITE_A,
    ).json()
    task = task_of(client, made["id"])
    task["status"] = "accepted"
    task["owner"] = {"display": "市医院 内分泌科"}
    accepted = put(client, task, HOSPITAL)
    assert accepted.status_code == 200, accepted.text
    assert Task.model_validate(accepted.json()).status == "accepted"
    assert client.get(f"/api/v1/referrals/{made['id']}", headers=SITE_A).json()["performer"] == (
        "市医院 内分泌科"
    )

    task = task_of(client, made["id"])
    task["status"] = "completed"
    plan = "Basal insulin 10 U at night; clinic checks fasting glucose weekly for 4 weeks."
    task["output"] = [{"type": {"text": "follow-up plan"}, "valueString": plan}]
    done = put(client, task, HOSPITAL)
    assert done.status_code == 200
    back = client.get(f"/api/v1/referrals/{made['id']}", headers=SITE_A).json()
    assert back["status"] == "completed" and back["follow_up_plan"] == plan
    assert [e["notified"] for e in back["history"]] == ["hospital", "clinic", "clinic"]


def test_task_update_refusals_are_operation_outcomes(client: TestClient) -> None:
    made = client.post(
        "/api/v1/referrals", json={"patient_id": "A-78", "reason": "chest pain"}, headers=SITE_A
    ).json()
    task = task_of(client, made["id"])

    task["status"] = "completed"  # requested -> completed skips acceptance
    skipped = put(client, task, HOSPITAL)
    assert skipped.status_code == 409 and "allowed: accepted" in outcome(skipped)
    task["status"] = "rejected"  # no statusReason
    assert put(client, task, HOSPITAL).status_code == 422
    task["status"] = "in-progress"
    assert put(client, task, HOSPITAL).status_code == 422
    task["status"] = "accepted"
    by_site = put(client, task, SITE_A)
    assert by_site.status_code == 403 and "receiving hospital" in outcome(by_site)
    assert put(client, task, SITE_B).status_code == 403
    wrong_id = client.put("/fhir/Task/other", json=task, headers=HOSPITAL)
    assert wrong_id.status_code == 400
    not_task = client.put(
        f"/fhir/Task/{made['id']}", json={"resourceType": "Patient"}, headers=HOSPITAL
    )
    assert not_task.status_code == 400
    assert task_of(client, made["id"])["status"] == "requested"  # nothing changed
