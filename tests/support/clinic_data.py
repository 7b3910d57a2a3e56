"""The /clinic tests' data: four patients at two clinic sites with their studies, CDS answers on
two days and a referral up to the hospital and back down with its plan, made through the real
API; what the tests look them up by (the patients' ids and their keyed hashes)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from unittest import mock

from fastapi.testclient import TestClient
from tests.support.clinic_studies import add_study, verify
from tests.support.patient_view_hook import hook
from tests.support.referral_site import HOSPITAL, SITE_A

from medgate.api import cds_fhir
from medgate.core.config import Settings

URGENT_PATIENT = "A-0001"
ROUTINE_PATIENT = "A-0002"
VERIFIED_PATIENT = "A-0003"
B_PATIENT = "B-0001"
#: When each CDS answer of the urgent patient was asked for: the morning of each visit, so the
#: readings of that visit are recent enough to use (``cds_fhir.MAX_AGE``).
VISITS = (
    dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC),
)


@dataclass
class ClinicData:
    urgent_key: str
    verified_key: str
    b_key: str
    referral_id: str


def populate(client: TestClient, settings: Settings) -> ClinicData:
    """Three patients at clinic A (urgent, routine, verified), one at clinic B; CDS answers on
    two days for the urgent one and a referral up and back down with the hospital's plan."""
    from medgate.core.logs import phi_hash

    engine = client.app.state.index.engine  # type: ignore[attr-defined]
    add_study(
        engine, settings, calling_ae="CLINIC_A", patient_id=ROUTINE_PATIENT,
        name="Li^Ming=李^明", sex="M", nodule_mm=None, priority="routine", study_date="20261204",
    )  # fmt: skip
    add_study(
        engine, settings, calling_ae="CLINIC_A", patient_id=URGENT_PATIENT,
        name="Wang^Fang=王^芳", nodule_mm=9.5, priority="urgent",
    )  # fmt: skip
    verified = add_study(
        engine, settings, calling_ae="CLINIC_A", patient_id=VERIFIED_PATIENT,
        name="Zhao^Lei=赵^磊", sex="M", nodule_mm=5.0, priority="routine", study_date="20261201",
    )  # fmt: skip
    verify(engine, verified)
    add_study(
        engine, settings, calling_ae="CLINIC_B", patient_id=B_PATIENT,
        name="Chen^Jing=陈^静", nodule_mm=12.0, priority="critical",
    )  # fmt: skip
    for n, instance in enumerate(("7b0c-1", "7b0c-2")):
        body = hook(instance)
        body["context"]["patientId"] = URGENT_PATIENT
        body["prefetch"]["patient"]["id"] = URGENT_PATIENT
        if n == 0:  # the first visit: a lower blood pressure
            bp = body["prefetch"]["observations"]["entry"][1]["resource"]
            bp["component"][0]["valueQuantity"]["value"] = 168
            bp["component"][1]["valueQuantity"]["value"] = 102
            bp["effectiveDateTime"] = "2026-11-20T09:00:00Z"
        with mock.patch.object(cds_fhir, "utc_now", return_value=VISITS[n]):
            response = client.post("/cds-services/medgate-primary-care", json=body, headers=SITE_A)
        assert response.status_code == 200
    referral = client.post(
        "/api/v1/referrals",
        json={
            "patient_id": URGENT_PATIENT,
            "reason": "CT: 9.5 mm solid nodule; BP 186/114 mmHg",
            "urgency": "urgent",
            "performer": "市第一人民医院 胸外科",
        },
        headers=SITE_A,
    ).json()
    url = f"/api/v1/referrals/{referral['id']}"
    assert client.patch(url, json={"status": "accepted"}, headers=HOSPITAL).status_code == 200
    plan = "已行胸腔镜肺叶切除，病理良性。请社区3个月、12个月复查胸部CT，控制血压<140/90 mmHg。"
    done = client.patch(url, json={"status": "completed", "follow_up_plan": plan}, headers=HOSPITAL)
    assert done.status_code == 200
    key = settings.audit.hash_key
    return ClinicData(
        urgent_key=phi_hash(URGENT_PATIENT, key).removeprefix("h:"),
        verified_key=phi_hash(VERIFIED_PATIENT, key).removeprefix("h:"),
        b_key=phi_hash(B_PATIENT, key).removeprefix("h:"),
        referral_id=referral["id"],
    )
