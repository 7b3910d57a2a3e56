"""Who each rule is for, against its publication: the age at which every score starts to apply.

Each row names its source. RCP 2017 = National Early Warning Score (NEWS) 2 report ("for use in
adults aged 16 years or older"; not validated in children). Seymour 2016 = JAMA 315(8):762-774
(qSOFA derived and validated in encounters of patients aged 18 and over); Singer 2016 = JAMA
315(8):801-810 (Sepsis-3, an adult definition). Spec 2017 = 国家基本公共卫生服务规范（第三版）,
hypertension and type 2 diabetes management of adult residents, whose 危急情况 list gives the
urgent readings. Guideline 2019 = 中国心血管病风险评估和管理指南 (adults; China-PAR). Below NEWS2's
age nothing is scored, since an adult band would call a child's normal breathing and heart rates
an emergency; a reading at an adult crisis value is still flagged (medgate's choice, listed for a
clinician to confirm in docs/clinical.md: it is a crisis in a child too, and a child's own
thresholds are lower, which the answer says).
"""

from __future__ import annotations

from typing import Any

import pytest

from medgate.clinical.assess import ADULT_MIN_AGE, ADULT_ONLY, NOT_ASSESSED, UNDER_16, assess
from medgate.clinical.news2 import NEWS2_MIN_AGE
from medgate.clinical.schemas import AssessRequest

#: Vitals that meet NEWS2 >= 7 and qSOFA 2 in an adult; a hypertension and diabetes patient with
#: lipids, so that every adult score has what it needs.
SUMMARY: dict[str, Any] = {
    "sex": "male",
    "region": "north",
    "residence": "urban",
    "conditions": ["hypertension", "type2_diabetes"],
    "current_smoker": False,
    "family_history_ascvd": False,
    "on_bp_treatment": True,
    "respiratory_rate": 26,
    "spo2": 90,
    "on_oxygen": False,
    "sbp_mmhg": 98,
    "dbp_mmhg": 60,
    "heart_rate": 125,
    "consciousness": "A",
    "temperature_c": 39.2,
    "suspected_infection": True,
    "waist_cm": 80,
    "total_cholesterol_mmol_l": 5.0,
    "hdl_cholesterol_mmol_l": 1.2,
    "fasting_glucose_mmol_l": 8.0,
}

# (age, NEWS2 scored, adult scores (qSOFA, China-PAR, follow-up) run, source)
AGES = [
    (10, False, False, "RCP 2017: NEWS2 not for children (under 16)"),
    (15, False, False, "RCP 2017: NEWS2 not for children (under 16)"),
    (16, True, False, "RCP 2017: NEWS2 from 16; Seymour 2016: qSOFA from 18"),
    (17, True, False, "RCP 2017: NEWS2 from 16; Seymour 2016: qSOFA from 18"),
    (
        18,
        True,
        True,
        "Seymour 2016: adult encounters aged >= 18; Spec 2017 / Guideline 2019: adults",
    ),
    (45, True, True, "RCP 2017; Seymour 2016; Spec 2017; Guideline 2019"),
]


def test_the_table_walks_the_codes_edges() -> None:
    assert tuple(row[0] for row in AGES[1:5]) == (
        NEWS2_MIN_AGE - 1,
        NEWS2_MIN_AGE,
        ADULT_MIN_AGE - 1,
        ADULT_MIN_AGE,
    )


@pytest.mark.parametrize(("age", "news2", "adult", "source"), AGES)
def test_scores_by_age(age: int, news2: bool, adult: bool, source: str) -> None:
    result = assess(AssessRequest(**SUMMARY, age=age), None, "en")
    skipped = {n.score: n.reason for n in result.not_computed}
    assert (result.news2 is not None) is news2, source
    if news2:
        assert result.news2 is not None and result.news2.score >= 7, source
        assert result.referral.level == "emergency", source  # NEWS2 >= 7
    else:
        assert skipped["news2"] == UNDER_16, source
        assert result.referral.level == "none", source  # no adult band met a child's vitals
        assert result.guidance[0] == NOT_ASSESSED["detail"]["en"], source
    assert (result.qsofa is not None) is adult, source
    assert (result.follow_up is not None) is adult, source
    for score in ("qsofa", "china_par", "follow_up", "learned_model"):
        expected = ADULT_ONLY if news2 else UNDER_16
        assert (skipped.get(score) == expected) is not adult, (score, source)


# (age, summary, level, source)
READINGS = [
    (
        10,
        {"sbp_mmhg": 186, "dbp_mmhg": 112},
        "urgent",
        "Spec 2017 危急情况: BP >= 180 and/or >= 110",
    ),
    (10, {"random_glucose_mmol_l": 17.0}, "urgent", "Spec 2017 危急情况: glucose >= 16.7"),
    (
        10,
        {"random_glucose_mmol_l": 2.8},
        "emergency",
        "CDS 2020 (中国2型糖尿病防治指南): level-2 hypoglycaemia < 3.0",
    ),
    (
        17,
        {"sbp_mmhg": 186, "dbp_mmhg": 112},
        "urgent",
        "Spec 2017 危急情况: BP >= 180 and/or >= 110",
    ),
    (16, {"random_glucose_mmol_l": 17.0}, "urgent", "Spec 2017 危急情况: glucose >= 16.7"),
    (10, {"sbp_mmhg": 150, "dbp_mmhg": 95}, "none", "below the adult crisis values: not flagged"),
]


@pytest.mark.parametrize(("age", "readings", "level", "source"), READINGS)
def test_urgent_readings_are_checked_at_every_age(
    age: int, readings: dict[str, Any], level: str, source: str
) -> None:
    result = assess(AssessRequest(age=age, **readings), None, "en")
    assert result.referral.level == level, source
    if age < NEWS2_MIN_AGE:  # the answer says a child's thresholds are lower
        assert NOT_ASSESSED["detail"]["en"] in result.guidance, source


# (age, recorded, level, source): a child's own limits, checked where no score runs (under 16)
CHILD_SIGNS: list[tuple[int, dict[str, Any], str, str]] = [
    (12, {"sbp_mmhg": 89, "dbp_mmhg": 50}, "emergency", "PALS 2020: < 90 mmHg from 10 years"),
    (12, {"sbp_mmhg": 90, "dbp_mmhg": 50}, "none", "PALS 2020: 90 is not hypotension at 12"),
    (5, {"sbp_mmhg": 79, "dbp_mmhg": 45}, "emergency", "PALS 2020: < 70 + 2 x 5 = 80"),
    (5, {"sbp_mmhg": 80, "dbp_mmhg": 45}, "none", "PALS 2020: 80 is the limit, not below it"),
    (0, {"sbp_mmhg": 69, "dbp_mmhg": 40}, "emergency", "PALS 2020: < 70 in infants"),
    (8, {"spo2": 89}, "emergency", "WHO 2013: SpO2 < 90 %, give oxygen"),
    (8, {"spo2": 90}, "none", "WHO 2013: 90 % is not below 90"),
    (10, {"consciousness": "U"}, "emergency", "WHO 2013 emergency signs: coma"),
    (
        10,
        {"consciousness": "P"},
        "emergency",
        "WHO 2013 emergency signs: coma (responds to pain only)",
    ),
    (10, {"consciousness": "V"}, "urgent", "Spec 2017 危急情况: 意识改变"),
    (
        10,
        {"respiratory_rate": 30, "heart_rate": 125},
        "none",
        "a child's ordinary rates: not judged",
    ),
]


@pytest.mark.parametrize(("age", "recorded", "level", "source"), CHILD_SIGNS)
def test_a_childs_own_danger_signs(
    age: int, recorded: dict[str, Any], level: str, source: str
) -> None:
    result = assess(AssessRequest(age=age, **recorded), None, "en")
    assert result.news2 is None and result.news2_at_least is None, source  # no adult score
    assert result.referral.level == level, source
