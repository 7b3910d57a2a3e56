"""FHIR R4 over real HTTP: fhirclient reads the AI result as DiagnosticReport and Observations,
every resource validates with fhir.resources, preliminary becomes final after review, and a
site's token sees its own site's resources only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fhir.resources.R4B import get_fhir_model_class
from fhirclient import client
from fhirclient.models.diagnosticreport import DiagnosticReport
from fhirclient.models.observation import Observation
from tests.support.delivery_studies import ADMIN, RESULTS_ONLY, TOKEN_A, TOKEN_B, add_study
from tests.support.http_server import served

from medgate.api.app import create_app
from medgate.core.config import Settings
from medgate.delivery.enqueue import enqueue_final_result
from medgate.delivery.site_delivery import SiteDelivery
from medgate.trust.audit import AuditLog


def _fhir_client(base: str, token: str) -> client.FHIRClient:
    smart = client.FHIRClient(settings={"app_id": "medgate-tests", "api_base": f"{base}/fhir"})
    smart.server.session.headers["Authorization"] = f"Bearer {token}"
    return smart


def _find(kind: Any, smart: client.FHIRClient, struct: dict[str, str]) -> list[Any]:
    """A search through fhirclient: its R4 models parse every resource found."""
    return list(kind.where(struct=struct).perform_resources_iter(smart.server))


def _validate_all(base: str, token: str, query: str) -> list[dict[str, Any]]:
    """Every resource of a search, validated by fhir.resources (R4B models)."""
    bundle = httpx.get(f"{base}/fhir/{query}", headers={"Authorization": f"Bearer {token}"})
    assert bundle.status_code == 200, bundle.text
    assert bundle.headers["content-type"].startswith("application/fhir+json")
    data = bundle.json()
    get_fhir_model_class("Bundle").model_validate(data)
    resources = [entry["resource"] for entry in data.get("entry", [])]
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resources


@pytest.fixture
def two_sites(
    sites_settings: Settings, engine: sa.engine.Engine, audit: AuditLog
) -> tuple[str, str]:
    uid_a = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    uid_b = add_study(
        engine, sites_settings, calling_ae="CLINIC_B_DX", patient_id="PID-B", name="Li^Lei=李^雷"
    )
    SiteDelivery(sites_settings, engine, audit).run_once()
    return uid_a, uid_b


def test_fhir_client_reads_result_preliminary_then_final(
    sites_settings: Settings, engine: sa.engine.Engine, two_sites: tuple[str, str]
) -> None:
    uid_a, _ = two_sites
    with served(create_app(sites_settings)) as base:
        smart = _fhir_client(base, TOKEN_A)
        smart.prepare()  # reads /fhir/metadata with fhirclient's R4 CapabilityStatement model
        assert smart.server.capabilityStatement.fhirVersion == "4.0.1"

        [report] = _find(DiagnosticReport, smart, {"subject:identifier": "PID-0001"})
        assert report.id == uid_a and report.status == "preliminary"
        patient = report.subject.reference.split("/", 1)[1]
        assert report.subject.identifier.value == "PID-0001"
        [again] = _find(DiagnosticReport, smart, {"patient": patient})
        assert again.id == uid_a
        assert report.code.coding[0].code == "18748-4"
        assert "ACC-7" in [i.value for i in report.identifier]
        assert report.conclusion and "结节" in report.conclusion

        observations = _find(Observation, smart, {"patient": patient})
        assert len(observations) == 3  # two findings and one study-level measurement
        assert {o.status for o in observations} == {"preliminary"}
        assert sorted(f"Observation/{o.id}" for o in observations) == sorted(
            r.reference for r in report.result
        )
        by_code = {o.code.coding[0].code: o for o in observations}
        nodule = by_code["27925004"]
        assert nodule.code.coding[0].system == "http://snomed.info/sct"
        assert nodule.valueCodeableConcept.coding[0].code == "52101004"  # present
        assert by_code["60046008"].valueCodeableConcept.coding[0].code == "272519000"  # absent
        diameter = by_code["81827009"].valueQuantity
        assert (diameter.value, diameter.code, diameter.system) == (
            9.5,
            "mm",
            "http://unitsofmeasure.org",
        )
        derived = {(d.type, d.identifier.value) for d in nodule.derivedFrom}
        assert ("ImagingStudy", f"urn:oid:{uid_a}") in derived
        assert any(kind == "DocumentReference" for kind, _ in derived)

        resources = _validate_all(base, TOKEN_A, f"DiagnosticReport?patient={patient}")
        resources += _validate_all(base, TOKEN_A, f"Observation?patient={patient}")
        resources += _validate_all(base, TOKEN_A, f"RiskAssessment?patient={patient}")
        assert [r["resourceType"] for r in resources].count("RiskAssessment") == 1
        assert _validate_all(base, TOKEN_A, "DiagnosticReport?status=final") == []
        assert len(_validate_all(base, TOKEN_A, "DiagnosticReport?date=ge2026-12-05")) == 1
        assert _validate_all(base, TOKEN_A, "DiagnosticReport?date=lt2026-12-05") == []
        assert _validate_all(base, TOKEN_A, "DiagnosticReport?subject:identifier=NOBODY") == []
        assert _validate_all(base, TOKEN_A, "ServiceRequest") == []
        assert _validate_all(base, TOKEN_A, "Task") == []

        enqueue_final_result(sites_settings, engine, uid_a, verified_by="dr-chen")
        [final] = _find(DiagnosticReport, smart, {"patient": patient})
        assert final.status == "final"
        statuses = {o.status for o in _find(Observation, smart, {"patient": patient})}
        assert statuses == {"final"}
        assert len(_validate_all(base, TOKEN_A, "DiagnosticReport?status=final")) == 1


def test_fhir_site_scoping_and_scopes(sites_settings: Settings, two_sites: tuple[str, str]) -> None:
    uid_a, uid_b = two_sites
    with served(create_app(sites_settings)) as base:

        def get(path: str, token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.get(f"{base}/fhir/{path}", headers=headers)

        reports_a = [r["id"] for r in _validate_all(base, TOKEN_A, "DiagnosticReport")]
        reports_b = [r["id"] for r in _validate_all(base, TOKEN_B, "DiagnosticReport")]
        assert reports_a == [uid_a] and reports_b == [uid_b]
        assert sorted(r["id"] for r in _validate_all(base, ADMIN, "DiagnosticReport")) == sorted(
            [uid_a, uid_b]
        )
        observation_b = _validate_all(base, TOKEN_B, "Observation")[0]["id"]
        risk_b = _validate_all(base, TOKEN_B, "RiskAssessment")[0]["id"]
        for path in (
            f"DiagnosticReport/{uid_b}",
            f"Observation/{observation_b}",
            f"RiskAssessment/{risk_b}",
        ):
            denied = get(path, TOKEN_A)
            assert denied.status_code == 403, path
            assert denied.json()["resourceType"] == "OperationOutcome"
            assert get(path, TOKEN_B).status_code == 200
        assert get(f"DiagnosticReport/{uid_a}", TOKEN_A).json()["id"] == uid_a
        assert get("DiagnosticReport/1.2.3.4.5", TOKEN_A).status_code == 404
        assert get("DiagnosticReport", None).status_code == 401
        assert get("DiagnosticReport", RESULTS_ONLY).status_code == 403  # lacks the fhir scope
        assert get("metadata", None).status_code == 200
        bad = get("DiagnosticReport?color=blue", TOKEN_A)
        assert bad.status_code == 400 and "color" in bad.json()["issue"][0]["diagnostics"]
        assert get("DiagnosticReport?date=yesterday", TOKEN_A).status_code == 400


def test_fhir_search_pages_with_count_and_next_links(
    sites_settings: Settings, two_sites: tuple[str, str]
) -> None:
    """``_count`` pages a search; fhirclient follows the ``next`` links to every match once."""
    with served(create_app(sites_settings)) as base:
        everything = _validate_all(base, ADMIN, "Observation")
        assert len(everything) >= 3  # two studies' findings and measurements
        all_ids = sorted(r["id"] for r in everything)

        smart = _fhir_client(base, ADMIN)
        paged = _find(Observation, smart, {"_count": "2"})  # fhirclient follows "next"
        assert sorted(o.id for o in paged) == all_ids  # every match once, none twice

        def page(query: str) -> dict[str, Any]:
            answer = httpx.get(
                f"{base}/fhir/Observation?{query}", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert answer.status_code == 200, answer.text
            get_fhir_model_class("Bundle").model_validate(answer.json())
            return answer.json()

        first = page("_count=2")
        links = {link["relation"]: link["url"] for link in first["link"]}
        assert first["total"] == len(all_ids) and len(first["entry"]) == 2
        assert "previous" not in links and "_offset=2" in links["next"]
        last = page(f"_count=2&_offset={len(all_ids) - 1}")
        last_links = {link["relation"] for link in last["link"]}
        assert len(last["entry"]) == 1 and "next" not in last_links and "previous" in last_links
        only_total = page("_count=0")
        assert only_total["total"] == len(all_ids) and "entry" not in only_total
        assert "entry" not in page("_offset=999999")  # past the end: an empty page
        bad = httpx.get(
            f"{base}/fhir/Observation?_count=many", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert bad.status_code == 400 and "_count" in bad.json()["issue"][0]["diagnostics"]
