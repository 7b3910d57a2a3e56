"""/clinic over HTTP: sign-in like the API, a site sees only its patients (403 on another's),
urgent first, Chinese by default and English on request, the patient page's three parts, and
a referral sent from the page."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from tests.support.clinic_data import (
    B_PATIENT,
    ROUTINE_PATIENT,
    URGENT_PATIENT,
    VERIFIED_PATIENT,
    ClinicData,
)
from tests.support.referral_site import HOSPITAL, SITE_A, SITE_B

from medgate.api.app import create_app
from medgate.core.config import Settings


def sign_in(client: TestClient, token: str) -> None:
    response = client.post("/clinic/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/clinic?lang=zh"


def test_pages_need_a_token_with_the_results_scope(client: TestClient, data: ClinicData) -> None:
    first = client.get("/clinic", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/clinic/login")
    bad = client.post("/clinic/login", data={"token": "guess"})
    assert bad.status_code == 401 and "令牌无效" in bad.text
    cds_only = client.post("/clinic/login", data={"token": "cds-token"})
    assert cds_only.status_code == 401
    forged = client.get("/clinic", cookies={"medgate_clinic": "h:0|9999999999|00"})
    assert forged.status_code == 200 and "登录" in forged.text  # back on the sign-in form
    assert client.get("/clinic", headers=SITE_A).status_code == 200  # a bearer header works too
    outside = client.post(
        "/clinic/login", data={"token": "site-a-token", "next": "//evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert outside.headers["location"] == "/clinic?lang=zh"


def test_a_site_sees_its_own_patients_urgent_first(client: TestClient, data: ClinicData) -> None:
    sign_in(client, "site-a-token")
    page = client.get("/clinic")
    assert page.status_code == 200
    html = page.text
    assert '<html lang="zh-CN">' in html and "我的患者" in html
    order = [html.index(pid) for pid in (URGENT_PATIENT, ROUTINE_PATIENT, VERIFIED_PATIENT)]
    assert order[0] == min(order)  # the urgent patient (nodule, urgent referral advice) first
    assert B_PATIENT not in html and "陈" not in html
    assert "王芳" in html and "医师已复核" in html and "AI初步结果" in html
    assert "已完成（已下转）" in html  # the urgent patient's referral came back down
    english = client.get("/clinic?lang=en").text
    assert '<html lang="en">' in english and "My patients" in english
    assert "Verified by a radiologist" in english


def test_another_sites_patient_is_forbidden(client: TestClient, data: ClinicData) -> None:
    own = client.get(f"/clinic/patients/{data.b_key}", headers=SITE_B)
    assert own.status_code == 200 and B_PATIENT in own.text
    other = client.get(f"/clinic/patients/{data.urgent_key}", headers=SITE_B)
    assert other.status_code == 403 and URGENT_PATIENT not in other.text
    assert "不属于您的机构" in other.text
    assert client.get(f"/clinic/patients/{data.b_key}", headers=SITE_A).status_code == 403
    assert client.get("/clinic/patients/0123456789abcdef", headers=SITE_A).status_code == 404
    everyone = client.get("/clinic", headers=HOSPITAL).text
    assert B_PATIENT in everyone and URGENT_PATIENT in everyone


def test_patient_page_shows_results_scores_over_time_and_referral_history(
    client: TestClient, data: ClinicData
) -> None:
    page = client.get(f"/clinic/patients/{data.urgent_key}", headers=SITE_A)
    assert page.status_code == 200
    html = page.text
    assert "影像检查结果" in html and "结节 (91%) 9.5 mm" in html
    assert "Fleischner" in html  # the guidance of the clinical rules
    assert html.count("<tr>") - 1 == 2  # two decision-support answers in the score table
    # each answer's inputs with the time they were measured; blood pressure charted over time
    assert "收缩压 186 (2026-12-05 08:30)" in html and "收缩压 168 (2026-11-20 09:00)" in html
    assert '<svg class="chart" id="score-chart"' in html and "<strong>186/114</strong>" in html
    assert "转诊记录" in html and "市第一人民医院 胸外科" in html
    assert "上级医院随访方案（下转）" in html and "3个月、12个月复查胸部CT" in html
    assert re.search(r"已申请.*已接收.*已完成", html, re.S)


def test_a_referral_sent_from_the_page_reaches_the_api_and_fhir(
    client: TestClient, data: ClinicData, settings: Settings
) -> None:
    sign_in(client, "site-a-token")
    sent = client.post(
        f"/clinic/patients/{data.verified_key}/refer",
        data={
            "reason": "5 mm nodule, patient anxious, asks for a specialist",
            "urgency": "routine",
        },
        follow_redirects=False,
    )
    assert sent.status_code == 303 and sent.headers["location"].endswith("referred=1")
    made = client.get(
        "/api/v1/referrals", params={"patient": VERIFIED_PATIENT}, headers=HOSPITAL
    ).json()
    assert len(made) == 1 and made[0]["site"] == "clinic-a"
    assert {e["kind"] for e in made[0]["evidence"]} >= {"study", "finding"}
    task = client.get(f"/fhir/Task/{made[0]['id']}", headers=HOSPITAL).json()
    assert task["status"] == "requested"
    refused = client.post(
        f"/clinic/patients/{data.b_key}/refer", data={"reason": "x"}, headers=SITE_A
    )
    assert refused.status_code == 403
    assert VERIFIED_PATIENT not in settings.audit_path.read_text()


def test_smart_link_from_a_card_lands_on_the_patient_page(
    client: TestClient, data: ClinicData
) -> None:
    card_link = client.post(
        "/cds-services/medgate-primary-care",
        json={
            "hook": "patient-view",
            "hookInstance": "x-1",
            "context": {"patientId": URGENT_PATIENT},
            "prefetch": {},
        },
        headers=SITE_A,
    ).json()["cards"][0]["links"][0]
    launched = client.get(
        "/clinic/launch",
        params={"appContext": card_link["appContext"], "iss": "https://ehr.example/fhir"},
        follow_redirects=False,
    )
    assert launched.headers["location"].startswith(f"/clinic/patients/{data.urgent_key}")


def test_the_hospitals_plan_comes_back_into_the_ehr_as_a_card(
    client: TestClient, data: ClinicData
) -> None:
    """The clinic's EHR asks again after the referral came back down: a card shows the plan."""
    from tests.support.patient_view_hook import hook

    body = hook("after-referral")
    body["context"]["patientId"] = URGENT_PATIENT
    cards = client.post("/cds-services/medgate-primary-care", json=body, headers=SITE_A).json()[
        "cards"
    ]
    plan_cards = [c for c in cards if c["summary"].startswith("转诊已完成")]
    assert len(plan_cards) == 1
    assert "3个月、12个月复查胸部CT" in plan_cards[0]["detail"]
    assert plan_cards[0]["links"][0]["type"] == "smart"
    other_site = client.post("/cds-services/medgate-primary-care", json=body, headers=SITE_B)
    assert not [c for c in other_site.json()["cards"] if c["summary"].startswith("转诊")]


def test_pages_are_open_only_where_the_api_is(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """No tokens and no JWT issuers: open like the API; JWT issuers alone: closed."""
    open_settings = settings_factory()
    with TestClient(create_app(open_settings)) as client:
        assert client.get("/clinic").status_code == 200
    key = tmp_path / "ehr.pem"
    private = ec.generate_private_key(ec.SECP384R1())
    key.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    closed = settings_factory(api={"cds_jwt_issuers": {"https://ehr.example": str(key)}})
    with TestClient(create_app(closed)) as client:
        response = client.get("/clinic", follow_redirects=False)
        assert response.status_code == 303 and "/clinic/login" in response.headers["location"]
