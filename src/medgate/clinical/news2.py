"""NEWS2 (Royal College of Physicians, 2017) and qSOFA (Seymour et al., JAMA 2016).

Every band edge is written as the first value of the band, straight from the RCP chart, so that
the tests can walk each boundary. Rates, SpO2 and blood pressure are whole numbers on the chart;
temperature has one decimal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from medgate.clinical.common import CalculatorInfo, make_info

Consciousness = Literal["A", "C", "V", "P", "U"]
Risk = Literal["low", "low-medium", "medium", "high"]

NEWS2_SOURCE = (
    "Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the "
    "assessment of acute-illness severity in the NHS. London: RCP, 2017."
)
NEWS2_URL = "https://www.rcp.ac.uk/improving-care/resources/national-early-warning-score-news-2/"
QSOFA_SOURCE = (
    "Seymour CW, et al. Assessment of Clinical Criteria for Sepsis (Sepsis-3). "
    "JAMA 2016;315(8):762-774. doi:10.1001/jama.2016.0288"
)
QSOFA_URL = "https://doi.org/10.1001/jama.2016.0288"

# (upper bound inclusive, points) walked in order; the last band has no upper bound (None).
BANDS: dict[str, list[tuple[float | None, int]]] = {
    "respiratory_rate": [(8, 3), (11, 1), (20, 0), (24, 2), (None, 3)],
    "spo2_scale1": [(91, 3), (93, 2), (95, 1), (None, 0)],
    "spo2_scale2_air": [(83, 3), (85, 2), (87, 1), (None, 0)],
    "spo2_scale2_oxygen": [(83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (None, 3)],
    "sbp_mmhg": [(90, 3), (100, 2), (110, 1), (219, 0), (None, 3)],
    "heart_rate": [(40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (None, 3)],
    "temperature_c": [(35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (None, 2)],
}
OXYGEN_POINTS = 2
NEWS2_INFO: CalculatorInfo = make_info(
    "news2", "2017", {"bands": BANDS, "oxygen": OXYGEN_POINTS}, NEWS2_SOURCE
)
QSOFA_CRITERIA = {"respiratory_rate_min": 22, "sbp_mmhg_max": 100, "altered_mentation": "not A"}
QSOFA_INFO: CalculatorInfo = make_info("qsofa", "2016", QSOFA_CRITERIA, QSOFA_SOURCE)


class News2Input(BaseModel):
    respiratory_rate: int
    spo2: int
    spo2_scale: Literal[1, 2] = 1
    on_oxygen: bool
    sbp_mmhg: int
    heart_rate: int
    consciousness: Consciousness
    temperature_c: float


class News2Result(BaseModel):
    score: int
    risk: Risk
    parameters: dict[str, int]
    clinical_response: str
    calculator: CalculatorInfo = NEWS2_INFO


class QsofaInput(BaseModel):
    respiratory_rate: int
    sbp_mmhg: int
    consciousness: Consciousness


class QsofaResult(BaseModel):
    score: int
    positive: bool
    criteria: dict[str, bool]
    calculator: CalculatorInfo = QSOFA_INFO


def band_points(table: str, value: float) -> int:
    """Points of ``value`` in the named band table."""
    for upper, points in BANDS[table]:
        if upper is None or value <= upper:
            return points
    raise AssertionError("unreachable: the last band is open")


def news2(x: News2Input) -> News2Result:
    """Aggregate NEWS2 and its clinical risk band."""
    if x.spo2_scale == 1:
        spo2_points = band_points("spo2_scale1", x.spo2)
    elif x.on_oxygen:
        spo2_points = band_points("spo2_scale2_oxygen", x.spo2)
    else:
        spo2_points = band_points("spo2_scale2_air", x.spo2)
    parameters = {
        "respiratory_rate": band_points("respiratory_rate", x.respiratory_rate),
        "spo2": spo2_points,
        "air_or_oxygen": OXYGEN_POINTS if x.on_oxygen else 0,
        "sbp_mmhg": band_points("sbp_mmhg", x.sbp_mmhg),
        "heart_rate": band_points("heart_rate", x.heart_rate),
        "consciousness": 0 if x.consciousness == "A" else 3,
        "temperature_c": band_points("temperature_c", x.temperature_c),
    }
    score = sum(parameters.values())
    risk: Risk
    if score >= 7:
        risk = "high"
    elif score >= 5:
        risk = "medium"
    elif any(points == 3 for points in parameters.values()):
        risk = "low-medium"
    else:
        risk = "low"
    return News2Result(
        score=score, risk=risk, parameters=parameters, clinical_response=RESPONSE[risk]
    )


RESPONSE: dict[str, str] = {
    "low": "ward-based response: assessment by a competent registered nurse",
    "low-medium": "urgent ward-based response by a clinician competent in acute illness",
    "medium": "key threshold for urgent response: urgent review by a clinician",
    "high": "urgent or emergency response: emergency assessment by a critical-care team",
}


def qsofa(x: QsofaInput) -> QsofaResult:
    """qSOFA: one point each for RR >= 22, SBP <= 100 and altered mentation (not Alert)."""
    criteria = {
        "respiratory_rate_ge_22": x.respiratory_rate >= 22,
        "sbp_le_100": x.sbp_mmhg <= 100,
        "altered_mentation": x.consciousness != "A",
    }
    score = sum(criteria.values())
    return QsofaResult(score=score, positive=score >= 2, criteria=criteria)
