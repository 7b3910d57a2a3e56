"""HL7 CDS Hooks: discovery, patient-view with a FHIR prefetch, fetch from a real FHIR server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_fhir_data import CONDITIONS, OBSERVATIONS, PATIENT, hook, searchset

from medgate.core.ports import free_port


def check_cards(cards: list[dict[str, Any]]) -> None:
    assert cards
    for card in cards:
        assert 0 < len(card["summary"]) < 140
        assert card["indicator"] in {"info", "warning", "critical"}
        assert card["source"]["label"]
        assert isinstance(card["detail"], str)
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"] and suggestion["actions"]


def test_discovery(client: TestClient) -> None:
    services = client.get("/cds-services").json()["services"]
    hooks = {s["id"]: s for s in services}
    assert hooks["medgate-primary-care"]["hook"] == "patient-view"
    assert hooks["medgate-order-safety"]["hook"] == "order-select"
    for service in services:
        assert service["title"] and service["description"]
        assert "{{context.patientId}}" in service["prefetch"]["patient"]
        assert "85354-9" in service["prefetch"]["observations"]


def test_patient_view_with_prefetch(client: TestClient) -> None:
    prefetch = {"patient": PATIENT, "observations": OBSERVATIONS, "conditions": CONDITIONS}
    response = client.post(
        "/cds-services/medgate-primary-care", json=hook(prefetch), headers={"Accept-Language": "en"}
    )
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    check_cards(cards)
    first = cards[0]
    assert first["indicator"] == "critical" and first["summary"].startswith("Urgent referral")
    assert "184/112" in first["summary"]
    action = first["suggestions"][0]["actions"][0]
    assert action["resource"]["resourceType"] == "ServiceRequest"
    assert action["resource"]["subject"]["reference"] == "Patient/p1"
    # diabetes at 58 and BP 184/112: high risk without the equation (Guideline 2019), though
    # FHIR carries no region, residence or family history
    assert any(c["summary"] == "ASCVD risk: high (no calculation)" for c in cards)
    # FHIR carries no oxygen or ACVPU: NEWS2 says so
    missing = cards[-1]["detail"]
    assert cards[-1]["summary"] == "Some scores could not be computed"
    assert "china_par" not in missing
    assert "news2: inputs missing" in missing and "consciousness" in missing
    assert "total_cholesterol" not in missing and "waist_cm" not in missing  # from LOINC


def test_patient_view_with_only_a_patient_answers_what_it_can(client: TestClient) -> None:
    response = client.post("/cds-services/medgate-primary-care", json=hook({"patient": PATIENT}))
    cards = response.json()["cards"]
    check_cards(cards)
    assert cards[-1]["summary"] == "部分评分无法计算"  # default language: zh
    assert all(c["indicator"] == "info" for c in cards)


def test_order_select_only_warns(client: TestClient) -> None:
    prefetch = {"patient": PATIENT, "observations": OBSERVATIONS, "conditions": CONDITIONS}
    body = hook(prefetch, hook="order-select")
    body["context"].update(selections=["MedicationRequest/m1"], draftOrders=searchset([]))
    cards = client.post("/cds-services/medgate-order-safety", json=body).json()["cards"]
    assert [c["indicator"] for c in cards] == ["critical"]


def test_bad_hook_requests(client: TestClient) -> None:
    assert client.post("/cds-services/nope", json=hook({})).status_code == 404
    assert (
        client.post(
            "/cds-services/medgate-primary-care", json=hook({}, hook="order-select")
        ).status_code
        == 400
    )
    assert (
        client.post("/cds-services/medgate-primary-care", json={"hook": "patient-view"}).status_code
        == 422
    )


def test_feedback(client: TestClient) -> None:
    body = {
        "feedback": [
            {"card": "abc", "outcome": "accepted", "outcomeTimestamp": "2024-05-01T10:00:00Z"}
        ]
    }
    assert client.post("/cds-services/medgate-primary-care/feedback", json=body).json() == {}
    assert client.post("/cds-services/x/feedback", json=body).status_code == 404


class FhirServer:
    """A real FHIR-ish HTTP server on loopback that answers the service's prefetch queries."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._send(401, {"resourceType": "OperationOutcome"})
                elif self.path == "/fhir/Patient/p1":
                    self._send(200, PATIENT)
                elif self.path.startswith("/fhir/Observation?patient=p1"):
                    self._send(200, OBSERVATIONS)
                elif self.path.startswith("/fhir/Condition?patient=p1"):
                    self._send(200, CONDITIONS)
                else:
                    self._send(404, {"resourceType": "OperationOutcome"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@pytest.fixture
def fhir_server() -> Iterator[FhirServer]:
    server = FhirServer("secret-fhir-token")
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


def test_missing_prefetch_is_fetched_from_fhir_server(
    client: TestClient, fhir_server: FhirServer
) -> None:
    body = hook(
        {"patient": None},
        fhirServer=fhir_server.url,
        fhirAuthorization={
            "access_token": "secret-fhir-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "medgate",
        },
    )
    response = client.post(
        "/cds-services/medgate-primary-care", json=body, headers={"Accept-Language": "en"}
    )
    cards = response.json()["cards"]
    check_cards(cards)
    assert cards[0]["indicator"] == "critical"
    paths = [path for path, _ in fhir_server.requests]
    assert paths[0] == "/fhir/Patient/p1"
    assert any(p.startswith("/fhir/Observation?patient=p1&code=") for p in paths)
    assert any(p.startswith("/fhir/Condition?patient=p1") for p in paths)
    assert {auth for _, auth in fhir_server.requests} == {"Bearer secret-fhir-token"}


def test_fhir_server_refusal_still_answers(client: TestClient, fhir_server: FhirServer) -> None:
    body = hook(
        None,
        fhirServer=fhir_server.url,
        fhirAuthorization={"access_token": "wrong", "token_type": "Bearer"},
    )
    cards = client.post(
        "/cds-services/medgate-primary-care", json=body, headers={"Accept-Language": "en"}
    ).json()["cards"]
    check_cards(cards)
    assert "FHIR server answered 401" in cards[-1]["detail"]
