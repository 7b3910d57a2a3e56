"""Remaining-lifetime risk (余生危险) against the lipid guidelines' five-factor rule.

Lipid 2016 = 中国成人血脂异常防治指南（2016年修订版）, 中国循环杂志 2016;31(10):937-953, 图1
ASCVD危险评估流程图 (余生危险), kept in 中国血脂管理指南（2023年） (Lipid 2023): 10-year risk
intermediate (5-9.9 %) and age < 55 -> high with any 2 or more of: SBP >= 160 or DBP >= 100
mmHg; non-HDL-C >= 5.2 mmol/L; HDL-C < 1.0 mmol/L; BMI >= 28 kg/m2; smoking.
Guideline 2019 = 中国心血管病风险评估和管理指南 (ages 20-59 with 10-year risk < 10 % need a
lifetime assessment; the China-PAR lifetime model itself is not computed).
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_data import profile

from medgate.api.routes_cds import cards_for
from medgate.clinical import china_par as cp
from medgate.clinical import lifetime_risk as lr
from medgate.clinical.assess import assess
from medgate.clinical.schemas import AssessRequest

FIG1 = "中国成人血脂异常防治指南 2016, 图1 余生危险 / 中国血脂管理指南 2023"

# 50 y, 10-year 7.0 %, none of the five factors
BASE = dict(
    age=50,
    sbp_mmhg=130,
    dbp_mmhg=80,
    non_hdl_mmol_l=4.0,
    hdl_mmol_l=1.3,
    bmi=24.0,
    current_smoker=False,
)

# (changes, 10-year risk %, status or None, factors present, missing inputs, source)
RULE: list[tuple[dict, float | None, str | None, list[str], list[str], str]] = [
    ({}, 7.0, "not-high", [], [], f"{FIG1}: no factor"),
    ({"current_smoker": True}, 7.0, "not-high", ["smoking"], [], f"{FIG1}: 1 factor (吸烟)"),
    (
        {"current_smoker": True, "bmi": 28.0},
        7.0,
        "high",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: 2 factors -> 高危",
    ),
    ({"current_smoker": True, "sbp_mmhg": 159}, 7.0, "not-high", ["smoking"], [], f"{FIG1}: 159"),
    (
        {"current_smoker": True, "sbp_mmhg": 160},
        7.0,
        "high",
        ["blood-pressure", "smoking"],
        [],
        f"{FIG1}: 收缩压≥160 mmHg",
    ),
    (
        {"current_smoker": True, "sbp_mmhg": 150, "dbp_mmhg": 99},
        7.0,
        "not-high",
        ["smoking"],
        [],
        f"{FIG1}: 舒张压 99",
    ),
    (
        {"current_smoker": True, "sbp_mmhg": 150, "dbp_mmhg": 100},
        7.0,
        "high",
        ["blood-pressure", "smoking"],
        [],
        f"{FIG1}: 舒张压≥100 mmHg",
    ),
    (
        {"current_smoker": True, "non_hdl_mmol_l": 5.19},
        7.0,
        "not-high",
        ["smoking"],
        [],
        f"{FIG1}: 非HDL-C 5.19",
    ),
    (
        {"current_smoker": True, "non_hdl_mmol_l": 5.2},
        7.0,
        "high",
        ["non-hdl-c", "smoking"],
        [],
        f"{FIG1}: 非HDL-C≥5.2 mmol/L",
    ),
    (
        {"current_smoker": True, "hdl_mmol_l": 1.0},
        7.0,
        "not-high",
        ["smoking"],
        [],
        f"{FIG1}: HDL-C 1.0",
    ),
    (
        {"current_smoker": True, "hdl_mmol_l": 0.99},
        7.0,
        "high",
        ["low-hdl-c", "smoking"],
        [],
        f"{FIG1}: HDL-C<1.0 mmol/L",
    ),
    ({"current_smoker": True, "bmi": 27.9}, 7.0, "not-high", ["smoking"], [], f"{FIG1}: BMI 27.9"),
    (
        {"sbp_mmhg": 160, "bmi": 28.0},
        7.0,
        "high",
        ["blood-pressure", "obesity"],
        [],
        f"{FIG1}: 2 factors without smoking",
    ),
    # where the rule applies: 10-year intermediate (5.0-9.9 %) and age < 55
    (
        {"current_smoker": True, "bmi": 30.0, "age": 54},
        7.0,
        "high",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: age 54 < 55",
    ),
    (
        {"current_smoker": True, "bmi": 30.0, "age": 55},
        7.0,
        "not-computed",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: age 55 is not < 55 -> China-PAR lifetime model (not computed)",
    ),
    (
        {"current_smoker": True, "bmi": 30.0},
        4.9,
        "not-computed",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: 10-year 4.9 % is low, not intermediate",
    ),
    (
        {"current_smoker": True, "bmi": 30.0},
        5.0,
        "high",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: 10-year 5.0 % is intermediate",
    ),
    (
        {"current_smoker": True, "bmi": 30.0},
        9.9,
        "high",
        ["obesity", "smoking"],
        [],
        f"{FIG1}: 10-year 9.9 % is intermediate",
    ),
    (
        {"current_smoker": True, "bmi": 30.0},
        10.0,
        None,
        [],
        [],
        "Guideline 2019: 10-year >= 10 % is high already, no lifetime step",
    ),
    (
        {"age": 30, "current_smoker": True},
        None,
        "not-computed",
        ["smoking"],
        [],
        "Guideline 2019: 20-34, no 10-year equation -> lifetime model (not computed)",
    ),
    ({"age": 20}, None, "not-computed", [], [], "Guideline 2019: 20 is inside 20-59"),
    ({"age": 19}, None, None, [], [], "Guideline 2019: 19 is outside 20-59"),
    ({"age": 59}, 9.9, "not-computed", [], [], "Guideline 2019: 59 is inside 20-59"),
    ({"age": 60}, 9.9, None, [], [], "Guideline 2019: 60 is outside 20-59"),
    # missing inputs: the count is a lower bound, never "not high" when it could be high
    (
        {"current_smoker": True, "bmi": None},
        7.0,
        "undetermined",
        ["smoking"],
        ["bmi"],
        f"{FIG1}: 1 factor + BMI unknown could be 2",
    ),
    (
        {"bmi": None, "dbp_mmhg": None},
        7.0,
        "undetermined",
        [],
        ["dbp_mmhg", "bmi"],
        f"{FIG1}: 0 factors + 2 unknown could be 2",
    ),
    ({"bmi": None}, 7.0, "not-high", [], ["bmi"], f"{FIG1}: 0 factors + 1 unknown cannot be 2"),
    (
        {"current_smoker": True, "non_hdl_mmol_l": 5.5, "bmi": None},
        7.0,
        "high",
        ["non-hdl-c", "smoking"],
        ["bmi"],
        f"{FIG1}: 2 known factors are enough",
    ),
    (
        {"current_smoker": True, "sbp_mmhg": 160, "dbp_mmhg": None},
        7.0,
        "high",
        ["blood-pressure", "smoking"],
        [],
        f"{FIG1}: SBP >= 160 meets factor ① without DBP",
    ),
]


@pytest.mark.parametrize(("changes", "risk", "status", "present", "missing", "source"), RULE)
def test_five_factor_rule_matches_the_guideline_table(
    changes: dict,
    risk: float | None,
    status: str | None,
    present: list[str],
    missing: list[str],
    source: str,
) -> None:
    result = lr.lifetime_risk(lr.RiskFactorInput(**{**BASE, **changes}), risk)
    if status is None:
        assert result is None, source
        return
    assert result is not None, source
    assert result.status == status, (source, result)
    assert result.factors_present == present, source
    assert result.missing_inputs == missing, source
    assert result.guideline_rule_applies is (status != "not-computed"), source
    assert result.reason.code == f"lifetime-risk-{status}"


ALLOWED_LATIN = ("China-PAR", "mmHg")


@pytest.mark.parametrize(("changes", "risk", "status", "present", "missing", "source"), RULE)
def test_both_languages_say_what_the_answer_is(
    changes: dict,
    risk: float | None,
    status: str | None,
    present: list[str],
    missing: list[str],
    source: str,
) -> None:
    result = lr.lifetime_risk(lr.RiskFactorInput(**{**BASE, **changes}), risk)
    if result is None:
        return
    en, zh = result.reason.en, result.reason.zh
    stripped = zh
    for word in ALLOWED_LATIN:
        stripped = stripped.replace(word, "")
    assert not re.search("[A-Za-z]", stripped), zh  # no English inside Chinese output
    words = {
        "high": ("Remaining-lifetime risk HIGH", "余生危险高危"),
        "not-high": ("not high by the 2016/2023 lipid-guideline rule", "余生危险非高危"),
        "undetermined": ("lower bound", "仅为下限"),
        "not-computed": ("does not compute it", "本系统不计算终生风险"),
    }[result.status]
    assert words[0] in en and words[1] in zh, source
    if result.status == "high":
        assert "LDL-C target < 2.6 mmol/L" in en and "低密度脂蛋白胆固醇目标<2.6毫摩尔/升" in zh
    if result.status == "undetermined":
        assert "not high until" in en and "不能据此认为余生危险非高危" in zh
        assert all(name in en for name in result.missing_inputs)
    if result.status == "not-computed":
        assert "32.8" in en and "not a lifetime-risk result" in en and "不是终生风险结果" in zh
        assert "High" not in en and "高危）：" not in zh  # information, never a computed result


def person(age: float, **changes: object) -> cp.ChinaParInput:
    return cp.ChinaParInput(**profile("male", age, diabetes=False, **changes))


@pytest.mark.parametrize(
    ("tc_mmol_l", "status", "source"),
    [
        (6.49, "not-high", f"{FIG1}: non-HDL-C = TC - HDL-C = 5.19 mmol/L, smoking only"),
        (6.50, "high", f"{FIG1}: non-HDL-C = TC - HDL-C = 5.20 mmol/L, with smoking"),
    ],
)
def test_china_par_derives_non_hdl_from_tc_minus_hdl(
    tc_mmol_l: float, status: str, source: str
) -> None:
    result = cp.china_par(
        person(
            50,
            current_smoker=True,
            bmi=24,
            dbp_mmhg=80,
            total_cholesterol_mg_dl=tc_mmol_l / 0.0259,
            hdl_cholesterol_mg_dl=1.30 / 0.0259,
        )
    )
    assert result.risk_10y_percent is not None and 5.0 <= result.risk_10y_percent < 10.0
    assert result.lifetime_risk is not None and result.lifetime_risk.status == status, source


def assess_body(**changes: object) -> AssessRequest:
    body = profile("male", 50, diabetes=False, current_smoker=True, dbp_mmhg=80, bmi=30)
    body.update({"conditions": ["hypertension"], "ldl_cholesterol_mmol_l": 3.0, **changes})
    return AssessRequest.model_validate(body)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_lifetime_high_sets_the_high_risk_ldl_target_in_json_and_cards(lang: str) -> None:
    """Lipid 2016: lifetime high is managed as high risk, LDL-C < 2.6 (not < 3.4) mmol/L."""
    result = assess(assess_body(), None, lang)  # type: ignore[arg-type]
    par = result.china_par
    assert par is not None and par.category == "intermediate"
    assert par.lifetime_risk is not None and par.lifetime_risk.status == "high"
    assert result.follow_up is not None
    ldl = next(t for t in result.follow_up.targets if t.measure == "ldl_cholesterol_mmol_l")
    assert ldl.target == "< 2.6 mmol/L" and ldl.met is False and "lifetime" in ldl.source
    assert par.lifetime_risk_assessment is not None
    text = getattr(par.lifetime_risk_assessment, lang)
    assert text in result.guidance
    cards = cards_for(result, "p1", lang)  # type: ignore[arg-type]
    card = next(card for card in cards if "China-PAR" in card["summary"])
    assert text in card["detail"]
    # managed as high risk: a warning that says so, not an "intermediate" info card
    assert card["indicator"] == "warning"
    assert ("余生危险高危" if lang == "zh" else "remaining-lifetime risk high") in card["summary"]


def test_without_lifetime_high_an_intermediate_china_par_card_stays_info() -> None:
    cards = cards_for(assess(assess_body(bmi=24), None, "en"), "p1", "en")
    card = next(card for card in cards if "China-PAR" in card["summary"])
    assert card["indicator"] == "info" and "lifetime" not in card["summary"]


def test_without_lifetime_high_the_ldl_target_stays_3_4() -> None:
    result = assess(assess_body(bmi=24), None, "en")
    assert result.china_par is not None and result.china_par.lifetime_risk is not None
    assert result.china_par.lifetime_risk.status == "not-high"
    assert result.follow_up is not None
    ldl = next(t for t in result.follow_up.targets if t.measure == "ldl_cholesterol_mmol_l")
    assert ldl.target == "< 3.4 mmol/L" and ldl.met is True


def test_assess_json_reports_missing_bmi_as_undetermined(client: TestClient) -> None:
    body = profile("male", 50, diabetes=False, current_smoker=True, dbp_mmhg=80)
    data = client.post("/api/v1/cds/assess", json=body, headers={"Accept-Language": "en"}).json()
    lifetime = data["china_par"]["lifetime_risk"]
    assert lifetime["status"] == "undetermined" and lifetime["missing_inputs"] == ["bmi"]
    assert "reason" not in lifetime  # the text is carried once, as lifetime_risk_assessment
    assert data["china_par"]["lifetime_risk_assessment"]["en"] in data["guidance"]


@pytest.mark.parametrize(
    ("bmi", "code"), [(30, "lifetime-risk-high"), (24, "lifetime-risk-not-high")]
)
def test_stand_alone_china_par_route_shows_the_lifetime_answer(
    client: TestClient, bmi: float, code: str
) -> None:
    body = profile("male", 50, diabetes=False, current_smoker=True, dbp_mmhg=80, bmi=bmi)
    data = client.post("/api/v1/cds/china-par", json=body, headers={"Accept-Language": "zh"}).json()
    assert data["lifetime_risk_assessment"]["code"] == code, data
    assert data["lifetime_risk_assessment"]["zh"] in data["guidance"]
    lifetime = data["lifetime_risk"]  # the structured answer, as /assess gives it
    assert lifetime["status"] == code.removeprefix("lifetime-risk-")
    assert lifetime["guideline_rule_applies"] is True
    assert "smoking" in lifetime["factors_present"]
    assert ("obesity" in lifetime["factors_present"]) is (bmi >= 28)


@pytest.mark.parametrize(
    ("changes", "basis"),
    [
        ({"age": 60, "sbp_mmhg": 170}, "China-PAR 10-year ASCVD risk"),
        ({"total_cholesterol_mg_dl": 7.3 / 0.0259}, "without calculation: TC >= 7.2"),
    ],
)
def test_high_risk_by_the_china_par_flow_also_sets_the_high_risk_ldl_target(
    changes: dict, basis: str
) -> None:
    """Lipid 2016: the high-risk stratum (10-year >= 10 % or direct high risk) -> LDL-C < 2.6."""
    result = assess(assess_body(bmi=24, **changes), None, "en")
    assert result.china_par is not None and result.china_par.category == "high"
    assert result.follow_up is not None
    ldl = next(t for t in result.follow_up.targets if t.measure == "ldl_cholesterol_mmol_l")
    assert ldl.target == "< 2.6 mmol/L" and basis in ldl.source


# LDL-C target for a patient the follow-up does not cover (no hypertension or diabetes
# diagnosis): the China-PAR flow's risk level sets it. Lipid 2016 (中国成人血脂异常防治指南2016,
# 表: 不同ASCVD危险人群LDL-C治疗达标值): low / intermediate < 3.4, high < 2.6, very high
# (ASCVD) < 1.8 mmol/L.
LIPID_2016_LDL = "中国成人血脂异常防治指南2016, LDL-C治疗达标值"

# (changes to assess_body with no diagnosis, target, met, source)
LDL_ROWS: list[tuple[dict, str, bool, str]] = [
    ({}, "< 2.6 mmol/L", False, f"{LIPID_2016_LDL}: high (remaining-lifetime risk high), 3.0"),
    ({"bmi": 24}, "< 3.4 mmol/L", True, f"{LIPID_2016_LDL}: intermediate, 3.0"),
    ({"bmi": 24, "ldl_cholesterol_mmol_l": 3.6}, "< 3.4 mmol/L", False, "intermediate, 3.6"),
    ({"ldl_cholesterol_mmol_l": 5.2}, "< 2.6 mmol/L", False, "direct high risk: LDL-C >= 4.9"),
    ({"ascvd": True, "ldl_cholesterol_mmol_l": 2.1}, "< 1.8 mmol/L", False, "very high: ASCVD"),
]


@pytest.mark.parametrize(("changes", "target", "met", "source"), LDL_ROWS)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_ldl_target_without_a_diagnosis_follows_the_ascvd_risk(
    changes: dict, target: str, met: bool, source: str, lang: str
) -> None:
    result = assess(assess_body(conditions=[], **changes), None, lang)  # type: ignore[arg-type]
    assert result.follow_up is None
    check = result.ldl_target
    assert check is not None, source
    assert (check.target, check.met) == (target, met), source
    line = next(g for g in result.guidance if g.startswith("LDL-C "))
    value = f"{changes.get('ldl_cholesterol_mmol_l', 3.0):g}"
    if lang == "zh":
        assert line == f"LDL-C {value} mmol/L，{'已达标' if met else '未达标'}（目标 {target}）"
    else:
        assert line == f"LDL-C {value} mmol/L: {'at target' if met else 'not at target'} ({target})"
    details = [card["detail"] for card in cards_for(result, "p1", lang)]  # type: ignore[arg-type]
    assert sum(line in detail for detail in details) == 1, details  # on one card, once


@pytest.mark.parametrize(
    "changes",
    [{"conditions": ["hypertension"]}, {"conditions": [], "ldl_cholesterol_mmol_l": None}],
)
def test_no_second_ldl_line_under_follow_up_and_none_without_ldl(changes: dict) -> None:
    """A followed-up patient has the LDL-C target among the follow-up's targets already."""
    result = assess(assess_body(**changes), None, "en")
    assert result.ldl_target is None
    assert not any(g.startswith("LDL-C ") for g in result.guidance)
