"""China-PAR 10-year ASCVD risk (Yang et al., Circulation 2016;134:1430-1440).

Sex-specific Cox equations derived in 35-74 year-old Chinese adults:
``risk = 1 - S10 ** exp(sum(beta * x) - mean)``, with ln(age), ln(SBP) (treated / untreated),
ln(TC), ln(HDL-C) (mg/dL), ln(waist), smoking, diabetes, region (north), residence (urban, men),
family history (men) and the interaction terms the paper lists.

Why two coefficient sets: the paper's Supplemental Table 1 prints coefficients to two decimals,
which do not reproduce the paper's own Table 2 (men 60 y: 11.6 % instead of 11.0 %; women's printed
S10 = 0.99 gives 6.9 % instead of 10.1 %). The men's six continuous coefficients are restored from
the table's worked example (its "coefficient x value" column was computed with the unrounded
coefficients) and the women's S10 is solved from the women's worked example (sum 119.22 -> 10.1 %).
``PRINTED`` keeps the printed values for comparison; ``COEFFICIENTS`` is what the API uses.

Coefficient sources (documented for review, see docs/clinical.md):

* men's six continuous coefficients: restored from the worked example of Supplemental Table 1
  (its "coefficient x value" column), not the printed two-decimal values;
* men's baseline survival S10 = 0.9707: not a printed number (the printed 0.97 gives 11.9 %
  instead of 11.0 % at 60); with the restored coefficients it reproduces Table 2, but how it was
  derived was not recorded;
* women's S10 = 0.9851: solved from the women's worked example (sum 119.22 -> 10.1 %);
* treated-SBP terms: not covered by the worked examples and their printed values were not
  available offline: the untreated terms plus the treated-minus-untreated difference of a
  third-party fit to the official calculator (cvdrisk.com.cn). They must be checked against
  Supplemental Table 1 before clinical use; every answer on treated BP says so.

Model artefact: in the men's equation smoking and family history enter with an age interaction
(3.96 - 0.94 ln age; 6.22 - 1.53 ln age), so past about 67 (smoking) and 58 (family history)
years the equation predicts *lower* risk with the factor. medgate shows the equation's value and
a caution, and never presents the factor as protective.

Risk assessment (中国心血管病风险评估和管理指南, 2019, flow chart): established ASCVD is
excluded from the calculator (very high risk, secondary prevention); diabetes at 40 or over,
LDL-C >= 4.9 or TC >= 7.2 mmol/L, grade 3 hypertension (>= 180 and/or >= 110 mmHg) or CKD stage
3-4 are high risk without calculation; otherwise the 10-year equation; ages 20-59 with a 10-year
risk < 10 % need a lifetime-risk assessment (``lifetime_risk``: the lipid guidelines' five-factor
rule where they apply it, 10-year intermediate and age < 55; the China-PAR lifetime model itself
is not computed, its coefficients are not available offline).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, model_validator

from medgate.clinical.common import CalculatorInfo, Reason, make_info
from medgate.clinical.lifetime_risk import LifetimeRisk, RiskFactorInput, lifetime_risk

NAME = "china-par-10y-ascvd"
VERSION = "2016.2"
SOURCE = (
    "Yang X, et al. Predicting the 10-Year Risks of Atherosclerotic Cardiovascular Disease in "
    "Chinese Population: the China-PAR Project. Circulation 2016;134:1430-1440. "
    "doi:10.1161/CIRCULATIONAHA.116.022367"
)
SOURCE_URL = "https://doi.org/10.1161/CIRCULATIONAHA.116.022367"
MG_DL_PER_MMOL_L = 1 / 0.0259
# GUIDELINE_2019 direct high-risk criteria (no calculation).
DIRECT_HIGH_RISK = {
    "diabetes_min_age": 40,
    "ldl_mmol_l_min": 4.9,
    "tc_mmol_l_min": 7.2,
    "grade3_sbp_min": 180,
    "grade3_dbp_min": 110,
}
AGE_RANGE = (35, 74)

# Printed two-decimal values of Supplemental Table 1 (kept for the comparison in docs/tests).
PRINTED: dict[str, dict[str, float]] = {
    "male": {
        "ln_age": 31.97,
        "ln_sbp_untreated": 26.15,
        "ln_tc": 0.62,
        "ln_hdl": -0.69,
        "ln_waist": -0.71,
        "ln_age_x_ln_sbp_untreated": -5.73,
        "s10": 0.97,
        "mean": 140.68,
    },
    "female": {
        "ln_age": 24.87,
        "ln_sbp_untreated": 19.98,
        "ln_tc": 0.06,
        "ln_hdl": -0.22,
        "ln_waist": 1.48,
        "ln_age_x_ln_sbp_untreated": -4.36,
        "s10": 0.99,
        "mean": 117.26,
    },
}

# treated-minus-untreated differences from the fit to the official calculator (see module doc)
_TREATED_DELTA = {
    "male": {"ln_sbp": 27.704396 - 26.455809, "ln_age_x_ln_sbp": -6.093602 + 5.804677},
    "female": {"ln_sbp": 21.036129 - 20.290294, "ln_age_x_ln_sbp": -4.609343 + 4.436694},
}

COEFFICIENTS: dict[str, dict[str, float]] = {
    "male": {
        "ln_age": 31.96604,
        "ln_sbp_untreated": 26.14876,
        "ln_sbp_treated": round(26.14876 + _TREATED_DELTA["male"]["ln_sbp"], 6),
        "ln_tc": 0.62090,
        "ln_hdl": -0.69373,
        "ln_waist": -0.71200,
        "current_smoker": 3.96,
        "diabetes": 0.36,
        "north": 0.48,
        "urban": -0.16,
        "family_history": 6.22,
        "ln_age_x_ln_sbp_untreated": -5.73074,
        "ln_age_x_ln_sbp_treated": round(-5.73074 + _TREATED_DELTA["male"]["ln_age_x_ln_sbp"], 6),
        "ln_age_x_current_smoker": -0.94,
        "ln_age_x_family_history": -1.53,
        "s10": 0.9707,
        "mean": 140.68,
    },
    "female": {
        "ln_age": 24.87,
        "ln_sbp_untreated": 19.98,
        "ln_sbp_treated": round(19.98 + _TREATED_DELTA["female"]["ln_sbp"], 6),
        "ln_tc": 0.06,
        "ln_hdl": -0.22,
        "ln_waist": 1.48,
        "current_smoker": 0.49,
        "diabetes": 0.57,
        "north": 0.54,
        "ln_age_x_ln_sbp_untreated": -4.36,
        "ln_age_x_ln_sbp_treated": round(-4.36 + _TREATED_DELTA["female"]["ln_age_x_ln_sbp"], 6),
        "s10": 0.9851,
        "mean": 117.26,
    },
}

INFO: CalculatorInfo = make_info(NAME, VERSION, COEFFICIENTS, SOURCE)

Category = Literal["low", "intermediate", "high"]


class ChinaParInput(BaseModel):
    """Inputs in the equation's own units (lipids in mg/dL)."""

    age: float
    sex: Literal["male", "female"]
    sbp_mmhg: float
    on_bp_treatment: bool
    total_cholesterol_mg_dl: float
    hdl_cholesterol_mg_dl: float
    waist_cm: float
    current_smoker: bool
    diabetes: bool
    region: Literal["north", "south"]
    residence: Literal["urban", "rural"]
    family_history_ascvd: bool
    dbp_mmhg: float | None = None
    ldl_cholesterol_mg_dl: float | None = None
    bmi: float | None = None
    ascvd: bool = False
    ckd_stage_3_4: bool = False

    @model_validator(mode="after")
    def _hdl_below_total(self) -> ChinaParInput:
        if self.hdl_cholesterol_mg_dl >= self.total_cholesterol_mg_dl:
            raise ValueError(
                "HDL cholesterol must be lower than total cholesterol (HDL is part of the total): "
                "check the values and their units"
            )
        return self


Route = Literal["established-ascvd", "direct-high-risk", "equation", "not-applicable"]


class ChinaParResult(BaseModel):
    applicable: bool
    route: Route = "equation"
    risk_10y_percent: float | None = None
    category: Category | None = None
    reason: str | None = None
    direct_high_risk_reasons: list[str] = []
    linear_predictor: float | None = None
    cautions: list[Reason] = []
    lifetime_risk_assessment: Reason | None = None
    lifetime_risk: LifetimeRisk | None = None
    calculator: CalculatorInfo = INFO


def category_for(risk_percent: float) -> Category:
    """China guideline (2019) strata: low < 5 %, intermediate 5-9.9 %, high >= 10 %."""
    if risk_percent < 5.0:
        return "low"
    if risk_percent < 10.0:
        return "intermediate"
    return "high"


def linear_predictor(x: ChinaParInput, table: dict[str, dict[str, float]] = COEFFICIENTS) -> float:
    """The individual sum ``sum(beta * x)`` of the sex-specific equation."""
    c = table[x.sex]
    treated = "treated" if x.on_bp_treatment else "untreated"
    ln_age = math.log(x.age)
    ln_sbp = math.log(x.sbp_mmhg)
    total = (
        c["ln_age"] * ln_age
        + c[f"ln_sbp_{treated}"] * ln_sbp
        + c["ln_tc"] * math.log(x.total_cholesterol_mg_dl)
        + c["ln_hdl"] * math.log(x.hdl_cholesterol_mg_dl)
        + c["ln_waist"] * math.log(x.waist_cm)
        + c.get("current_smoker", 0.0) * x.current_smoker
        + c.get("diabetes", 0.0) * x.diabetes
        + c.get("north", 0.0) * (x.region == "north")
        + c.get("urban", 0.0) * (x.residence == "urban")
        + c.get("family_history", 0.0) * x.family_history_ascvd
        + c[f"ln_age_x_ln_sbp_{treated}"] * ln_age * ln_sbp
        + c.get("ln_age_x_current_smoker", 0.0) * ln_age * x.current_smoker
        + c.get("ln_age_x_family_history", 0.0) * ln_age * x.family_history_ascvd
    )
    return total


def risk_percent(x: ChinaParInput, table: dict[str, dict[str, float]] = COEFFICIENTS) -> float:
    """Unrounded 10-year risk in percent, with no age-range check (for comparisons)."""
    c = table[x.sex]
    return 100.0 * (1.0 - c["s10"] ** math.exp(linear_predictor(x, table) - c["mean"]))


def direct_high_risk(x: ChinaParInput) -> list[str]:
    """GUIDELINE_2019: the criteria that make a person high risk without the equation."""
    return direct_high_risk_from(
        age=x.age,
        diabetes=x.diabetes,
        ldl_cholesterol_mg_dl=x.ldl_cholesterol_mg_dl,
        total_cholesterol_mg_dl=x.total_cholesterol_mg_dl,
        sbp_mmhg=x.sbp_mmhg,
        dbp_mmhg=x.dbp_mmhg,
        ckd_stage_3_4=x.ckd_stage_3_4,
    )


def direct_high_risk_from(
    *,
    age: float | None,
    diabetes: bool | None,
    ldl_cholesterol_mg_dl: float | None,
    total_cholesterol_mg_dl: float | None,
    sbp_mmhg: float | None,
    dbp_mmhg: float | None,
    ckd_stage_3_4: bool,
) -> list[str]:
    """The GUIDELINE_2019 direct criteria met by whatever is known: each needs only its own
    inputs, so a patient with LDL-C 5.2 is high risk even when the equation's inputs are missing."""
    c = DIRECT_HIGH_RISK
    found: list[str] = []
    if diabetes and age is not None and age >= c["diabetes_min_age"]:
        found.append("diabetes at age >= 40")
    if (
        ldl_cholesterol_mg_dl is not None
        and ldl_cholesterol_mg_dl / MG_DL_PER_MMOL_L >= c["ldl_mmol_l_min"]
    ):
        found.append("LDL-C >= 4.9 mmol/L")
    if (
        total_cholesterol_mg_dl is not None
        and total_cholesterol_mg_dl / MG_DL_PER_MMOL_L >= c["tc_mmol_l_min"]
    ):
        found.append("TC >= 7.2 mmol/L")
    if (sbp_mmhg is not None and sbp_mmhg >= c["grade3_sbp_min"]) or (
        dbp_mmhg is not None and dbp_mmhg >= c["grade3_dbp_min"]
    ):
        found.append("grade 3 hypertension (>= 180 and/or >= 110 mmHg)")
    if ckd_stage_3_4:
        found.append("chronic kidney disease stage 3-4")
    return found


def direct_result(reasons: list[str]) -> ChinaParResult:
    """High risk without calculation, for the reasons given (GUIDELINE_2019)."""
    return ChinaParResult(
        applicable=True,
        route="direct-high-risk",
        category="high",
        direct_high_risk_reasons=reasons,
        reason="high risk without calculation (2019 guideline): " + "; ".join(reasons),
    )


def artefact_cautions(x: ChinaParInput) -> list[Reason]:
    """Cautions where the equation gives lower risk *with* smoking or family history (men)."""
    cautions: list[Reason] = []
    base = risk_percent(x)
    names = {
        "current_smoker": ("smoking", "吸烟"),
        "family_history_ascvd": ("family history", "家族史"),
    }
    for field, (en, zh) in names.items():
        if getattr(x, field):
            without = risk_percent(x.model_copy(update={field: False}))
            if without >= base:
                cautions.append(
                    Reason(
                        code=f"artefact-{field}",
                        en=f"At this age the China-PAR equation gives a lower risk with {en} "
                        f"({base:.1f} % vs {without:.1f} % without): a known artefact of the age "
                        f"interaction in the men's model. {en.capitalize()} is not protective; it "
                        "raises cardiovascular risk.",
                        zh=f"在此年龄，China-PAR方程计算的有{zh}者风险反而较低（{base:.1f}%，无{zh}时"
                        f"{without:.1f}%）：这是男性模型中年龄交互项造成的已知偏差。{zh}并无保护作用，"
                        "它会增加心血管病风险。",
                        source=SOURCE,
                    )
                )
    if x.on_bp_treatment:
        cautions.append(
            Reason(
                code="treated-sbp-coefficients",
                en="Treated-SBP coefficients come from a third-party fit to the official "
                "calculator, not from the paper: check the value with the official calculator.",
                zh="服用降压药者的收缩压系数来自对官方计算器的第三方拟合，而非原文：请用官方计算器核对。",
                source=SOURCE,
            )
        )
    return cautions


def _lifetime(x: ChinaParInput, risk: float | None) -> dict[str, Any]:
    """The lifetime step (``lifetime_risk``) on this person's factors, as result fields."""
    factors = RiskFactorInput(
        age=x.age,
        sbp_mmhg=x.sbp_mmhg,
        dbp_mmhg=x.dbp_mmhg,
        non_hdl_mmol_l=(x.total_cholesterol_mg_dl - x.hdl_cholesterol_mg_dl) / MG_DL_PER_MMOL_L,
        hdl_mmol_l=x.hdl_cholesterol_mg_dl / MG_DL_PER_MMOL_L,
        bmi=x.bmi,
        current_smoker=x.current_smoker,
    )
    answer = lifetime_risk(factors, risk)
    return {
        "lifetime_risk": answer,
        "lifetime_risk_assessment": None if answer is None else answer.reason,
    }


def established_ascvd() -> ChinaParResult:
    """GUIDELINE_2019: established ASCVD is very high risk by itself; no equation, no inputs."""
    return ChinaParResult(
        applicable=False,
        route="established-ascvd",
        reason="established ASCVD: very high risk, secondary prevention; China-PAR is for "
        "people without cardiovascular disease",
    )


def china_par(x: ChinaParInput) -> ChinaParResult:
    """GUIDELINE_2019 risk assessment: ASCVD excluded, direct high risk, then the equation."""
    if x.ascvd:
        return established_ascvd()
    direct = direct_high_risk(x)
    if direct:
        return direct_result(direct)
    low, high = AGE_RANGE
    if not low <= x.age <= high:
        return ChinaParResult(
            applicable=False,
            route="not-applicable",
            reason=f"China-PAR was derived in adults aged {low}-{high}; age {x.age:g} is outside",
            **_lifetime(x, None),
        )
    risk = round(risk_percent(x), 1)
    return ChinaParResult(
        applicable=True,
        route="equation",
        risk_10y_percent=risk,
        category=category_for(risk),
        linear_predictor=round(linear_predictor(x), 4),
        cautions=artefact_cautions(x),
        **_lifetime(x, risk),
    )
