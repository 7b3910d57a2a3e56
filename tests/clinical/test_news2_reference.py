"""NEWS2 and qSOFA against their publications: every band edge, the responses, the actions.

Each row names its source. RCP = Royal College of Physicians, National Early Warning Score
(NEWS) 2, 2017: chart 1 (scoring system), chart 2 / "clinical response" table (thresholds,
triggers, monitoring frequency). Seymour 2016 = JAMA 315(8):762-774 (qSOFA criteria); Singer 2016
= JAMA 315(8):801-810 (Sepsis-3: qSOFA for patients with suspected infection).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medgate.clinical import news2 as nw
from medgate.clinical.assess import news2_action, qsofa_action

NORMAL = dict(
    respiratory_rate=16,
    spo2=97,
    spo2_scale=1,
    on_oxygen=False,
    sbp_mmhg=120,
    heart_rate=70,
    consciousness="A",
    temperature_c=37.0,
)

# (parameter, value, points, source)
CHART_1 = [
    ("respiratory_rate", 8, 3, "RCP chart 1: RR <= 8 -> 3"),
    ("respiratory_rate", 9, 1, "RCP chart 1: RR 9-11 -> 1"),
    ("respiratory_rate", 11, 1, "RCP chart 1: RR 9-11 -> 1"),
    ("respiratory_rate", 12, 0, "RCP chart 1: RR 12-20 -> 0"),
    ("respiratory_rate", 20, 0, "RCP chart 1: RR 12-20 -> 0"),
    ("respiratory_rate", 21, 2, "RCP chart 1: RR 21-24 -> 2"),
    ("respiratory_rate", 24, 2, "RCP chart 1: RR 21-24 -> 2"),
    ("respiratory_rate", 25, 3, "RCP chart 1: RR >= 25 -> 3"),
    ("spo2", 91, 3, "RCP chart 1: SpO2 scale 1 <= 91 -> 3"),
    ("spo2", 92, 2, "RCP chart 1: SpO2 scale 1 92-93 -> 2"),
    ("spo2", 93, 2, "RCP chart 1: SpO2 scale 1 92-93 -> 2"),
    ("spo2", 94, 1, "RCP chart 1: SpO2 scale 1 94-95 -> 1"),
    ("spo2", 95, 1, "RCP chart 1: SpO2 scale 1 94-95 -> 1"),
    ("spo2", 96, 0, "RCP chart 1: SpO2 scale 1 >= 96 -> 0"),
    ("sbp_mmhg", 90, 3, "RCP chart 1: SBP <= 90 -> 3"),
    ("sbp_mmhg", 91, 2, "RCP chart 1: SBP 91-100 -> 2"),
    ("sbp_mmhg", 100, 2, "RCP chart 1: SBP 91-100 -> 2"),
    ("sbp_mmhg", 101, 1, "RCP chart 1: SBP 101-110 -> 1"),
    ("sbp_mmhg", 110, 1, "RCP chart 1: SBP 101-110 -> 1"),
    ("sbp_mmhg", 111, 0, "RCP chart 1: SBP 111-219 -> 0"),
    ("sbp_mmhg", 219, 0, "RCP chart 1: SBP 111-219 -> 0"),
    ("sbp_mmhg", 220, 3, "RCP chart 1: SBP >= 220 -> 3"),
    ("heart_rate", 40, 3, "RCP chart 1: pulse <= 40 -> 3"),
    ("heart_rate", 41, 1, "RCP chart 1: pulse 41-50 -> 1"),
    ("heart_rate", 50, 1, "RCP chart 1: pulse 41-50 -> 1"),
    ("heart_rate", 51, 0, "RCP chart 1: pulse 51-90 -> 0"),
    ("heart_rate", 90, 0, "RCP chart 1: pulse 51-90 -> 0"),
    ("heart_rate", 91, 1, "RCP chart 1: pulse 91-110 -> 1"),
    ("heart_rate", 110, 1, "RCP chart 1: pulse 91-110 -> 1"),
    ("heart_rate", 111, 2, "RCP chart 1: pulse 111-130 -> 2"),
    ("heart_rate", 130, 2, "RCP chart 1: pulse 111-130 -> 2"),
    ("heart_rate", 131, 3, "RCP chart 1: pulse >= 131 -> 3"),
    ("temperature_c", 35.0, 3, "RCP chart 1: temperature <= 35.0 -> 3"),
    ("temperature_c", 35.1, 1, "RCP chart 1: temperature 35.1-36.0 -> 1"),
    ("temperature_c", 36.0, 1, "RCP chart 1: temperature 35.1-36.0 -> 1"),
    ("temperature_c", 36.1, 0, "RCP chart 1: temperature 36.1-38.0 -> 0"),
    ("temperature_c", 38.0, 0, "RCP chart 1: temperature 36.1-38.0 -> 0"),
    ("temperature_c", 38.1, 1, "RCP chart 1: temperature 38.1-39.0 -> 1"),
    ("temperature_c", 39.0, 1, "RCP chart 1: temperature 38.1-39.0 -> 1"),
    ("temperature_c", 39.1, 2, "RCP chart 1: temperature >= 39.1 -> 2"),
    # the chart has one decimal: a reading is charted (rounded half up) before it is banded
    ("temperature_c", 35.04, 3, "RCP chart 1, one decimal: 35.04 is charted 35.0 -> 3"),
    ("temperature_c", 35.05, 1, "RCP chart 1, one decimal: 35.05 is charted 35.1 -> 1"),
    ("temperature_c", 36.04, 1, "RCP chart 1, one decimal: 36.04 is charted 36.0 -> 1"),
    ("temperature_c", 38.04, 0, "RCP chart 1, one decimal: 38.04 is charted 38.0 -> 0"),
    ("temperature_c", 38.05, 1, "RCP chart 1, one decimal: 38.05 is charted 38.1 -> 1"),
    ("temperature_c", 39.05, 2, "RCP chart 1, one decimal: 39.05 is charted 39.1 -> 2"),
]


@pytest.mark.parametrize(("parameter", "value", "points", "source"), CHART_1)
def test_chart_1_bands(parameter: str, value: float, points: int, source: str) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, parameter: value}))
    assert result.parameters[parameter] == points, source


# (consciousness, points, source)
@pytest.mark.parametrize(
    ("level", "points", "source"),
    [
        ("A", 0, "RCP chart 1: Alert -> 0"),
        ("C", 3, "RCP chart 1: new Confusion -> 3"),
        ("V", 3, "RCP chart 1: Voice -> 3"),
        ("P", 3, "RCP chart 1: Pain -> 3"),
        ("U", 3, "RCP chart 1: Unresponsive -> 3"),
    ],
)
def test_chart_1_consciousness(level: str, points: int, source: str) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, "consciousness": level}))
    assert result.parameters["consciousness"] == points, source


# (changes, score, band, risk, monitoring, source)
RESPONSES = [
    ({}, 0, "score-0", "low", "every 12 hours", "RCP chart 2: score 0 -> minimum 12-hourly"),
    (
        {"heart_rate": 95},
        1,
        "score-1-4",
        "low",
        "every 4-6 hours",
        "RCP chart 2: total 1-4 -> minimum 4-6-hourly, ward-based response",
    ),
    (
        {"heart_rate": 111, "temperature_c": 38.5, "respiratory_rate": 9},
        4,
        "score-1-4",
        "low",
        "every 4-6 hours",
        "RCP chart 2: total 1-4 -> minimum 4-6-hourly",
    ),
    (
        {"respiratory_rate": 8},
        3,
        "single-3",
        "low-medium",
        "every hour",
        "RCP chart 2: a single parameter scoring 3 -> minimum 1-hourly, urgent ward-based",
    ),
    (
        {"respiratory_rate": 21, "heart_rate": 111, "temperature_c": 38.5},
        5,
        "score-5-6",
        "medium",
        "every hour",
        "RCP chart 2: total 5-6 -> minimum 1-hourly, key threshold for urgent response",
    ),
    (
        {"respiratory_rate": 21, "heart_rate": 111, "temperature_c": 39.1},
        6,
        "score-5-6",
        "medium",
        "every hour",
        "RCP chart 2: total 5-6",
    ),
    (
        {"respiratory_rate": 25, "heart_rate": 111, "temperature_c": 39.1},
        7,
        "score-7-plus",
        "high",
        "continuous monitoring",
        "RCP chart 2: total >= 7 -> continuous monitoring, emergency response",
    ),
    (
        {"respiratory_rate": 25, "heart_rate": 91},
        4,
        "single-3",
        "low-medium",
        "every hour",
        "RCP chart 2: total 1-4 with a single 3 -> the single-3 response",
    ),
]


@pytest.mark.parametrize(("changes", "score", "band", "risk", "monitoring", "source"), RESPONSES)
def test_rcp_responses_and_monitoring(
    changes: dict, score: int, band: str, risk: str, monitoring: str, source: str
) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, **changes}))
    assert (result.score, result.response_band, result.risk) == (score, band, risk), source
    assert monitoring in result.monitoring, source
    zh = nw.news2(nw.News2Input(**{**NORMAL, **changes}), "zh")
    assert zh.monitoring == nw.RESPONSES[band]["monitoring_zh"]  # type: ignore[index]


# (changes, deteriorating, level, source)
ACTIONS = [
    ({}, None, "none", "RCP: score 0 -> routine monitoring"),
    ({"heart_rate": 95}, None, "none", "RCP: 1-4 -> ward-based, no transfer"),
    (
        {"respiratory_rate": 8},
        None,
        "urgent",
        "RCP: single 3 -> urgent review (the old code left the referral at 'none')",
    ),
    ({"respiratory_rate": 8}, True, "emergency", "issue 22: single 3 with deterioration"),
    ({"respiratory_rate": 21, "heart_rate": 111, "temperature_c": 38.5}, None, "urgent", "RCP 5-6"),
    (
        {"respiratory_rate": 25, "heart_rate": 111, "temperature_c": 39.1},
        None,
        "emergency",
        "RCP >= 7: emergency response",
    ),
]


@pytest.mark.parametrize(("changes", "deteriorating", "level", "source"), ACTIONS)
def test_news2_action_levels(
    changes: dict, deteriorating: bool | None, level: str, source: str
) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, **changes}))
    assert news2_action(result, deteriorating, "en")[0] == level, source


# (rr, sbp, consciousness, score, source)
QSOFA = [
    (21, 101, "A", 0, "Seymour 2016: RR >= 22 (21 does not count), SBP <= 100 (101 does not)"),
    (22, 101, "A", 1, "Seymour 2016: RR >= 22 -> 1"),
    (21, 100, "A", 1, "Seymour 2016: SBP <= 100 -> 1"),
    (16, 120, "C", 1, "Seymour 2016: altered mentation (GCS < 15) -> 1"),
    (22, 100, "A", 2, "Seymour 2016: two criteria -> qSOFA 2"),
    (22, 100, "V", 3, "Seymour 2016: three criteria -> qSOFA 3"),
]


@pytest.mark.parametrize(("rr", "sbp", "avpu", "score", "source"), QSOFA)
def test_qsofa_criteria(rr: int, sbp: int, avpu: str, score: int, source: str) -> None:
    result = nw.qsofa(nw.QsofaInput(respiratory_rate=rr, sbp_mmhg=sbp, consciousness=avpu))
    assert (result.score, result.positive) == (score, score >= 2), source


# (suspected infection, level, source)
@pytest.mark.parametrize(
    ("infection", "level", "source"),
    [
        (True, "emergency", "Singer 2016: qSOFA >= 2 with suspected infection -> likely sepsis"),
        (None, "urgent", "Singer 2016: qSOFA is for suspected infection: ask, assess now"),
        (False, "none", "Singer 2016: without suspected infection qSOFA does not apply"),
    ],
)
def test_qsofa_asks_about_infection(infection: bool | None, level: str, source: str) -> None:
    result = nw.qsofa(
        nw.QsofaInput(
            respiratory_rate=24, sbp_mmhg=95, consciousness="A", suspected_infection=infection
        )
    )
    assert qsofa_action(result, "en")[0] == level, source
    assert result.interpretation


def test_news2_from_age_16_over_http(client: TestClient) -> None:
    """RCP 2017: NEWS2 is for ages 16 and over; a younger patient is refused with a reason."""
    ok = client.post("/api/v1/cds/news2", json={**NORMAL, "age": 16})
    assert ok.status_code == 200 and ok.json()["action_level"] == "none"
    young = client.post("/api/v1/cds/news2", json={**NORMAL, "age": 15})
    assert young.status_code == 422
    assert "16 or over" in young.text and "paediatric" in young.text


def test_news2_over_http_has_response_monitoring_and_disclaimer(client: TestClient) -> None:
    body = {**NORMAL, "respiratory_rate": 8, "deteriorating": True}
    data = client.post("/api/v1/cds/news2", json=body, headers={"Accept-Language": "zh"}).json()
    assert data["response_band"] == "single-3" and data["action_level"] == "emergency"
    assert data["monitoring"] == "至少每小时监测一次"
    assert data["disclaimer"] == "仅供辅助决策，由接诊医生判断。"
    assert data["temperature_charted_c"] == 37.0
