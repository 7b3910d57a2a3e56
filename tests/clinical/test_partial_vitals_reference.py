"""Vital signs that settle a trigger before every input is recorded, and the rules around them.

RCP 2017 = National Early Warning Score (NEWS) 2, chart 1 (every parameter scores 0 or more, so
the recorded parameters' points are a floor of the aggregate) and the trigger table (>= 7
emergency response, 5-6 urgent response, a single parameter scoring 3 urgent ward-based
response). Seymour 2016 = JAMA 315(8):762-774 (qSOFA: RR >= 22, SBP <= 100, altered mentation;
two criteria met make it >= 2 whatever the third). Spec 2017 = 国家基本公共卫生服务规范（第三版）
(危急情况 symptom lists; the diabetes list's heart rate > 100 and temperature > 39; pregnancy or
lactation with BP or glucose above normal; every referral followed up within 2 weeks).
FHIR prefetches carry no consciousness or oxygen, so without a floor NEWS2 and qSOFA never act
on CDS Hooks at all.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from medgate.clinical import news2 as nw
from medgate.clinical.assess import assess
from medgate.clinical.schemas import AssessRequest

# (recorded vitals, floor, level, source)
FLOORS: list[tuple[dict[str, Any], int, str, str]] = [
    (
        {
            "sbp_mmhg": 85,
            "dbp_mmhg": 50,
            "heart_rate": 140,
            "respiratory_rate": 32,
            "spo2": 84,
            "temperature_c": 39.8,
        },
        14,
        "emergency",
        "RCP 2017 chart 1: RR 32 -> 3, SpO2 84 -> 3, SBP 85 -> 3, HR 140 -> 3, T 39.8 -> 2; >= 7",
    ),
    (
        {"respiratory_rate": 22, "heart_rate": 115, "temperature_c": 38.5},
        5,
        "urgent",
        "RCP 2017: RR 22 -> 2, HR 115 -> 2, T 38.5 -> 1; 5-6 urgent response",
    ),
    (
        {"consciousness": "V", "sbp_mmhg": 130, "dbp_mmhg": 80},
        3,
        "urgent",
        "RCP 2017: new confusion / V -> 3, a single parameter scoring 3",
    ),
    (
        {"sbp_mmhg": 45, "dbp_mmhg": 30},
        3,
        "urgent",
        "RCP 2017: SBP <= 90 -> 3, a single parameter scoring 3",
    ),
    (
        {"respiratory_rate": 22, "heart_rate": 115},
        4,
        "none",
        "RCP 2017: 4 from two parameters, no 3: below every trigger until the rest is recorded",
    ),
    (
        {"spo2": 95, "spo2_scale": 2},
        0,
        "none",
        "RCP 2017 scale 2: SpO2 95 is 0 on air, 2 on oxygen; oxygen unknown -> the lower",
    ),
]


@pytest.mark.parametrize(("vitals", "floor", "level", "source"), FLOORS)
def test_news2_floor_acts_on_the_triggers_it_crosses(
    vitals: dict[str, Any], floor: int, level: str, source: str
) -> None:
    result = assess(AssessRequest(age=60, **vitals), None, "en")
    assert result.news2 is None, source  # not every parameter was recorded
    assert result.news2_at_least is not None, source
    assert result.news2_at_least.score_at_least == floor, source
    assert result.referral.level == level, source
    if level != "none":
        assert any("NEWS2" in r for r in result.referral.reasons), source
    incomplete = any(g.startswith("NEWS2 incomplete") for g in result.guidance)
    assert incomplete is (floor > 0), source  # "at least 0" would say nothing


COMPLETE = st.fixed_dictionaries(
    {
        "respiratory_rate": st.integers(0, 60),
        "spo2": st.integers(50, 100),
        "spo2_scale": st.sampled_from([1, 2]),
        "on_oxygen": st.booleans(),
        "sbp_mmhg": st.integers(40, 300),
        "heart_rate": st.integers(20, 250),
        "consciousness": st.sampled_from(["A", "C", "V", "P", "U"]),
        "temperature_c": st.floats(30, 43, allow_nan=False),
    }
)


@settings(max_examples=200, deadline=None)
@given(COMPLETE, st.sets(st.sampled_from(sorted(nw.News2Input.model_fields)), max_size=7))
def test_the_floor_never_exceeds_the_full_score(values: dict[str, Any], drop: set[str]) -> None:
    full = nw.news2(nw.News2Input(**values))
    kept = {k: v for k, v in values.items() if k not in drop or k == "spo2_scale"}
    floor = nw.news2_lower_bound(kept)
    assert floor.score_at_least <= full.score
    if not drop - {"spo2_scale"}:
        assert floor.score_at_least == full.score


# (recorded, suspected infection, level, qSOFA reason, source)
QSOFA_FLOORS = [
    (
        {"respiratory_rate": 24, "sbp_mmhg": 95},
        True,
        "emergency",
        "qSOFA at least 2 from the recorded criteria with suspected infection",
        "Seymour 2016: RR >= 22 and SBP <= 100 met; Singer 2016: with infection",
    ),
    (
        {"respiratory_rate": 24, "sbp_mmhg": 95},
        None,
        "urgent",
        "qSOFA at least 2 from the recorded criteria (ask whether infection is suspected)",
        "Seymour 2016: two criteria met, infection not asked",
    ),
    (
        {"respiratory_rate": 24, "sbp_mmhg": 95},
        False,
        "none",
        None,
        "Singer 2016: qSOFA applies only with suspected infection (NEWS2 floor 2 + 2 = 4)",
    ),
    (
        {"respiratory_rate": 24, "sbp_mmhg": 120},
        True,
        "none",
        None,
        "Seymour 2016: one criterion met, mentation unknown: not yet >= 2",
    ),
]


@pytest.mark.parametrize(("vitals", "infection", "level", "reason", "source"), QSOFA_FLOORS)
def test_qsofa_from_two_recorded_criteria(
    vitals: dict[str, Any], infection: bool | None, level: str, reason: str | None, source: str
) -> None:
    result = assess(AssessRequest(age=60, suspected_infection=infection, **vitals), None, "en")
    assert result.qsofa is None, source
    assert result.referral.level == level, source
    found = [r for r in result.referral.reasons if r.startswith("qSOFA")]
    assert found == ([reason] if reason else []), source


@pytest.mark.parametrize(
    ("symptom", "source"),
    [
        ("chest_pain", "medgate's addition to the Spec 2017 hypertension list (docs §7)"),
        ("chest_tightness", "Spec 2017 hypertension list: 胸闷"),
        ("fruity_breath", "Spec 2017 diabetes list: 呼气有烂苹果样丙酮味"),
    ],
)
def test_danger_symptoms_are_urgent_without_a_diagnosis(symptom: str, source: str) -> None:
    result = assess(AssessRequest(age=50, symptoms=[symptom]), None, "en")
    assert result.referral.level == "urgent", source


def test_type1_diabetes_keeps_the_diabetes_signs_and_targets() -> None:
    """Spec 2017 diabetes list (ketoacidosis signs) and the diabetes BP / LDL-C targets (HTN 2020,
    DM 2022, Lipid 2016) are for diabetes of either type; only the type 2 glucose rules are not."""
    dka = assess(
        AssessRequest(
            age=30,
            diabetes=True,
            diabetes_type="type1",
            symptoms=["fruity_breath", "deep_rapid_breathing"],
            heart_rate=120,
            temperature_c=39.5,
        ),
        None,
        "en",
    )
    assert dka.referral.level == "urgent"
    assert "heart rate 120/min (> 100, diabetes)" in dka.referral.reasons
    with_htn = assess(
        AssessRequest(
            age=30,
            diabetes=True,
            diabetes_type="type1",
            conditions=["hypertension"],
            sbp_mmhg=135,
            dbp_mmhg=85,
            ldl_cholesterol_mmol_l=3.0,
        ),
        None,
        "en",
    )
    fup = with_htn.follow_up
    assert fup is not None
    targets = {t.measure: t for t in fup.targets}
    assert "< 130/80" in fup.status[0].target and fup.status[0].controlled is False
    assert "< 2.6" in targets["ldl_cholesterol_mmol_l"].target
    assert [s.condition for s in fup.status] == ["hypertension"]  # no type 2 glucose judgement


def test_a_referral_from_any_rule_sets_the_follow_up_interval() -> None:
    """Spec 2017: a referral is followed up within 2 weeks; never "90 days" beside "call 120"."""
    result = assess(
        AssessRequest(
            age=50,
            conditions=["hypertension"],
            sbp_mmhg=130,
            dbp_mmhg=80,
            respiratory_rate=26,
            heart_rate=135,
            spo2=90,
            temperature_c=39.5,
        ),
        None,
        "en",
    )
    assert result.referral.level == "emergency"
    assert result.follow_up is not None
    assert result.follow_up.next_follow_up_days == 14
    assert result.follow_up.advice.code == "emergency"
    assert result.follow_up.status[0].controlled is True  # the measurement stays as measured
    assert not [g for g in result.guidance if "90 days" in g]


T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("home", "source"),
    [
        (
            {
                "home_bp": [
                    {"time": T0 + dt.timedelta(hours=h), "sbp_mmhg": 160, "dbp_mmhg": 100}
                    for h in range(3)
                ]
            },
            "Spec 2017: pregnancy with BP above normal (>= 140/90), here measured at home",
        ),
        (
            {"home_glucose": [{"time": T0, "glucose_mmol_l": 9.0, "fasting": True}]},
            "Spec 2017: pregnancy with glucose above normal, here measured at home",
        ),
    ],
)
def test_pregnancy_with_raised_home_readings_is_urgent(home: dict[str, Any], source: str) -> None:
    conditions = ["hypertension"] if "home_bp" in home else ["type2_diabetes"]
    result = assess(
        AssessRequest(age=30, conditions=conditions, pregnant_or_lactating=True, **home),
        None,
        "en",
    )
    assert result.referral.level == "urgent", source
    assert any(r.startswith("pregnant or lactating with") for r in result.referral.reasons)


@pytest.mark.parametrize(
    "summary",
    [
        {"diabetes": False, "conditions": ["type2_diabetes"]},
        {"diabetes": False, "diabetes_type": "type1"},
    ],
)
def test_contradictory_diabetes_answers_are_refused(summary: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="diabetes is false"):
        AssessRequest(age=50, **summary)


def test_each_recorded_subset_is_a_valid_request() -> None:
    """No combination of recorded vitals makes /assess fail (the floor takes any subset)."""
    vitals = {
        "respiratory_rate": 30,
        "spo2": 88,
        "on_oxygen": True,
        "sbp_mmhg": 88,
        "heart_rate": 131,
        "consciousness": "C",
        "temperature_c": 34.9,
    }
    for size in range(len(vitals) + 1):
        for keys in itertools.combinations(vitals, size):
            assess(AssessRequest(age=70, **{k: vitals[k] for k in keys}), None, "zh")


@pytest.mark.parametrize(
    ("summary", "source"),
    [
        ({"sbp_mmhg": 165, "dbp_mmhg": 108}, "Spec 2017: pregnancy with BP above normal"),
        ({"fasting_glucose_mmol_l": 8.0}, "Spec 2017: pregnancy with glucose above normal"),
        (
            {"diabetes_type": "type1", "fasting_glucose_mmol_l": 9.0},
            "Spec 2017: pregnancy with glucose above normal, type 1 diabetes",
        ),
    ],
)
def test_pregnancy_with_raised_readings_is_urgent_without_a_managed_condition(
    summary: dict[str, Any], source: str
) -> None:
    result = assess(AssessRequest(age=30, pregnant_or_lactating=True, **summary), None, "en")
    assert result.referral.level == "urgent", source
    assert any(r.startswith("pregnant or lactating with") for r in result.referral.reasons)


@pytest.mark.parametrize(
    ("symptom", "conditions", "level"),
    [
        ("loss_of_appetite", [], "none"),  # a danger sign in a diabetic, not in anyone
        ("loss_of_appetite", ["type2_diabetes"], "urgent"),  # Spec 2017 diabetes list
        ("severe_headache", [], "none"),
        ("severe_headache", ["hypertension"], "urgent"),  # Spec 2017 hypertension list
        ("dyspnoea", [], "urgent"),  # universal: breathlessness lying flat
    ],
)
def test_which_symptoms_are_urgent_without_a_diagnosis(
    symptom: str, conditions: list[str], level: str
) -> None:
    summary: dict[str, Any] = {"age": 50, "symptoms": [symptom], "conditions": conditions}
    assert assess(AssessRequest(**summary), None, "en").referral.level == level


def test_the_follow_up_flags_say_what_its_advice_says() -> None:
    """A referral from another rule: the follow-up's flags agree with its 'call 120' advice."""
    result = assess(
        AssessRequest(
            age=60,
            conditions=["hypertension"],
            sbp_mmhg=85,
            dbp_mmhg=50,
            respiratory_rate=30,
            heart_rate=140,
        ),
        None,
        "en",
    )
    fup = result.follow_up
    assert result.referral.level == "emergency" and fup is not None
    assert (fup.advice.code, fup.emergency, fup.urgent_referral) == ("emergency", True, True)


@pytest.mark.parametrize("field", ["home_bp", "home_glucose"])
def test_a_home_reading_without_a_utc_offset_is_refused(field: str) -> None:
    """Naive and offset times cannot be ordered: a 500 before, a clear 422 now."""
    reading: dict[str, Any] = (
        {"sbp_mmhg": 185, "dbp_mmhg": 100}
        if field == "home_bp"
        else {"glucose_mmol_l": 6.0, "fasting": True}
    )
    series = [
        {**reading, "time": "2024-05-01T08:00:00"},
        {**reading, "time": "2024-05-02T08:00:00+08:00"},
    ]
    with pytest.raises(ValidationError, match="time needs a UTC offset"):
        AssessRequest(age=50, conditions=["hypertension"], **{field: series})


T_HOME = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("summary", "level", "source"),
    [
        (
            {"age": 30, "diabetes_type": "type1",
             "home_glucose": [{"time": T_HOME, "glucose_mmol_l": 2.2}]},
            "emergency",
            "CDS 2020: level-2 hypoglycaemia < 3.0, at home, type 1 diabetes",
        ),
        (
            {"age": 50, "home_bp": [{"time": T_HOME + dt.timedelta(hours=h), "sbp_mmhg": 210,
                                     "dbp_mmhg": 125} for h in range(3)]},
            "urgent",
            "Spec 2017: BP >= 180/110, the latest home reading, no diagnosis",
        ),
        (
            {"age": 10, "diabetes_type": "type1",
             "home_glucose": [{"time": T_HOME, "glucose_mmol_l": 2.0}]},
            "emergency",
            "CDS 2020: level-2 hypoglycaemia at home, a child",
        ),
    ],
)  # fmt: skip
def test_a_home_crisis_is_judged_for_everyone(
    summary: dict[str, Any], level: str, source: str
) -> None:
    assert assess(AssessRequest(**summary), None, "en").referral.level == level, source


@pytest.mark.parametrize(
    ("summary", "level", "source"),
    [
        ({"age": 6, "spo2": 46, "sbp_mmhg": 36, "dbp_mmhg": 20}, "emergency", "WHO 2013; PALS"),
        ({"age": 50, "spo2": 48, "heart_rate": 128}, "urgent", "RCP 2017: SpO2 <= 91 -> 3"),
        ({"age": 50, "sbp_mmhg": 38, "dbp_mmhg": 20}, "urgent", "RCP 2017: SBP <= 90 -> 3"),
    ],
)
def test_extreme_vital_signs_are_assessed_not_refused(
    summary: dict[str, Any], level: str, source: str
) -> None:
    """SBP below 40 and SpO2 below 50 were refused as out of range: shock was silent."""
    assert assess(AssessRequest(**summary), None, "en").referral.level == level, source


@pytest.mark.parametrize(
    ("summary", "reason", "source"),
    [
        (
            {"age": 55, "conditions": ["hypertension"], "ldl_cholesterol_mmol_l": 5.2,
             "total_cholesterol_mmol_l": 7.6, "sbp_mmhg": 130, "dbp_mmhg": 80},
            "LDL-C >= 4.9 mmol/L",
            "Guideline 2019: LDL-C >= 4.9 -> high risk without calculation",
        ),
        (
            {"age": 50, "diabetes": True, "sbp_mmhg": 130, "dbp_mmhg": 80},
            "diabetes at age >= 40",
            "Guideline 2019: diabetes at age >= 40 -> high risk without calculation",
        ),
    ],
)  # fmt: skip
def test_a_direct_high_risk_criterion_needs_only_its_own_inputs(
    summary: dict[str, Any], reason: str, source: str
) -> None:
    result = assess(AssessRequest(**summary), None, "en")
    par = result.china_par
    assert par is not None and par.route == "direct-high-risk", source
    assert reason in par.direct_high_risk_reasons, source
    assert "china_par" not in {n.score for n in result.not_computed}, source
    if result.follow_up is not None:  # the high-risk LDL-C target follows
        ldl = next(t for t in result.follow_up.targets if t.measure == "ldl_cholesterol_mmol_l")
        assert "< 2.6" in ldl.target, source


@pytest.mark.parametrize("symptom", ["severe_headache", "blurred_vision"])
def test_pre_eclampsia_symptoms_are_urgent_in_pregnancy(symptom: str) -> None:
    """NICE NG133 (2019): symptoms of pre-eclampsia, whatever the BP (here 138/88)."""
    pregnant = AssessRequest(
        age=30, pregnant_or_lactating=True, sbp_mmhg=138, dbp_mmhg=88, symptoms=[symptom]
    )
    assert assess(pregnant, None, "en").referral.level == "urgent"
    not_pregnant = AssessRequest(age=30, sbp_mmhg=138, dbp_mmhg=88, symptoms=[symptom])
    assert assess(not_pregnant, None, "en").referral.level == "none"


def test_no_cardiovascular_risk_flow_in_pregnancy() -> None:
    """A BP of 165/112 in pregnancy is pre-eclampsia's, not 'grade 3 hypertension, treat lipids'."""
    result = assess(
        AssessRequest(
            age=30,
            pregnant_or_lactating=True,
            sbp_mmhg=165,
            dbp_mmhg=112,
            symptoms=["severe_headache"],
        ),
        None,
        "en",
    )
    assert result.referral.level == "emergency"
    assert result.china_par is None
    assert not [g for g in result.guidance if "ASCVD" in g or "lipids" in g]


@pytest.mark.parametrize(("conditions", "direct"), [([], False), (["hypertension"], True)])
def test_grade_3_from_partial_inputs_needs_known_hypertension(
    conditions: list[str], direct: bool
) -> None:
    """One crisis reading is not grade 3 hypertension (Guideline 2019 speaks of the diagnosis)."""
    summary = AssessRequest(age=50, sbp_mmhg=185, dbp_mmhg=100, conditions=conditions)
    par = assess(summary, None, "en").china_par
    assert (par is not None and par.route == "direct-high-risk") is direct


def test_an_earlier_home_hypoglycaemia_is_not_hidden_by_a_later_normal_value() -> None:
    """DM 2022: hypoglycaemia means reviewing the treatment; a 2.6 at 03:00 then 7.2 at 07:00 was
    'controlled, next visit in 90 days'."""
    result = assess(
        AssessRequest(
            age=66,
            conditions=["type2_diabetes"],
            fasting_glucose_mmol_l=6.5,
            hba1c_percent=6.8,
            home_glucose=[
                {"time": T_HOME.replace(hour=3), "glucose_mmol_l": 2.6, "fasting": False},
                {"time": T_HOME.replace(hour=7), "glucose_mmol_l": 7.2, "fasting": True},
            ],
        ),
        None,
        "zh",
    )
    assert result.follow_up is not None
    status = result.follow_up.status[0]
    assert status.controlled is False and status.reason_zh is not None
    assert status.reason_zh.startswith("低血糖：血糖 2.6 mmol/L")
    assert result.follow_up.next_follow_up_days == 14


def test_an_earlier_clinic_or_lab_hypoglycaemia_is_not_hidden_by_todays_normal_value() -> None:
    """DM 2022, as for the home series: a laboratory 3.1 two days ago, 6.4 today."""
    result = assess(
        AssessRequest(
            age=70,
            conditions=["type2_diabetes"],
            fasting_glucose_mmol_l=6.4,
            earlier_glucose=[{"time": T_HOME, "glucose_mmol_l": 3.1, "fasting": True}],
        ),
        None,
        "en",
    )
    assert result.follow_up is not None
    status = result.follow_up.status[0]
    assert status.controlled is False
    assert (status.reason or "").startswith("hypoglycaemia: glucose 3.1 mmol/L")
    assert result.referral.level != "emergency"  # a low that has passed is not today's danger


def test_a_hypoglycaemic_value_never_meets_the_glucose_target() -> None:
    result = assess(
        AssessRequest(age=66, conditions=["type2_diabetes"], fasting_glucose_mmol_l=3.3),
        None,
        "en",
    )
    assert result.follow_up is not None
    fasting = next(t for t in result.follow_up.targets if t.measure == "fasting_glucose_mmol_l")
    assert fasting.met is False and result.follow_up.status[0].controlled is False


@pytest.mark.parametrize("symptom", ["one_sided_weakness", "slurred_speech", "facial_droop"])
@pytest.mark.parametrize(("age", "conditions"), [(69, ["hypertension"]), (40, []), (12, [])])
def test_a_stroke_sign_is_an_emergency_for_anyone(
    symptom: str, age: int, conditions: list[str]
) -> None:
    """Stroke 1-2-0 (Zhao J, Liu R. Lancet Neurol 2017;16:27-28): face, arm, speech, call 120."""
    summary = AssessRequest(age=age, conditions=conditions, symptoms=[symptom])
    result = assess(summary, None, "zh")
    assert result.referral.level == "emergency"
    assert result.guidance[0].startswith("急救：立即拨打120")
    if result.follow_up is not None:
        assert result.follow_up.emergency and result.follow_up.next_follow_up_days == 14


def test_the_low_systolic_limit_is_the_news2_chart_edge() -> None:
    """RCP 2017 chart 1: SBP <= 90 scores 3; the follow-up and the BP-reading choice use it too."""
    from medgate.clinical import urgent as ur

    assert nw.BANDS["sbp_mmhg"][0] == (ur.LOW_SBP, 3)
