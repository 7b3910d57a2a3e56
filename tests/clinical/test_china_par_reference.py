"""China-PAR and the 2019 risk-assessment flow against their publications.

Yang 2016 = Yang X, et al. Circulation 2016;134:1430-1440 (Table 2 reference profile: north,
urban, diabetic, non-smoker, no family history, untreated SBP 130 mmHg, TC 210 mg/dL, HDL 55
mg/dL, waist 80 cm). Guideline 2019 = 中国心血管病风险评估和管理指南, 中华预防医学杂志
2019;53(1):13-35 (flow chart: ASCVD excluded; direct high risk; 10-year risk; lifetime risk for
20-59 with 10-year risk < 10 %).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_data import profile

from medgate.clinical import china_par as cp


def person(sex: str, age: float, **changes: object) -> cp.ChinaParInput:
    """The published reference profile (tests/support/cds_data.py) as the equation's input."""
    return cp.ChinaParInput(**profile(sex, age, **changes))


# (sex, age, published 10-year risk %, source)
REFERENCE_POINTS = [
    ("male", 40, 2.2, "Yang 2016, Table 2, men 40 y"),
    ("male", 50, 5.4, "Yang 2016, Table 2, men 50 y"),
    ("male", 60, 11.0, "Yang 2016, Table 2, men 60 y"),
    ("male", 70, 19.6, "Yang 2016, Table 2, men 70 y"),
    ("female", 40, 2.4, "Yang 2016, Table 2, women 40 y"),
    ("female", 50, 5.4, "Yang 2016, Table 2, women 50 y"),
    ("female", 60, 10.1, "Yang 2016, Table 2, women 60 y"),
    ("female", 70, 17.1, "Yang 2016, Table 2, women 70 y"),
]


@pytest.mark.parametrize(("sex", "age", "published", "source"), REFERENCE_POINTS)
def test_eight_published_reference_points(
    sex: str, age: int, published: float, source: str
) -> None:
    assert abs(cp.risk_percent(person(sex, age)) - published) <= 0.1, source


# (changes, route, reasons, source); everyone 50 y unless changed, diabetes off unless set
DIRECT = [
    ({"ascvd": True}, "established-ascvd", [], "Guideline 2019: ASCVD patients are not assessed"),
    (
        {"diabetes": True, "age": 40},
        "direct-high-risk",
        ["diabetes at age >= 40"],
        "Guideline 2019: diabetes aged >= 40 -> high risk",
    ),
    (
        {"diabetes": True, "age": 39},
        "equation",
        [],
        "Guideline 2019: diabetes under 40 -> equation",
    ),
    (
        {"ldl_cholesterol_mg_dl": 4.9 / 0.0259},
        "direct-high-risk",
        ["LDL-C >= 4.9 mmol/L"],
        "Guideline 2019: LDL-C >= 4.9 mmol/L",
    ),
    ({"ldl_cholesterol_mg_dl": 4.89 / 0.0259}, "equation", [], "Guideline 2019: LDL-C 4.89"),
    (
        {"total_cholesterol_mg_dl": 7.2 / 0.0259},
        "direct-high-risk",
        ["TC >= 7.2 mmol/L"],
        "Guideline 2019: TC >= 7.2 mmol/L",
    ),
    ({"total_cholesterol_mg_dl": 7.19 / 0.0259}, "equation", [], "Guideline 2019: TC 7.19"),
    (
        {"sbp_mmhg": 180},
        "direct-high-risk",
        ["grade 3 hypertension (>= 180 and/or >= 110 mmHg)"],
        "Guideline 2019: grade 3 hypertension (SBP >= 180)",
    ),
    (
        {"sbp_mmhg": 150, "dbp_mmhg": 110},
        "direct-high-risk",
        ["grade 3 hypertension (>= 180 and/or >= 110 mmHg)"],
        "Guideline 2019: grade 3 hypertension (DBP >= 110)",
    ),
    ({"sbp_mmhg": 179, "dbp_mmhg": 109}, "equation", [], "Guideline 2019: grade 2 -> equation"),
    (
        {"ckd_stage_3_4": True},
        "direct-high-risk",
        ["chronic kidney disease stage 3-4"],
        "Guideline 2019 (as listed in issue 22): CKD stage 3-4",
    ),
]


@pytest.mark.parametrize(("changes", "route", "reasons", "source"), DIRECT)
def test_direct_high_risk_route_comes_first(
    changes: dict, route: str, reasons: list[str], source: str
) -> None:
    result = cp.china_par(person("male", changes.pop("age", 50), **{"diabetes": False, **changes}))
    assert result.route == route, source
    assert result.direct_high_risk_reasons == reasons, source
    if route == "direct-high-risk":
        assert result.category == "high" and result.risk_10y_percent is None
    if route == "established-ascvd":
        assert not result.applicable and "secondary prevention" in (result.reason or "")


# (sex, age, changes, lifetime status or None, source); reference profile without diabetes,
# BMI and DBP given (the lipid-guideline factors are tested in test_lifetime_risk_reference.py)
LIFETIME = [
    (
        "male",
        50,
        {},
        "not-computed",
        "Guideline 2019: 20-59 and 10-year < 10 % -> lifetime risk; 10-year 3.8 % is low, "
        "so the lipid-guideline rule does not apply and the China-PAR lifetime model is not "
        "computed",
    ),
    (
        "male",
        50,
        {"current_smoker": True, "bmi": 30},
        "high",
        "中国成人血脂异常防治指南 2016, 图1 余生危险: 10-year 5.0 %, age < 55, 2 factors",
    ),
    (
        "male",
        50,
        {"current_smoker": True},
        "not-high",
        "中国成人血脂异常防治指南 2016, 图1 余生危险: 10-year 5.0 %, age < 55, 1 factor",
    ),
    ("male", 59, {}, "not-computed", "Guideline 2019: 59 is inside 20-59"),
    ("male", 60, {}, None, "Guideline 2019: 60 is outside 20-59"),
    ("male", 30, {}, "not-computed", "Guideline 2019: 20-34 (no 10-year equation)"),
    (
        "male",
        58,
        {"sbp_mmhg": 175, "current_smoker": True, "total_cholesterol_mg_dl": 270},
        None,
        "Guideline 2019: 10-year risk >= 10 % -> already high, no lifetime step",
    ),
]


@pytest.mark.parametrize(("sex", "age", "changes", "status", "source"), LIFETIME)
def test_lifetime_risk_is_assessed_for_20_to_59_below_10_percent(
    sex: str, age: int, changes: dict, status: str | None, source: str
) -> None:
    result = cp.china_par(person(sex, age, diabetes=False, dbp_mmhg=80, **{"bmi": 24, **changes}))
    lifetime = result.lifetime_risk
    assert (None if lifetime is None else lifetime.status) == status, (source, result)
    if lifetime is not None and result.risk_10y_percent is not None:
        assert result.risk_10y_percent < 10.0
    if status == "not-computed":
        assert lifetime is not None and "does not compute it" in lifetime.reason.en


@pytest.mark.parametrize("factor", ["current_smoker", "family_history_ascvd"])
def test_smoking_and_family_history_artefact_is_cautioned_never_protective(factor: str) -> None:
    """Yang 2016 men's model: the age interaction makes the factor lower risk in older men."""
    old = person("male", 72, diabetes=False, **{factor: True})
    without = cp.risk_percent(old.model_copy(update={factor: False}))
    with_factor = cp.china_par(old)
    assert with_factor.risk_10y_percent is not None
    assert with_factor.risk_10y_percent <= round(without, 1)  # the equation's own value is shown
    codes = [c.code for c in with_factor.cautions]
    assert f"artefact-{factor}" in codes
    caution = with_factor.cautions[codes.index(f"artefact-{factor}")]
    assert "not protective" in caution.en and "并无保护作用" in caution.zh
    young = cp.china_par(person("male", 45, diabetes=False, **{factor: True}))
    assert not [c for c in young.cautions if c.code.startswith("artefact")]


def test_women_smoking_always_raises_risk() -> None:
    for age in (35, 50, 74):
        base = cp.risk_percent(person("female", age, diabetes=False))
        assert cp.risk_percent(person("female", age, diabetes=False, current_smoker=True)) > base


def test_treated_bp_answer_says_its_coefficients_are_unverified() -> None:
    result = cp.china_par(person("female", 55, diabetes=False, on_bp_treatment=True))
    assert "treated-sbp-coefficients" in [c.code for c in result.cautions]


BODY = dict(
    age=55,
    sex="male",
    sbp_mmhg=130,
    on_bp_treatment=False,
    total_cholesterol_mmol_l=5.2,
    hdl_cholesterol_mmol_l=1.3,
    waist_cm=85,
    current_smoker=False,
    diabetes=False,
    region="north",
    residence="urban",
    family_history_ascvd=False,
)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"hdl_cholesterol_mmol_l": 5.0, "total_cholesterol_mmol_l": 4.5}, "not below total"),
        (
            {"hdl_cholesterol_mmol_l": None, "hdl_cholesterol_mg_dl": 1.3},
            "looks like mmol/L",
        ),
        ({"hdl_cholesterol_mmol_l": 50}, "looks like mg/dL"),
        ({"sbp_mmhg": 80, "dbp_mmhg": 150}, "not below systolic"),
    ],
)
def test_impossible_lipids_and_pairs_are_refused(
    client: TestClient, changes: dict, words: str
) -> None:
    body = {k: v for k, v in {**BODY, **changes}.items() if v is not None}
    response = client.post("/api/v1/cds/china-par", json=body)
    assert response.status_code == 422
    assert words in response.text


def test_chinese_answer_has_no_english_category(client: TestClient) -> None:
    data = client.post("/api/v1/cds/china-par", json=BODY, headers={"Accept-Language": "zh"}).json()
    assert data["route"] == "equation"
    text = "".join(data["guidance"])
    assert "（中危）" in text or "（低危）" in text or "（高危）" in text
    for word in ("low", "intermediate", "high"):
        assert f"（{word}）" not in text
    assert data["disclaimer"] == "仅供辅助决策，由接诊医生判断。"
