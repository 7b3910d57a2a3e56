"""Safety over HTTP (issue 22): never silent on an urgent reading, impossible pairs refused, an
emergency level above urgent referral, the disclaimer on every answer and card, Chinese cards
without English, FHIR smoking / diabetes type kept as recorded."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_data import DEMO_MODEL_INPUTS
from tests.support.cds_fhir_data import PATIENT, bp, hook, obs, searchset
from tests.support.paths import MODELS

from medgate.api.cds_fhir import summary_from_prefetch
from medgate.api.routes_cds import cards_for
from medgate.clinical.assess import ADULT_ONLY, NOT_ASSESSED, UNDER_16, assess
from medgate.clinical.common import DISCLAIMER
from medgate.clinical.schemas import AssessRequest
from medgate.models.tabular import DEFAULT_BUNDLE, load_predictor

ZH = {"Accept-Language": "zh"}
EN = {"Accept-Language": "en"}

#: Latin-letter tokens allowed in Chinese text: score names, units, imaging and lab acronyms.
ALLOWED_LATIN = {
    "NEWS",
    "qSOFA",
    "China",
    "PAR",
    "AI",
    "CT",
    "PET",
    "mmHg",
    "mmol",
    "L",  # mmol/L, the unit as Chinese clinical text writes it
    "HbA",
    "LDL",
    "C",  # LDL-C, HDL-C: the Chinese guidelines' own abbreviations
    "TC",
    "BNP",
    "NT",
    "proBNP",
    "PA",
    "AP",
}


def condition(code: str, system: str = "http://hl7.org/fhir/sid/icd-10") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c-{code}",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
    }


def latin_words(text: str) -> set[str]:
    text = re.sub(r"`[^`]*`", "", text)  # field names quoted as code
    return {w for w in re.findall(r"[A-Za-z]+", text) if w not in ALLOWED_LATIN}


def cards(client: TestClient, prefetch: dict[str, Any], headers: dict[str, str]) -> list[dict]:
    response = client.post(
        "/cds-services/medgate-primary-care", json=hook(prefetch), headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def test_bp_crisis_without_a_diagnosis_is_urgent(client: TestClient) -> None:
    """Issue 22: BP 186/112 with no recorded diagnosis gave only an "inputs missing" card."""
    data = client.post(
        "/api/v1/cds/assess", json={"age": 58, "sbp_mmhg": 186, "dbp_mmhg": 112}, headers=EN
    ).json()
    assert data["referral"]["level"] == "urgent"
    assert "186/112" in data["referral"]["reasons"][0]
    prefetch = {"patient": PATIENT, "observations": searchset([bp(186, 112)])}
    found = cards(client, prefetch, EN)
    assert found[0]["indicator"] == "critical" and "186/112" in found[0]["summary"]


@pytest.mark.parametrize(
    ("glucose", "level"), [(16.7, "urgent"), (3.9, "urgent"), (2.9, "emergency"), (6.0, "none")]
)
def test_glucose_without_a_diagnosis(client: TestClient, glucose: float, level: str) -> None:
    data = client.post("/api/v1/cds/assess", json={"random_glucose_mmol_l": glucose}).json()
    assert data["referral"]["level"] == level


@pytest.mark.parametrize("route", ["assess", "follow-up"])
def test_impossible_bp_pair_is_refused_not_a_crisis(client: TestClient, route: str) -> None:
    body: dict[str, Any] = {"sbp_mmhg": 80, "dbp_mmhg": 150}
    if route == "follow-up":
        body["conditions"] = ["hypertension"]
    response = client.post(f"/api/v1/cds/{route}", json=body)
    assert response.status_code == 422
    assert "diastolic 150 mmHg is not below systolic 80 mmHg" in response.text


def test_impossible_pair_in_fhir_is_dropped_and_said(client: TestClient) -> None:
    prefetch = {"patient": PATIENT, "observations": searchset([bp(80, 150)])}
    found = cards(client, prefetch, EN)
    assert all(c["indicator"] == "info" for c in found)
    assert "ignored out-of-range value: `sbp_mmhg`" in found[-1]["detail"]


CRITICAL_VITALS = {
    "respiratory_rate": 26,
    "spo2": 90,
    "on_oxygen": False,
    "sbp_mmhg": 95,
    "dbp_mmhg": 60,
    "heart_rate": 125,
    "consciousness": "A",
    "temperature_c": 39.2,
}


def test_emergency_level_over_http(client: TestClient) -> None:
    data = client.post("/api/v1/cds/assess", json=CRITICAL_VITALS, headers=ZH).json()
    assert data["news2"]["score"] >= 7
    assert data["referral"]["level"] == "emergency"
    assert data["guidance"][0].startswith("急救：立即拨打120")
    qsofa = client.post(
        "/api/v1/cds/qsofa",
        json={
            "respiratory_rate": 24,
            "sbp_mmhg": 95,
            "consciousness": "A",
            "suspected_infection": True,
        },
    ).json()
    assert qsofa["action_level"] == "emergency"


def _observations() -> dict[str, Any]:
    return searchset(
        [
            bp(186, 112),
            obs("8867-4", 88, "/min"),
            obs("1558-6", 8.4, "mmol/L"),
            obs("2093-3", 5.2, "mmol/L"),
            obs("2085-9", 1.3, "mmol/L"),
            obs("8280-0", 92, "cm"),
        ]
    )


@pytest.mark.parametrize("headers", [ZH, EN])
def test_every_card_carries_the_disclaimer(client: TestClient, headers: dict[str, str]) -> None:
    lang = headers["Accept-Language"]
    prefetch = {
        "patient": PATIENT,
        "observations": _observations(),
        "conditions": searchset([condition("I10"), condition("E11")]),
    }
    found = cards(client, prefetch, headers)
    assert len(found) >= 2 and found[0]["indicator"] == "critical"
    for card in found:
        assert card["detail"].endswith(f"*{DISCLAIMER[lang]}*"), card


def test_every_json_answer_carries_the_disclaimer(client: TestClient) -> None:
    vitals = {k: v for k, v in CRITICAL_VITALS.items() if k != "dbp_mmhg"}
    news2 = client.post("/api/v1/cds/news2", json=vitals, headers=ZH).json()
    assert news2["disclaimer"] == DISCLAIMER["zh"]
    qsofa = client.post(
        "/api/v1/cds/qsofa",
        json={"respiratory_rate": 16, "sbp_mmhg": 120, "consciousness": "A"},
        headers=ZH,
    ).json()
    assert qsofa["disclaimer"] == DISCLAIMER["zh"]
    assessed = client.post("/api/v1/cds/assess", json={"age": 50}, headers=ZH).json()
    assert assessed["disclaimer"].startswith(DISCLAIMER["zh"])
    follow = client.post(
        "/api/v1/cds/follow-up",
        json={"conditions": ["hypertension"], "sbp_mmhg": 130, "dbp_mmhg": 80},
    ).json()
    assert follow["disclaimer"] == DISCLAIMER


FULL_PROFILE = {
    "age": 58,
    "sex": "male",
    "region": "north",
    "residence": "urban",
    "conditions": ["hypertension"],
    "diabetes": False,
    "current_smoker": True,
    "family_history_ascvd": False,
    "on_bp_treatment": True,
    "sbp_mmhg": 132,
    "dbp_mmhg": 84,
    "heart_rate": 76,
    "respiratory_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "consciousness": "A",
    "temperature_c": 36.8,
    "waist_cm": 92,
    "total_cholesterol_mmol_l": 5.6,
    "hdl_cholesterol_mmol_l": 1.1,
}


@pytest.mark.parametrize(
    "summary",
    [
        FULL_PROFILE,
        {**FULL_PROFILE, **CRITICAL_VITALS, "suspected_infection": True},
        {**FULL_PROFILE, "age": 72, "sbp_mmhg": 150, "dbp_mmhg": 88},
    ],
)
def test_chinese_cards_have_no_english_inside(summary: dict[str, Any]) -> None:
    """Issue 22: "18.4%（high）"; NEWS2, qSOFA and follow-up cards existed only in English."""
    result = assess(AssessRequest(**summary), None, "zh")
    found = cards_for(result, "p1", "zh")
    kinds = {c["summary"][:4] for c in found}
    assert "NEWS" in kinds
    for card in found:
        texts = [
            card["summary"],
            card["detail"],
            *(s["label"] for s in card.get("suggestions", [])),
        ]
        for text in texts:
            assert not latin_words(text), (text, latin_words(text))
    for line in result.guidance:
        assert not latin_words(line), (line, latin_words(line))


def test_chinese_follow_up_and_qsofa_cards_exist() -> None:
    calm = cards_for(assess(AssessRequest(**FULL_PROFILE), None, "zh"), "p1", "zh")
    assert any(c["summary"].startswith("随访：") and "高血压" in c["detail"] for c in calm)
    assert any(c["summary"].startswith("China-PAR 10年心血管病风险") for c in calm)
    sick = {**FULL_PROFILE, **CRITICAL_VITALS, "suspected_infection": True}
    found = cards_for(assess(AssessRequest(**sick), None, "zh"), "p1", "zh")
    assert found[0]["summary"].startswith("急救：")
    assert found[0]["suggestions"][0]["label"] == "立即拨打120 / 立即转运急诊"
    assert any(c["summary"].startswith("qSOFA") and "呼吸频率" in c["detail"] for c in found)


def test_fhir_smoking_unknown_stays_unknown() -> None:
    unknown = searchset(
        [
            obs(
                "72166-2",
                None,
                "",
                valueCodeableConcept={
                    "coding": [{"system": "http://snomed.info/sct", "code": "266927001"}]
                },
            )
        ]
    )
    assert "current_smoker" not in summary_from_prefetch({"observations": unknown})
    never = searchset(
        [
            obs(
                "72166-2",
                None,
                "",
                valueCodeableConcept={
                    "coding": [{"system": "http://snomed.info/sct", "code": "266919005"}]
                },
            )
        ]
    )
    assert summary_from_prefetch({"observations": never})["current_smoker"] is False


@pytest.mark.parametrize(
    ("code", "diabetes_type", "type2"),
    [
        ("E10", "type1", False),
        ("E10.9", "type1", False),
        ("E11", "type2", True),
        ("E14", "unspecified", True),
    ],
)
def test_fhir_diabetes_type_is_kept(code: str, diabetes_type: str, type2: bool) -> None:
    conditions = searchset([condition(code)])
    summary = summary_from_prefetch({"conditions": conditions})
    assert summary["diabetes"] is True and summary["diabetes_type"] == diabetes_type
    assert ("type2_diabetes" in summary.get("conditions", [])) is type2


def test_type1_diabetes_does_not_get_type2_follow_up(client: TestClient) -> None:
    data = client.post(
        "/api/v1/cds/assess",
        json={"diabetes": True, "diabetes_type": "type1", "fasting_glucose_mmol_l": 8.0},
        headers=EN,
    ).json()
    reasons = {n["score"]: n["reason"] for n in data["not_computed"]}
    assert data["follow_up"] is None and "type 1 diabetes" in reasons["follow_up"]


def test_fhir_bmi_is_read_from_its_loinc_code() -> None:
    """BMI (LOINC 39156-5) decides the remaining-lifetime rule's BMI >= 28 factor."""
    summary = summary_from_prefetch({"observations": searchset([obs("39156-5", 29.4, "kg/m2")])})
    assert summary["bmi"] == pytest.approx(29.4)


def _born_years_ago(years: int) -> str:
    today = dt.date.today()
    return today.replace(year=today.year - years, day=1).isoformat()


def _vitals(sbp: int, dbp: int) -> dict[str, Any]:
    return searchset(
        [
            bp(sbp, dbp),
            obs("9279-1", 30, "/min"),
            obs("8867-4", 125, "/min"),
            obs("59408-5", 97, "%"),
            obs("8310-5", 37.6, "Cel"),
            obs("2339-0", 5.4, "mmol/L"),
        ]
    )


@pytest.mark.parametrize("headers", [EN, ZH])
def test_a_child_gets_no_adult_score_and_is_told_why(
    client: TestClient, headers: dict[str, str]
) -> None:
    """A child's age was dropped as out of range, and adult scores ran on the child's values."""
    lang = headers["Accept-Language"]
    patient = {**PATIENT, "birthDate": _born_years_ago(10)}
    found = cards(client, {"patient": patient, "observations": _vitals(105, 65)}, headers)
    assert len(found) == 1, found
    card = found[0]
    assert card["indicator"] == "warning"
    assert card["summary"] == NOT_ASSESSED["summary"][lang]
    assert card["detail"] == f"{NOT_ASSESSED['detail'][lang]}\n\n*{DISCLAIMER[lang]}*"
    if lang == "zh":
        assert not latin_words(card["summary"] + card["detail"])


def test_a_child_with_a_crisis_reading_still_gets_the_urgent_card(client: TestClient) -> None:
    patient = {**PATIENT, "birthDate": _born_years_ago(10)}
    found = cards(client, {"patient": patient, "observations": _vitals(186, 112)}, EN)
    assert found[0]["indicator"] == "critical"
    assert found[0]["summary"].startswith("Urgent referral: ")
    assert found[1]["summary"] == NOT_ASSESSED["summary"]["en"]  # what is not judged for a child
    assert NOT_ASSESSED["detail"]["en"] in found[1]["detail"]
    assert NOT_ASSESSED["detail"]["en"] not in found[0]["detail"]  # said once, on its own card
    order = client.post(
        "/cds-services/medgate-order-safety",
        json=hook({"patient": patient, "observations": _vitals(186, 112)}, hook="order-select"),
        headers=EN,
    )
    order_cards = order.json()["cards"]
    assert [c["indicator"] for c in order_cards] == ["critical"]
    assert NOT_ASSESSED["detail"]["en"] in order_cards[0]["detail"]  # the only card says it


@pytest.mark.parametrize(("age", "news2"), [(15, False), (16, True), (17, True), (18, True)])
def test_assess_scores_by_age(client: TestClient, age: int, news2: bool) -> None:
    response = client.post(
        "/api/v1/cds/assess", json={**CRITICAL_VITALS, "age": age, "suspected_infection": True}
    )
    assert response.status_code == 200, response.text
    data = response.json()
    if not news2:
        assert data["news2"] is None and data["referral"]["level"] == "none"
        assert ("news2", UNDER_16) in {(n["score"], n["reason"]) for n in data["not_computed"]}
        return
    assert data["news2"]["score"] >= 7 and data["referral"]["level"] == "emergency"
    if age < 18:  # qSOFA is an adult score: not computed, and said so
        assert data["qsofa"] is None
        assert ("qsofa", ADULT_ONLY) in {(n["score"], n["reason"]) for n in data["not_computed"]}
    else:
        assert data["qsofa"]["score"] == 2


def test_dropped_values_are_named_in_chinese(client: TestClient) -> None:
    prefetch = {"patient": PATIENT, "observations": searchset([bp(80, 150)])}
    found = cards(client, prefetch, ZH)
    assert "已忽略超出范围的数值：`sbp_mmhg`" in found[-1]["detail"]
    assert not latin_words(found[-1]["summary"] + found[-1]["detail"])


def _shock() -> dict[str, Any]:
    return searchset(
        [
            bp(85, 50),
            obs("8867-4", 140, "/min"),
            obs("9279-1", 32, "/min"),
            obs("59408-5", 84, "%"),
            obs("8310-5", 39.8, "Cel"),
        ]
    )


@pytest.mark.parametrize("service", ["medgate-primary-care", "medgate-order-safety"])
def test_fhir_vitals_without_consciousness_or_oxygen_still_act(
    client: TestClient, service: str
) -> None:
    """FHIR carries no ACVPU or oxygen, so NEWS2 was never complete and shock gave no card."""
    hook_name = "patient-view" if service == "medgate-primary-care" else "order-select"
    body = hook({"patient": PATIENT, "observations": _shock()}, hook=hook_name)
    response = client.post(f"/cds-services/{service}", json=body, headers=ZH)
    found = response.json()["cards"]
    assert found[0]["indicator"] == "critical", found
    assert found[0]["summary"].startswith("急救：NEWS2至少14分")
    assert not latin_words(found[0]["summary"] + found[0]["detail"])


def test_severe_hypotension_in_a_managed_patient_is_answered(client: TestClient) -> None:
    """SBP 45 was taken by /assess but refused by the follow-up's input: a 500."""
    body = {"age": 60, "conditions": ["hypertension"], "sbp_mmhg": 45, "dbp_mmhg": 30}
    response = client.post("/api/v1/cds/assess", json=body, headers=EN)
    assert response.status_code == 200, response.text
    assert response.json()["referral"]["level"] == "urgent"


def test_chinese_texts_keep_their_content() -> None:
    """The zh answers said only "不适用" where the en ones said why, named no NEWS2 parameter, and
    called a qSOFA emergency "紧急转诊"; established ASCVD had no secondary-prevention line."""
    ascvd = assess(AssessRequest(**{**FULL_PROFILE, "ascvd": True}), None, "zh")
    detail = cards_for(ascvd, "p1", "zh")[-1]["detail"]
    assert "China-PAR：已确诊动脉粥样硬化性心血管病：极高危，二级预防" in detail
    assert any(
        line.startswith("已确诊动脉粥样硬化性心血管病：极高危，二级预防") for line in ascvd.guidance
    )
    en = assess(AssessRequest(**{**FULL_PROFILE, "ascvd": True}), None, "en")
    assert any(line.startswith("Established ASCVD: very high risk") for line in en.guidance)
    confused = assess(AssessRequest(**{**FULL_PROFILE, "consciousness": "C"}), None, "zh")
    assert "NEWS2单项参数评分为3分（意识）" in confused.referral.reasons
    sepsis = assess(
        AssessRequest(**{**FULL_PROFILE, **CRITICAL_VITALS, "suspected_infection": True}),
        None,
        "zh",
    )
    assert sepsis.qsofa is not None and "立即转运急诊（急救）" in sepsis.qsofa.interpretation


def test_the_demo_model_card_is_chinese_in_chinese() -> None:
    predictor = load_predictor(MODELS, DEFAULT_BUNDLE)
    summary = {
        **FULL_PROFILE,
        "diabetes": True,
        "conditions": ["type2_diabetes"],
        "bmi": 27.0,
        "ldl_cholesterol_mmol_l": 3.4,
        "triglycerides_mmol_l": 2.0,
        "fasting_glucose_mmol_l": 7.5,
    }
    result = assess(AssessRequest(**summary), predictor, "zh")
    assert result.learned_model is not None
    card = next(c for c in cards_for(result, "p1", "zh") if c["summary"].startswith("演示模型"))
    assert not latin_words(card["summary"] + card["detail"]), latin_words(card["detail"])
    assert "仅为演示，不用于临床" in card["detail"]


@pytest.mark.parametrize("headers", [ZH, EN])
def test_the_demo_model_answer_carries_the_disclaimer(
    client: TestClient, headers: dict[str, str]
) -> None:
    url = "/api/v1/cds/diabetes-progression"
    data = client.post(url, json=DEMO_MODEL_INPUTS, headers=headers).json()
    assert data["disclaimer"].startswith(DISCLAIMER[headers["Accept-Language"]])


@pytest.mark.parametrize("headers", [ZH, EN])
def test_established_ascvd_and_an_unmet_ldl_target_reach_the_cards(
    headers: dict[str, str],
) -> None:
    """JSON had the secondary-prevention line and the unmet LDL-C target; the cards showed only
    "controlled, 90 days" (and no ASCVD line at all when China-PAR's inputs were missing)."""
    lang = headers["Accept-Language"]
    summary: dict[str, Any] = {
        "age": 45,
        "ascvd": True,
        "conditions": ["hypertension"],
        "sbp_mmhg": 130,
        "dbp_mmhg": 80,
        "ldl_cholesterol_mmol_l": 2.5,
    }
    result = assess(AssessRequest(**summary), None, lang)  # type: ignore[arg-type]
    found = cards_for(result, "p1", lang)  # type: ignore[arg-type]
    ascvd = next(c for c in found if c["indicator"] == "warning")
    follow_up = next(c for c in found if c["summary"].startswith(("随访", "Follow-up")))
    if lang == "zh":
        assert ascvd["summary"] == "已确诊动脉粥样硬化性心血管病：极高危，二级预防"
        assert "LDL-C 2.5 mmol/L，未达标（目标 < 1.8 mmol/L）" in follow_up["detail"]
        assert not latin_words(ascvd["detail"] + follow_up["detail"])
    else:
        assert ascvd["summary"] == "Established ASCVD: very high risk, secondary prevention"
        assert "LDL-C 2.5 mmol/L: not at target (< 1.8 mmol/L)" in follow_up["detail"]


def test_a_naive_home_reading_time_is_a_422_not_a_500(client: TestClient) -> None:
    body = {
        "conditions": ["hypertension"],
        "home_bp": [
            {"time": "2024-05-01T08:00:00", "sbp_mmhg": 185, "dbp_mmhg": 100},
            {"time": "2024-05-02T08:00:00+08:00", "sbp_mmhg": 150, "dbp_mmhg": 95},
        ],
    }
    for route in ("follow-up", "assess"):
        response = client.post(f"/api/v1/cds/{route}", json=body)
        assert response.status_code == 422, response.text
        assert "time needs a UTC offset" in response.text


def test_chinese_not_computed_card_names_the_inputs_in_chinese() -> None:
    result = assess(AssessRequest(age=50, sex="male", sbp_mmhg=130, dbp_mmhg=80), None, "zh")
    card = next(c for c in cards_for(result, "p1", "zh") if c["summary"] == "部分评分无法计算")
    assert "呼吸频率（`respiratory_rate`）" in card["detail"]
    assert "南方或北方（`region`）" in card["detail"]
    assert not latin_words(card["detail"])


def test_a_converted_ldl_value_is_shown_to_two_decimals() -> None:
    summary: dict[str, Any] = {
        "age": 60,
        "ascvd": True,
        "conditions": ["hypertension"],
        "sbp_mmhg": 128,
        "dbp_mmhg": 78,
        "ldl_cholesterol_mmol_l": 3.626,  # 140 mg/dL from FHIR
    }
    found = cards_for(assess(AssessRequest(**summary), None, "en"), "p1", "en")
    follow_up = next(c for c in found if c["summary"].startswith("Follow-up"))
    assert "LDL-C 3.63 mmol/L: not at target (< 1.8 mmol/L)" in follow_up["detail"]


def test_the_follow_up_never_calls_shock_controlled(client: TestClient) -> None:
    """BP 45/30 was refused by /follow-up (/assess took it), and 60/40 was 'controlled, 90 days'."""
    for sbp, dbp in ((45, 30), (60, 40)):
        body = {"conditions": ["hypertension"], "sbp_mmhg": sbp, "dbp_mmhg": dbp}
        response = client.post("/api/v1/cds/follow-up", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["urgent_referral"] and data["next_follow_up_days"] == 14
        assert any(r["code"] == "low-sbp" for r in data["urgent_reasons"])
