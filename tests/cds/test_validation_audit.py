"""Bad input is answered 422 naming the field; every request is audited without PHI."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_data import profile
from tests.support.paths import MODELS

from medgate.api.app import create_app
from medgate.core.config import Settings


def _fields(response: object) -> list[str]:
    return [str(item["loc"][-1]) for item in response.json()["detail"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("route", "body", "field", "words"),
    [
        (
            "china-par",
            {k: v for k, v in profile("male", 50).items() if k != "sbp_mmhg"},
            "sbp_mmhg",
            "required",
        ),
        ("china-par", profile("male", 50, sbp_mmhg="high"), "sbp_mmhg", "integer"),
        ("china-par", {**profile("male", 50), "sex": "M"}, "sex", "male"),
        ("china-par", profile("male", 50, waist_cm=12), "waist_cm", "greater than"),
        (
            "china-par",
            profile("male", 50, total_cholesterol_mg_dl=5.2),
            "total_cholesterol_mg_dl",
            "mmol/L",
        ),
        (
            "news2",
            {
                "respiratory_rate": 16,
                "spo2": 97,
                "on_oxygen": False,
                "sbp_mmhg": 120,
                "heart_rate": 70,
                "consciousness": "A",
                "temperature_c": 98.6,
            },
            "temperature_c",
            "Celsius",
        ),
        (
            "news2",
            {
                "respiratory_rate": 16,
                "spo2": 120,
                "on_oxygen": False,
                "sbp_mmhg": 120,
                "heart_rate": 70,
                "consciousness": "A",
                "temperature_c": 37,
            },
            "spo2",
            "less than",
        ),
        (
            "news2",
            {
                "respiratory_rate": 16.5,
                "spo2": 97,
                "on_oxygen": False,
                "sbp_mmhg": 120,
                "heart_rate": 70,
                "consciousness": "Z",
                "temperature_c": 37,
            },
            "consciousness",
            "'A'",
        ),
        ("follow-up", {"conditions": []}, "conditions", "at least 1"),
        (
            "follow-up",
            {"conditions": ["hypertension"], "fasting_glucose_mmol_l": 126},
            "fasting_glucose_mmol_l",
            "mmol/L",
        ),
        ("assess", {"age": 50, "weight_kg": 70}, "weight_kg", "not permitted"),
    ],
)
def test_invalid_input_names_the_field(
    client: TestClient, route: str, body: dict, field: str, words: str
) -> None:
    response = client.post(f"/api/v1/cds/{route}", json=body)
    assert response.status_code == 422
    assert field in _fields(response)
    assert any(words in item["msg"] for item in response.json()["detail"]), response.json()


def test_both_units_is_an_error(client: TestClient) -> None:
    response = client.post(
        "/api/v1/cds/china-par", json=profile("male", 50, total_cholesterol_mmol_l=5.4)
    )
    assert response.status_code == 422
    assert "total_cholesterol_mmol_l and total_cholesterol_mg_dl" in response.text


def test_every_request_is_audited_without_phi(client: TestClient, cds_settings: Settings) -> None:
    client.post("/api/v1/cds/china-par", json=profile("female", 61))
    client.post("/api/v1/cds/news2", json={"spo2": 97})
    client.post(
        "/cds-services/medgate-primary-care",
        json={
            "hook": "patient-view",
            "hookInstance": "1",
            "context": {"patientId": "PAT-SECRET-42"},
            "prefetch": {
                "patient": {
                    "resourceType": "Patient",
                    "id": "PAT-SECRET-42",
                    "name": [{"family": "Zhang", "given": ["Wei"]}],
                }
            },
        },
    )
    text = cds_settings.audit_path.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    mine = [e for e in entries if e["event"] == "api-request"]
    assert [e["details"]["status"] for e in mine] == [200, 422, 200]
    assert mine[0]["details"]["route"] == "/api/v1/cds/china-par"
    # the request's latency is a number that may contain the age's digits (1.61 ms): it is
    # checked for what it is, and the rest of each entry for the request's values
    assert all(isinstance(e["details"].pop("ms"), float | int) for e in mine)
    for secret in ("PAT-SECRET-42", "Zhang", "Wei", "61"):
        assert secret not in json.dumps([e["details"] for e in mine])
    assert "PAT-SECRET-42" not in text and "Zhang" not in text


def test_scope_is_enforced(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        models={"path": str(MODELS)},
        api={"tokens": {"doctor-token": ["cds"], "results-token": ["results"]}},
    )
    with TestClient(create_app(settings)) as client:
        body = profile("male", 50)
        assert client.post("/api/v1/cds/china-par", json=body).status_code == 401
        assert (
            client.post(
                "/api/v1/cds/china-par",
                json=body,
                headers={"Authorization": "Bearer results-token"},
            ).status_code
            == 403
        )
        ok = client.post(
            "/api/v1/cds/china-par", json=body, headers={"Authorization": "Bearer doctor-token"}
        )
        assert ok.status_code == 200
        assert client.get("/cds-services").status_code == 401
    audit = settings.audit_path.read_text()
    assert "doctor-token" not in audit
    statuses = [
        json.loads(line)["details"].get("status")
        for line in audit.splitlines()
        if json.loads(line)["event"] == "api-request"
    ]
    assert statuses == [401, 403, 200, 401]
