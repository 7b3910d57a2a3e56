"""Hypertension / diabetes follow-up: referral rule boundaries, control, home readings."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from medgate.clinical import followup as fu


def run(**fields: object) -> fu.FollowUpResult:
    fields.setdefault("conditions", ["hypertension", "type2_diabetes"])
    return fu.follow_up(fu.FollowUpInput(**fields))


@pytest.mark.parametrize(
    ("sbp", "dbp", "urgent"),
    [(179, 109, False), (180, 80, True), (150, 110, True), (179, 110, True), (120, 109, False)],
)
def test_bp_crisis_boundary(sbp: int, dbp: int, urgent: bool) -> None:
    assert run(sbp_mmhg=sbp, dbp_mmhg=dbp).urgent_referral is urgent


@pytest.mark.parametrize(
    ("glucose", "urgent"), [(16.6, False), (16.7, True), (3.9, True), (4.0, False)]
)
def test_glucose_boundary(glucose: float, urgent: bool) -> None:
    assert run(fasting_glucose_mmol_l=glucose).urgent_referral is urgent
    # corrected (issue 22): an urgent glucose is urgent whatever the diagnosis; the old test
    # asserted that a hypertension-only patient was not referred
    assert run(conditions=["hypertension"], random_glucose_mmol_l=glucose).urgent_referral is urgent


@pytest.mark.parametrize(
    ("field", "ok", "bad"), [("heart_rate", 100, 101), ("temperature_c", 39.0, 39.1)]
)
def test_vital_sign_boundaries(field: str, ok: float, bad: float) -> None:
    assert run(**{field: ok}).urgent_referral is False
    assert run(**{field: bad}).urgent_referral is True


@pytest.mark.parametrize(
    "extra",
    [
        {"consciousness": "C"},
        # corrected (issue 22): pregnancy counts only with raised BP or glucose (2017 spec)
        {"pregnant_or_lactating": True, "sbp_mmhg": 142, "dbp_mmhg": 88},
        {"symptoms": ["chest_pain"]},
    ],
)
def test_other_urgent_criteria(extra: dict) -> None:
    result = run(**extra)
    assert result.urgent_referral and result.next_follow_up_days == 14


@pytest.mark.parametrize(
    ("age", "sbp", "dbp", "controlled"),
    [
        (60, 139, 89, True),
        (60, 140, 89, False),
        (60, 139, 90, False),
        (65, 149, 89, True),
        (65, 150, 80, False),
    ],
)
def test_bp_control_targets(age: int, sbp: int, dbp: int, controlled: bool) -> None:
    result = run(conditions=["hypertension"], age=age, sbp_mmhg=sbp, dbp_mmhg=dbp)
    assert result.status[0].controlled is controlled
    assert result.next_follow_up_days == (90 if controlled else 14)


@pytest.mark.parametrize(("glucose", "controlled"), [(6.9, True), (7.0, False)])
def test_glucose_control(glucose: float, controlled: bool) -> None:
    result = run(conditions=["type2_diabetes"], fasting_glucose_mmol_l=glucose)
    assert result.status[0].controlled is controlled


def test_routine_referral_after_two_uncontrolled_visits() -> None:
    first = run(conditions=["hypertension"], sbp_mmhg=150, dbp_mmhg=95)
    assert not first.routine_referral and first.next_follow_up_days == 14
    second = run(
        conditions=["hypertension"], sbp_mmhg=150, dbp_mmhg=95, previous_visit_uncontrolled=True
    )
    assert second.routine_referral and second.routine_reasons[0].code == "two-uncontrolled-visits"
    controlled = run(
        conditions=["hypertension"], sbp_mmhg=130, dbp_mmhg=80, previous_visit_uncontrolled=True
    )
    assert not controlled.routine_referral and controlled.next_follow_up_days == 90


def _series(values: list[tuple[int, int]]) -> list[dict]:
    start = dt.datetime(2024, 3, 1, 7, 0, tzinfo=dt.UTC)
    return [
        {"time": (start + dt.timedelta(hours=12 * i)).isoformat(), "sbp_mmhg": s, "dbp_mmhg": d}
        for i, (s, d) in enumerate(values)
    ]


def test_home_readings_are_summarised_and_judged(client: TestClient) -> None:
    body = {
        "conditions": ["hypertension"],
        "home_bp": _series([(138, 86), (130, 82), (128, 80), (126, 78)]),
    }
    data = client.post("/api/v1/cds/follow-up", json=body).json()
    summary = data["home_bp_summary"]
    assert summary["count"] == 4 and summary["mean"]["sbp_mmhg"] == 130.5
    assert summary["above_target_fraction"] == 0.25
    assert data["status"][0] == {
        "condition": "hypertension",
        "controlled": True,
        "basis": "home",
        "target": "mean home BP < 135/85 mmHg",
        "reason": None,
        "reason_zh": None,
        "target_zh": "家庭血压均值 < 135/85 mmHg",
    }
    crisis = _series([(130, 80), (182, 100)])
    data = client.post(
        "/api/v1/cds/follow-up", json={"conditions": ["hypertension"], "home_bp": crisis}
    ).json()
    assert data["urgent_referral"] and data["urgent_reasons"][0]["code"] == "home-bp-crisis"
    glucose = [
        {"time": "2024-03-01T07:00:00+08:00", "glucose_mmol_l": 6.1},
        {"time": "2024-03-02T07:00:00+08:00", "glucose_mmol_l": 3.5},
    ]
    data = client.post(
        "/api/v1/cds/follow-up", json={"conditions": ["type2_diabetes"], "home_glucose": glucose}
    ).json()
    assert data["urgent_referral"] and data["home_glucose_summary"]["minimum"] == {
        "glucose_mmol_l": 3.5
    }


def test_urgent_rule_overrides_the_model_score(client: TestClient) -> None:
    summary = {
        "age": 58,
        "conditions": ["type2_diabetes"],
        "sbp_mmhg": 186,
        "dbp_mmhg": 100,
        "bmi": 24.0,
        "fasting_glucose_mmol_l": 5.2,
        "total_cholesterol_mmol_l": 4.4,
        "hdl_cholesterol_mmol_l": 1.6,
        "ldl_cholesterol_mmol_l": 2.4,
        "triglycerides_mmol_l": 1.0,
    }
    data = client.post("/api/v1/cds/assess", json=summary, headers={"Accept-Language": "en"}).json()
    assert data["referral"]["level"] == "urgent"
    assert data["learned_model"]["overridden_by_urgent_rule"] is True
    assert data["guidance"][0].startswith("Urgent referral")
    calm = {**summary, "sbp_mmhg": 128, "dbp_mmhg": 78}
    data = client.post("/api/v1/cds/assess", json=calm).json()
    assert data["referral"]["level"] == "none"
    assert data["learned_model"]["overridden_by_urgent_rule"] is False
    assert data["language"] == "zh"


def test_assess_says_what_cannot_be_computed(client: TestClient) -> None:
    data = client.post(
        "/api/v1/cds/assess",
        json={"age": 80, "sex": "male"},
        headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"},
    ).json()
    missing = {item["score"]: item for item in data["not_computed"]}
    assert set(missing) == {"china_par", "news2", "qsofa", "follow_up", "learned_model"}
    assert "sbp_mmhg" in missing["news2"]["missing"]
    assert data["referral"]["level"] == "none" and data["language"] == "en"
