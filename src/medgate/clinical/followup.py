"""Hypertension and type 2 diabetes follow-up in primary care.

Rules of the National Basic Public Health Service Specification (国家基本公共卫生服务规范,
3rd edition, 2017: 高血压患者健康管理服务规范 and 2型糖尿病患者健康管理服务规范):

- urgent referral: SBP >= 180 and/or DBP >= 110; glucose >= 16.7 or <= 3.9 mmol/L (diabetes);
  altered consciousness; heart rate > 100/min; temperature > 39 C (diabetes); pregnancy or
  lactation; the listed acute symptoms. The patient is referred, then followed up within 2 weeks.
- controlled (office BP < 140/90, < 150/90 from age 65; fasting glucose < 7.0 mmol/L): next visit
  in 3 months.
- uncontrolled: next visit within 2 weeks; uncontrolled at two consecutive visits: routine
  referral, then a visit within 2 weeks.

Home and wearable readings are summarised; home BP is judged against the home threshold 135/85
(Chinese hypertension guideline 2018) and used for control only when no office value is given.
"""

from __future__ import annotations

import datetime as dt
from statistics import fmean
from typing import Literal

from pydantic import BaseModel, Field

from medgate.clinical.common import CalculatorInfo, make_info

SOURCE = (
    "National Health Commission of the PRC. National Basic Public Health Service Specification, "
    "3rd ed. (2017): hypertension and type 2 diabetes patient health management."
)
SOURCE_URL = "http://www.nhc.gov.cn/jws/s3578/201703/d20c37e23e1f4c7db7b8e25f34473e1b.shtml"

THRESHOLDS = {
    "office_bp_target": [140, 90],
    "office_bp_target_age_65": [150, 90],
    "home_bp_target": [135, 85],
    "urgent_bp": [180, 110],
    "fasting_glucose_target_mmol_l": 7.0,
    "urgent_glucose_high_mmol_l": 16.7,
    "urgent_glucose_low_mmol_l": 3.9,
    "urgent_heart_rate_above": 100,
    "urgent_temperature_above_c": 39.0,
    "days_controlled": 90,
    "days_uncontrolled": 14,
    "days_after_referral": 14,
    "min_home_readings": 3,
}
INFO: CalculatorInfo = make_info("primary-care-follow-up", "2017.1", THRESHOLDS, SOURCE)

Condition = Literal["hypertension", "type2_diabetes"]
Symptom = Literal[
    "severe_headache",
    "severe_dizziness",
    "nausea_vomiting",
    "blurred_vision",
    "eye_pain",
    "chest_pain",
    "palpitations",
    "dyspnoea",
    "fruity_breath",
    "profuse_sweating",
    "abdominal_pain",
    "deep_rapid_breathing",
    "polyuria_polydipsia",
    "sudden_vision_loss",
]


class BpReading(BaseModel):
    """One timestamped home / wearable blood-pressure reading."""

    time: dt.datetime
    sbp_mmhg: int = Field(ge=50, le=300)
    dbp_mmhg: int = Field(ge=20, le=200)
    heart_rate: int | None = Field(None, ge=20, le=300)


class GlucoseReading(BaseModel):
    """One timestamped home / CGM glucose reading in mmol/L."""

    time: dt.datetime
    glucose_mmol_l: float = Field(ge=0.5, le=50)
    fasting: bool = True


class FollowUpInput(BaseModel):
    conditions: list[Condition] = Field(min_length=1)
    age: int | None = Field(None, ge=18, le=120)
    sbp_mmhg: int | None = Field(None, ge=50, le=300)
    dbp_mmhg: int | None = Field(None, ge=20, le=200)
    fasting_glucose_mmol_l: float | None = Field(None, ge=0.5, le=50)
    random_glucose_mmol_l: float | None = Field(None, ge=0.5, le=50)
    heart_rate: int | None = Field(None, ge=20, le=300)
    temperature_c: float | None = Field(None, ge=25, le=45)
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    pregnant_or_lactating: bool = False
    symptoms: list[Symptom] = Field(default_factory=list)
    previous_visit_uncontrolled: bool = False
    medication_adverse_reaction: bool = False
    home_bp: list[BpReading] = Field(default_factory=list, max_length=5000)
    home_glucose: list[GlucoseReading] = Field(default_factory=list, max_length=5000)


class Reason(BaseModel):
    code: str
    en: str
    zh: str


class SeriesSummary(BaseModel):
    count: int
    first: dt.datetime
    last: dt.datetime
    mean: dict[str, float]
    minimum: dict[str, float]
    maximum: dict[str, float]
    latest: dict[str, float]
    above_target_fraction: float


class ConditionStatus(BaseModel):
    condition: Condition
    controlled: bool | None
    basis: Literal["office", "home", "none"]
    target: str
    reason: str | None = None


class FollowUpResult(BaseModel):
    urgent_referral: bool
    urgent_reasons: list[Reason]
    routine_referral: bool
    routine_reasons: list[Reason]
    status: list[ConditionStatus]
    next_follow_up_days: int
    home_bp_summary: SeriesSummary | None = None
    home_glucose_summary: SeriesSummary | None = None
    calculator: CalculatorInfo = INFO


def summarise_bp(readings: list[BpReading]) -> SeriesSummary | None:
    if not readings:
        return None
    ordered = sorted(readings, key=lambda r: r.time)
    target_s, target_d = THRESHOLDS["home_bp_target"]
    above = sum(1 for r in ordered if r.sbp_mmhg >= target_s or r.dbp_mmhg >= target_d)
    sbp = [float(r.sbp_mmhg) for r in ordered]
    dbp = [float(r.dbp_mmhg) for r in ordered]
    return SeriesSummary(
        count=len(ordered),
        first=ordered[0].time,
        last=ordered[-1].time,
        mean={"sbp_mmhg": round(fmean(sbp), 1), "dbp_mmhg": round(fmean(dbp), 1)},
        minimum={"sbp_mmhg": min(sbp), "dbp_mmhg": min(dbp)},
        maximum={"sbp_mmhg": max(sbp), "dbp_mmhg": max(dbp)},
        latest={"sbp_mmhg": sbp[-1], "dbp_mmhg": dbp[-1]},
        above_target_fraction=round(above / len(ordered), 3),
    )


def summarise_glucose(readings: list[GlucoseReading]) -> SeriesSummary | None:
    if not readings:
        return None
    ordered = sorted(readings, key=lambda r: r.time)
    values = [r.glucose_mmol_l for r in ordered]
    fasting = [r.glucose_mmol_l for r in ordered if r.fasting]
    target = THRESHOLDS["fasting_glucose_target_mmol_l"]
    above = sum(1 for v in fasting if v >= target)
    mean = {"glucose_mmol_l": round(fmean(values), 2)}
    if fasting:
        mean["fasting_glucose_mmol_l"] = round(fmean(fasting), 2)
    return SeriesSummary(
        count=len(ordered),
        first=ordered[0].time,
        last=ordered[-1].time,
        mean=mean,
        minimum={"glucose_mmol_l": min(values)},
        maximum={"glucose_mmol_l": max(values)},
        latest={"glucose_mmol_l": values[-1]},
        above_target_fraction=round(above / len(fasting), 3) if fasting else 0.0,
    )


SYMPTOM_TEXT: dict[str, tuple[str, str]] = {
    "severe_headache": ("severe headache", "剧烈头痛"),
    "severe_dizziness": ("severe dizziness", "剧烈头晕"),
    "nausea_vomiting": ("nausea or vomiting", "恶心呕吐"),
    "blurred_vision": ("blurred vision", "视力模糊"),
    "eye_pain": ("eye pain", "眼痛"),
    "chest_pain": ("chest pain", "胸痛"),
    "palpitations": ("palpitations", "心悸"),
    "dyspnoea": ("shortness of breath, cannot lie flat", "喘憋不能平卧"),
    "fruity_breath": ("fruity (ketotic) breath", "呼气有烂苹果样丙酮味"),
    "profuse_sweating": ("profuse sweating", "大汗"),
    "abdominal_pain": ("abdominal pain", "腹痛"),
    "deep_rapid_breathing": ("deep, rapid breathing", "深大呼吸"),
    "polyuria_polydipsia": ("marked thirst and polyuria", "口干多饮多尿"),
    "sudden_vision_loss": ("sudden loss of vision", "视力骤降"),
}


def _urgent(x: FollowUpInput, bp: SeriesSummary | None, glu: SeriesSummary | None) -> list[Reason]:
    reasons: list[Reason] = []
    urgent_s, urgent_d = THRESHOLDS["urgent_bp"]
    diabetes = "type2_diabetes" in x.conditions
    if (
        x.sbp_mmhg is not None
        and x.dbp_mmhg is not None
        and (x.sbp_mmhg >= urgent_s or x.dbp_mmhg >= urgent_d)
    ):
        reasons.append(
            Reason(
                code="bp-crisis",
                en=f"BP {x.sbp_mmhg}/{x.dbp_mmhg} mmHg (>= 180 and/or >= 110)",
                zh=f"血压 {x.sbp_mmhg}/{x.dbp_mmhg} mmHg（收缩压≥180 和/或舒张压≥110）",
            )
        )
    elif x.sbp_mmhg is not None and x.sbp_mmhg >= urgent_s:
        reasons.append(
            Reason(
                code="bp-crisis",
                en=f"SBP {x.sbp_mmhg} mmHg (>= 180)",
                zh=f"收缩压 {x.sbp_mmhg} mmHg（≥180）",
            )
        )
    elif x.dbp_mmhg is not None and x.dbp_mmhg >= urgent_d:
        reasons.append(
            Reason(
                code="bp-crisis",
                en=f"DBP {x.dbp_mmhg} mmHg (>= 110)",
                zh=f"舒张压 {x.dbp_mmhg} mmHg（≥110）",
            )
        )
    if bp is not None and (bp.latest["sbp_mmhg"] >= urgent_s or bp.latest["dbp_mmhg"] >= urgent_d):
        s, d = int(bp.latest["sbp_mmhg"]), int(bp.latest["dbp_mmhg"])
        reasons.append(
            Reason(
                code="home-bp-crisis",
                en=f"latest home BP {s}/{d} mmHg",
                zh=f"最近一次家庭血压 {s}/{d} mmHg",
            )
        )
    glucose_values = [("fasting", x.fasting_glucose_mmol_l), ("random", x.random_glucose_mmol_l)]
    if glu is not None:
        glucose_values.append(("latest home", glu.latest["glucose_mmol_l"]))
    if diabetes:
        high = THRESHOLDS["urgent_glucose_high_mmol_l"]
        low = THRESHOLDS["urgent_glucose_low_mmol_l"]
        for label, value in glucose_values:
            if value is None:
                continue
            if value >= high:
                reasons.append(
                    Reason(
                        code="glucose-high",
                        en=f"{label} glucose {value:g} mmol/L (>= 16.7)",
                        zh=f"血糖 {value:g} mmol/L（≥16.7）",
                    )
                )
            elif value <= low:
                reasons.append(
                    Reason(
                        code="glucose-low",
                        en=f"{label} glucose {value:g} mmol/L (<= 3.9)",
                        zh=f"血糖 {value:g} mmol/L（≤3.9）",
                    )
                )
    if x.heart_rate is not None and x.heart_rate > THRESHOLDS["urgent_heart_rate_above"]:
        reasons.append(
            Reason(
                code="tachycardia",
                en=f"heart rate {x.heart_rate}/min (> 100)",
                zh=f"心率 {x.heart_rate} 次/分（>100）",
            )
        )
    if (
        diabetes
        and x.temperature_c is not None
        and x.temperature_c > THRESHOLDS["urgent_temperature_above_c"]
    ):
        reasons.append(
            Reason(
                code="fever",
                en=f"temperature {x.temperature_c:g} C (> 39)",
                zh=f"体温 {x.temperature_c:g}℃（>39）",
            )
        )
    if x.consciousness is not None and x.consciousness != "A":
        reasons.append(
            Reason(code="altered-consciousness", en="altered consciousness", zh="意识改变")
        )
    if x.pregnant_or_lactating:
        reasons.append(Reason(code="pregnancy", en="pregnant or lactating", zh="妊娠期或哺乳期"))
    for symptom in x.symptoms:
        en, zh = SYMPTOM_TEXT[symptom]
        reasons.append(Reason(code=f"symptom-{symptom}", en=en, zh=zh))
    return reasons


def _bp_status(x: FollowUpInput, bp: SeriesSummary | None) -> ConditionStatus:
    office = THRESHOLDS["office_bp_target_age_65" if (x.age or 0) >= 65 else "office_bp_target"]
    if x.sbp_mmhg is not None and x.dbp_mmhg is not None:
        ok = x.sbp_mmhg < office[0] and x.dbp_mmhg < office[1]
        return ConditionStatus(
            condition="hypertension",
            controlled=ok,
            basis="office",
            target=f"office BP < {office[0]}/{office[1]} mmHg",
        )
    home = THRESHOLDS["home_bp_target"]
    if bp is not None and bp.count >= THRESHOLDS["min_home_readings"]:
        ok = bp.mean["sbp_mmhg"] < home[0] and bp.mean["dbp_mmhg"] < home[1]
        return ConditionStatus(
            condition="hypertension",
            controlled=ok,
            basis="home",
            target=f"mean home BP < {home[0]}/{home[1]} mmHg",
        )
    return ConditionStatus(
        condition="hypertension",
        controlled=None,
        basis="none",
        target=f"office BP < {office[0]}/{office[1]} mmHg",
        reason="no office BP (systolic and diastolic) and fewer than 3 home readings",
    )


def _glucose_status(x: FollowUpInput, glu: SeriesSummary | None) -> ConditionStatus:
    target = THRESHOLDS["fasting_glucose_target_mmol_l"]
    text = f"fasting glucose < {target} mmol/L"
    if x.fasting_glucose_mmol_l is not None:
        return ConditionStatus(
            condition="type2_diabetes",
            basis="office",
            target=text,
            controlled=x.fasting_glucose_mmol_l < target,
        )
    if glu is not None and "fasting_glucose_mmol_l" in glu.mean:
        return ConditionStatus(
            condition="type2_diabetes",
            basis="home",
            target=text,
            controlled=glu.mean["fasting_glucose_mmol_l"] < target,
        )
    return ConditionStatus(
        condition="type2_diabetes",
        controlled=None,
        basis="none",
        target=text,
        reason="no fasting glucose measured",
    )


def follow_up(x: FollowUpInput) -> FollowUpResult:
    """Control status, urgent / routine referral and the next follow-up interval."""
    bp = summarise_bp(x.home_bp)
    glu = summarise_glucose(x.home_glucose)
    urgent = _urgent(x, bp, glu)
    status: list[ConditionStatus] = []
    if "hypertension" in x.conditions:
        status.append(_bp_status(x, bp))
    if "type2_diabetes" in x.conditions:
        status.append(_glucose_status(x, glu))
    uncontrolled = [s for s in status if s.controlled is False]
    routine: list[Reason] = []
    if uncontrolled and x.previous_visit_uncontrolled:
        names = ", ".join(s.condition for s in uncontrolled)
        routine.append(
            Reason(
                code="two-uncontrolled-visits",
                en=f"{names} uncontrolled at two consecutive visits",
                zh="连续两次随访控制不满意",
            )
        )
    if x.medication_adverse_reaction and x.previous_visit_uncontrolled:
        routine.append(
            Reason(
                code="adverse-reaction",
                en="adverse drug reaction persists",
                zh="药物不良反应难以控制",
            )
        )
    if urgent or routine:
        days = THRESHOLDS["days_after_referral"]
    elif uncontrolled or x.medication_adverse_reaction or any(s.controlled is None for s in status):
        days = THRESHOLDS["days_uncontrolled"]
    else:
        days = THRESHOLDS["days_controlled"]
    return FollowUpResult(
        urgent_referral=bool(urgent),
        urgent_reasons=urgent,
        routine_referral=bool(routine) and not urgent,
        routine_reasons=routine,
        status=status,
        next_follow_up_days=int(days),
        home_bp_summary=bp,
        home_glucose_summary=glu,
    )
