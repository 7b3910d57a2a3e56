"""NEWS2 (Royal College of Physicians, 2017) and qSOFA (Seymour et al., JAMA 2016).

Every band edge is written as the last value of the band, straight from the RCP chart ("NEWS2
scoring system", chart 1), so that the tests can walk each boundary. Rates, SpO2 and blood
pressure are whole numbers on the chart; temperature has one decimal, so a temperature is rounded
half-up to one decimal *before* banding (35.04 C is 35.0 on the chart and scores 3, not 1).

The clinical response follows the RCP chart "NEWS thresholds and triggers" / "clinical response"
(chart 2 and table of responses): aggregate 0, 1-4, a single parameter scoring 3, 5-6 and >= 7,
each with its minimum monitoring frequency. NEWS2 is for adults aged 16 and over; the RCP report
says it is not validated in pregnancy or in children.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel

from medgate.clinical.common import DISCLAIMER, CalculatorInfo, make_info

Consciousness = Literal["A", "C", "V", "P", "U"]
Risk = Literal["low", "low-medium", "medium", "high"]
ResponseBand = Literal["score-0", "score-1-4", "single-3", "score-5-6", "score-7-plus"]

NEWS2_SOURCE = (
    "Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the "
    "assessment of acute-illness severity in the NHS. London: RCP, 2017."
)
NEWS2_URL = "https://www.rcp.ac.uk/improving-care/resources/national-early-warning-score-news-2/"
QSOFA_SOURCE = (
    "Seymour CW, et al. Assessment of Clinical Criteria for Sepsis (Sepsis-3). "
    "JAMA 2016;315(8):762-774. doi:10.1001/jama.2016.0288; Singer M, et al. The Third "
    "International Consensus Definitions for Sepsis and Septic Shock (Sepsis-3). "
    "JAMA 2016;315(8):801-810."
)
QSOFA_URL = "https://doi.org/10.1001/jama.2016.0288"

#: NEWS2 applies from this age (RCP 2017: "for use in adults aged 16 years or older").
NEWS2_MIN_AGE = 16

# RCP 2017, chart 1 (NEWS2 scoring system): (last value of the band inclusive, points), walked
# in order; the last band has no upper end (None).
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

# RCP 2017, "NEWS thresholds and triggers" and "Clinical response to the NEWS trigger thresholds":
# band -> (risk, minimum monitoring frequency, response), English and Chinese.
RESPONSES: dict[ResponseBand, dict[str, str]] = {
    "score-0": {
        "risk": "low",
        "monitoring_en": "minimum every 12 hours",
        "monitoring_zh": "至少每12小时监测一次",
        "en": "Continue routine NEWS monitoring.",
        "zh": "继续常规NEWS监测。",
    },
    "score-1-4": {
        "risk": "low",
        "monitoring_en": "minimum every 4-6 hours",
        "monitoring_zh": "至少每4-6小时监测一次",
        "en": "Ward-based response: a registered nurse assesses the patient and decides whether "
        "monitoring must be more frequent or care escalated.",
        "zh": "病房内处置：由注册护士评估，决定是否增加监测频率或升级处理。",
    },
    "single-3": {
        "risk": "low-medium",
        "monitoring_en": "minimum every hour",
        "monitoring_zh": "至少每小时监测一次",
        "en": "Urgent ward-based response: the nurse informs the medical team, who review the "
        "patient and decide whether to escalate care.",
        "zh": "紧急病房内处置：护士通知医疗组，由医生评估并决定是否升级处理。",
    },
    "score-5-6": {
        "risk": "medium",
        "monitoring_en": "minimum every hour",
        "monitoring_zh": "至少每小时监测一次",
        "en": "Key threshold for urgent response: inform the medical team immediately; urgent "
        "assessment by a clinician competent in acute illness, care where the patient can be "
        "monitored.",
        "zh": "紧急处置阈值：立即通知医疗组，由具备急症处置能力的医生紧急评估，并在有监护条件的"
        "环境中治疗。",
    },
    "score-7-plus": {
        "risk": "high",
        "monitoring_en": "continuous monitoring of vital signs",
        "monitoring_zh": "持续监测生命体征",
        "en": "Urgent or emergency response: emergency assessment by a team with critical-care "
        "competencies; consider transfer to a higher level of care.",
        "zh": "紧急/急救处置：由具备重症救治能力的团队紧急评估，考虑转入更高级别的救治。",
    },
}

NEWS2_INFO: CalculatorInfo = make_info(
    "news2",
    "2017.2",
    {"bands": BANDS, "oxygen": OXYGEN_POINTS, "responses": RESPONSES, "min_age": NEWS2_MIN_AGE},
    NEWS2_SOURCE,
)
#: Seymour 2016: respiratory rate >= 22/min, systolic BP <= 100 mmHg, altered mentation.
QSOFA_RR_MIN = 22
QSOFA_SBP_MAX = 100
QSOFA_CRITERIA = {
    "respiratory_rate_min": QSOFA_RR_MIN,
    "sbp_mmhg_max": QSOFA_SBP_MAX,
    "altered_mentation": "not A",
    "interpreted_only_with_suspected_infection": True,
}
QSOFA_INFO: CalculatorInfo = make_info("qsofa", "2016.2", QSOFA_CRITERIA, QSOFA_SOURCE)


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
    response_band: ResponseBand
    parameters: dict[str, int]
    single_parameter_3: bool
    temperature_charted_c: float
    monitoring: str
    clinical_response: str
    calculator: CalculatorInfo = NEWS2_INFO
    disclaimer: str = DISCLAIMER["en"]


class QsofaInput(BaseModel):
    respiratory_rate: int
    sbp_mmhg: int
    consciousness: Consciousness
    suspected_infection: bool | None = None


class QsofaResult(BaseModel):
    score: int
    positive: bool
    criteria: dict[str, bool]
    suspected_infection: bool | None
    interpretation: str
    calculator: CalculatorInfo = QSOFA_INFO
    disclaimer: str = DISCLAIMER["en"]


def chart_temperature(value: float) -> float:
    """Temperature as charted: rounded half-up to one decimal (RCP chart bands are 0.1 C)."""
    return float(Decimal(repr(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def band_points(table: str, value: float) -> int:
    """Points of ``value`` in the named band table."""
    for upper, points in BANDS[table]:
        if upper is None or value <= upper:
            return points
    raise AssertionError("unreachable: the last band is open")


def response_band(score: int, single_3: bool) -> ResponseBand:
    """RCP 2017 trigger thresholds: 0, 1-4, a single parameter scoring 3, 5-6, >= 7."""
    if score >= 7:
        return "score-7-plus"
    if score >= 5:
        return "score-5-6"
    if single_3:
        return "single-3"
    if score >= 1:
        return "score-1-4"
    return "score-0"


def news2(x: News2Input, lang: Literal["en", "zh"] = "en") -> News2Result:
    """Aggregate NEWS2, its RCP response band, monitoring frequency and clinical response."""
    if x.spo2_scale == 1:
        spo2_points = band_points("spo2_scale1", x.spo2)
    elif x.on_oxygen:
        spo2_points = band_points("spo2_scale2_oxygen", x.spo2)
    else:
        spo2_points = band_points("spo2_scale2_air", x.spo2)
    temperature = chart_temperature(x.temperature_c)
    parameters = {
        "respiratory_rate": band_points("respiratory_rate", x.respiratory_rate),
        "spo2": spo2_points,
        "air_or_oxygen": OXYGEN_POINTS if x.on_oxygen else 0,
        "sbp_mmhg": band_points("sbp_mmhg", x.sbp_mmhg),
        "heart_rate": band_points("heart_rate", x.heart_rate),
        "consciousness": 0 if x.consciousness == "A" else 3,
        "temperature_c": band_points("temperature_c", temperature),
    }
    score = sum(parameters.values())
    single_3 = any(points == 3 for points in parameters.values())
    band = response_band(score, single_3)
    response = RESPONSES[band]
    risk: Risk = response["risk"]  # type: ignore[assignment]
    return News2Result(
        score=score,
        risk=risk,
        response_band=band,
        parameters=parameters,
        single_parameter_3=single_3,
        temperature_charted_c=temperature,
        monitoring=response[f"monitoring_{lang}"],
        clinical_response=response[lang],
        disclaimer=DISCLAIMER[lang],
    )


#: Parameter names in Chinese, for the reasons and cards.
PARAMETER_ZH = {
    "respiratory_rate": "呼吸频率",
    "spo2": "血氧饱和度",
    "air_or_oxygen": "吸氧",
    "on_oxygen": "是否吸氧",
    "sbp_mmhg": "收缩压",
    "heart_rate": "心率",
    "consciousness": "意识",
    "temperature_c": "体温",
}


class News2LowerBound(BaseModel):
    """NEWS2 from the parameters that were recorded: a floor, never the score.

    Every chart parameter scores 0 or more, so the points of the known parameters are the least
    the full score can be. A floor of 7, 5 or a single 3 already crosses that RCP trigger, so a
    shocked patient with one vital sign unrecorded is not left without an action level.
    """

    score_at_least: int
    parameters: dict[str, int]
    single_parameter_3: bool
    missing: list[str]


def news2_lower_bound(recorded: Mapping[str, Any]) -> News2LowerBound:
    """The least NEWS2 the recorded parameters allow; an unknown one counts its lowest points.

    ``recorded`` holds ``News2Input``'s fields by name, None (or absent) where not recorded.
    SpO2 on scale 2 depends on air or oxygen: with that unknown it takes the lower of the two.
    """
    respiratory_rate = recorded.get("respiratory_rate")
    spo2 = recorded.get("spo2")
    spo2_scale = recorded.get("spo2_scale") or 1
    on_oxygen = recorded.get("on_oxygen")
    sbp_mmhg = recorded.get("sbp_mmhg")
    heart_rate = recorded.get("heart_rate")
    consciousness = recorded.get("consciousness")
    temperature_c = recorded.get("temperature_c")
    parameters: dict[str, int] = {}
    missing: list[str] = []
    if respiratory_rate is not None:
        parameters["respiratory_rate"] = band_points("respiratory_rate", respiratory_rate)
    else:
        missing.append("respiratory_rate")
    if spo2 is None:
        missing.append("spo2")
    elif spo2_scale == 1:
        parameters["spo2"] = band_points("spo2_scale1", spo2)
    else:
        air = band_points("spo2_scale2_air", spo2)
        oxygen = band_points("spo2_scale2_oxygen", spo2)
        parameters["spo2"] = {None: min(air, oxygen), True: oxygen, False: air}[on_oxygen]
    if on_oxygen is not None:
        parameters["air_or_oxygen"] = OXYGEN_POINTS if on_oxygen else 0
    else:
        missing.append("on_oxygen")
    if sbp_mmhg is not None:
        parameters["sbp_mmhg"] = band_points("sbp_mmhg", sbp_mmhg)
    else:
        missing.append("sbp_mmhg")
    if heart_rate is not None:
        parameters["heart_rate"] = band_points("heart_rate", heart_rate)
    else:
        missing.append("heart_rate")
    if consciousness is not None:
        parameters["consciousness"] = 0 if consciousness == "A" else 3
    else:
        missing.append("consciousness")
    if temperature_c is not None:
        parameters["temperature_c"] = band_points("temperature_c", chart_temperature(temperature_c))
    else:
        missing.append("temperature_c")
    return News2LowerBound(
        score_at_least=sum(parameters.values()),
        parameters=parameters,
        single_parameter_3=any(points == 3 for points in parameters.values()),
        missing=missing,
    )


def qsofa_criteria_known(
    respiratory_rate: int | None, sbp_mmhg: int | None, consciousness: Consciousness | None
) -> dict[str, bool]:
    """The qSOFA criteria that can be judged from what was recorded (an unknown one is left out)."""
    known: dict[str, bool] = {}
    if respiratory_rate is not None:
        known["respiratory_rate_ge_22"] = respiratory_rate >= QSOFA_RR_MIN
    if sbp_mmhg is not None:
        known["sbp_le_100"] = sbp_mmhg <= QSOFA_SBP_MAX
    if consciousness is not None:
        known["altered_mentation"] = consciousness != "A"
    return known


QSOFA_TEXT = {
    "positive-infection": {
        "en": "qSOFA >= 2 with suspected infection: likely sepsis, emergency transfer.",
        "zh": "qSOFA≥2且怀疑感染：高度怀疑脓毒症，需立即转运急诊（急救）。",
    },
    "positive-unknown": {
        "en": "qSOFA >= 2: ask whether infection is suspected (qSOFA is interpreted only with "
        "suspected infection); assess for sepsis now.",
        "zh": "qSOFA≥2：请确认是否怀疑感染（qSOFA仅用于疑似感染患者）；立即评估脓毒症。",
    },
    "positive-no-infection": {
        "en": "qSOFA >= 2 but infection is not suspected: qSOFA does not apply; the abnormal "
        "signs still need assessment.",
        "zh": "qSOFA≥2但不怀疑感染：qSOFA不适用；异常体征仍需评估。",
    },
    "negative": {
        "en": "qSOFA < 2: does not rule out sepsis; reassess if the patient deteriorates.",
        "zh": "qSOFA<2：不能排除脓毒症；病情变化时重新评估。",
    },
}


def qsofa(x: QsofaInput, lang: Literal["en", "zh"] = "en") -> QsofaResult:
    """qSOFA: one point each for RR >= 22, SBP <= 100 and altered mentation (not Alert).

    Sepsis-3 defines qSOFA for adults with *suspected infection*; ``positive`` is the score
    threshold (>= 2) and ``interpretation`` says what it means given the infection answer.
    """
    criteria = qsofa_criteria_known(x.respiratory_rate, x.sbp_mmhg, x.consciousness)
    score = sum(criteria.values())
    if score < 2:
        key = "negative"
    elif x.suspected_infection is True:
        key = "positive-infection"
    elif x.suspected_infection is None:
        key = "positive-unknown"
    else:
        key = "positive-no-infection"
    return QsofaResult(
        score=score,
        positive=score >= 2,
        criteria=criteria,
        suspected_infection=x.suspected_infection,
        interpretation=QSOFA_TEXT[key][lang],
        disclaimer=DISCLAIMER[lang],
    )
