"""Results pushed to a site's FHIR server as transaction Bundles through the delivery queue:
preliminary then final, read back with fhirclient; refusals dead-lettered, outages waited for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fhirclient import client
from fhirclient.models.diagnosticreport import DiagnosticReport
from fhirclient.models.observation import Observation
from tests.support.delivery_studies import add_study
from tests.support.fhir_peer import PeerState, fhir_peer
from tests.support.http_server import served

from medgate.core.config import FhirDestination, Settings
from medgate.delivery.enqueue import enqueue_final_result
from medgate.delivery.site_delivery import SiteDelivery
from medgate.store.deliveries import DeliveryStore
from medgate.trust.audit import AuditLog

PUSH_TOKEN = "push-token-of-clinic-a"


@pytest.fixture
def peer() -> Iterator[tuple[PeerState, str]]:
    state = PeerState(token=PUSH_TOKEN)
    with served(fhir_peer(state)) as base:
        yield state, f"{base}/fhir"


@pytest.fixture
def push_settings(sites_settings: Settings, peer: tuple[PeerState, str]) -> Settings:
    site = sites_settings.sites[0].model_copy(
        update={"hl7": None, "fhir": FhirDestination(base_url=peer[1], token=PUSH_TOKEN)}
    )
    return sites_settings.model_copy(update={"sites": [site, sites_settings.sites[1]]})


def _drain(sender: SiteDelivery, store: DeliveryStore, until: Any) -> None:
    for _ in range(50):
        sender.run_once()
        if until(store.entries()):
            return
        time.sleep(0.06)
    raise AssertionError(f"the queue did not get there: {store.entries()}")


def test_result_pushed_preliminary_then_final_and_read_back(
    push_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    peer: tuple[PeerState, str],
) -> None:
    state, base = peer
    uid = add_study(engine, push_settings, calling_ae="CLINIC_A_CT")
    other = add_study(engine, push_settings, calling_ae="CLINIC_B_DX")  # B: HL7 only, no FHIR
    sender = SiteDelivery(push_settings, engine, audit)
    store = DeliveryStore(engine)
    _drain(sender, store, lambda rows: {r["status"] for r in rows} == {"delivered"})
    assert [r["destination"] for r in store.for_study(other)] == ["hl7:clinic-b"]
    [row] = store.for_study(uid)
    assert row["destination"] == "fhir:clinic-a" and row["ack_code"] in ("200", "201")
    assert len(state.posts) == 1

    smart = client.FHIRClient(settings={"app_id": "medgate-tests", "api_base": base})
    report = DiagnosticReport.read(uid, smart.server)
    assert report.status == "preliminary"
    observations = [
        Observation.read(r.reference.split("/")[1], smart.server) for r in report.result
    ]
    assert len(observations) == 3 and {o.status for o in observations} == {"preliminary"}
    assert {k for k, _ in state.stored} == {"DiagnosticReport", "Observation", "RiskAssessment"}

    enqueue_final_result(push_settings, engine, uid, verified_by="dr-zhou")
    _drain(sender, store, lambda rows: {r["status"] for r in rows} == {"delivered"})
    assert DiagnosticReport.read(uid, smart.server).status == "final"
    assert {Observation.read(o.id, smart.server).status for o in observations} == {"final"}
    assert len(state.stored) == 5  # PUT by id: the final replaced the preliminary


def test_refused_push_is_dead_lettered_and_outage_waited_for(
    push_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    peer: tuple[PeerState, str],
) -> None:
    state, _ = peer
    settings = push_settings.model_copy(
        update={
            "delivery": push_settings.delivery.model_copy(
                update={
                    "fhir": push_settings.delivery.fhir.model_copy(update={"push_max_attempts": 2})
                }
            )
        }
    )
    store = DeliveryStore(engine)
    sender = SiteDelivery(settings, engine, audit)
    state.mode = "down"
    uid = add_study(engine, settings, calling_ae="CLINIC_A_CT")
    for _ in range(4):
        sender.run_once()
        time.sleep(0.06)
    [row] = store.for_study(uid)
    assert row["status"] == "pending" and row["refusals"] == 0 and "503" in row["last_error"]

    state.mode = "reject"
    _drain(sender, store, lambda rows: rows[0]["status"] == "dead-letter")
    [row] = store.for_study(uid)
    assert row["ack_code"] == "422" and row["refusals"] == 2
    assert "patient unknown" in row["last_error"]
    assert state.stored == {}
