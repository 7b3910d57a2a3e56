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

The treated-SBP terms are not covered by the worked examples and their printed values were not
available offline: they are the untreated terms plus the treated-minus-untreated difference of a
third-party fit to the official calculator (cvdrisk.com.cn); see docs/cds.md.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

from medgate.clinical.common import CalculatorInfo, make_info

NAME = "china-par-10y-ascvd"
VERSION = "2016.1"
SOURCE = (
    "Yang X, et al. Predicting the 10-Year Risks of Atherosclerotic Cardiovascular Disease in "
    "Chinese Population: the China-PAR Project. Circulation 2016;134:1430-1440. "
    "doi:10.1161/CIRCULATIONAHA.116.022367"
)
SOURCE_URL = "https://doi.org/10.1161/CIRCULATIONAHA.116.022367"
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


class ChinaParResult(BaseModel):
    applicable: bool
    risk_10y_percent: float | None = None
    category: Category | None = None
    reason: str | None = None
    linear_predictor: float | None = None
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


def china_par(x: ChinaParInput) -> ChinaParResult:
    """10-year ASCVD risk, or "not applicable" outside the derivation ages 35-74."""
    low, high = AGE_RANGE
    if not low <= x.age <= high:
        return ChinaParResult(
            applicable=False,
            reason=f"China-PAR was derived in adults aged {low}-{high}; age {x.age:g} is outside",
        )
    risk = round(risk_percent(x), 1)
    return ChinaParResult(
        applicable=True,
        risk_10y_percent=risk,
        category=category_for(risk),
        linear_predictor=round(linear_predictor(x), 4),
    )
