"""Hypertension and type 2 diabetes follow-up in primary care.

Sources, each named next to the rule that uses it:

* ``SPEC_2017`` - 国家基本公共卫生服务规范（第三版，2017）: 高血压 / 2型糖尿病患者健康管理服务规范.
  危急情况 (urgent referral), the first-uncontrolled / two-uncontrolled / adverse-reaction
  pathway, follow-up within 2 weeks, at least 4 visits a year when controlled.
* ``HTN_2020`` - 国家基层高血压防治管理指南（2020版）: < 130/80 mmHg with diabetes or CKD (if
  tolerated); < 150/90 mmHg from age 80 (the 2017 spec says from 65: the age is configurable,
  default 65, the edition is named in the target text).
* ``DM_2022`` - 国家基层糖尿病防治管理指南（2022）: HbA1c < 7.0 %, fasting 4.4-7.0 mmol/L,
  non-fasting < 10.0 mmol/L, BP < 130/80 mmHg, LDL-C < 2.6 (< 1.8 with ASCVD) mmol/L.
* ``LIPID_2016`` - 中国成人血脂异常防治指南（2016年修订版）: LDL-C < 3.4 low/intermediate,
  < 2.6 high, < 1.8 very high risk.

Home and wearable readings are summarised; home BP is judged against 135/85 (中国高血压防治指南
2018) and used for control only when no office value is given.
"""

from __future__ import annotations

import datetime as dt
from statistics import fmean
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel, Field, computed_field, model_validator

from medgate.clinical import urgent as ur
from medgate.clinical.common import DISCLAIMER, CalculatorInfo, Reason, check_bp_pair, make_info

SOURCE = (
    "National Health Commission of the PRC. National Basic Public Health Service Specification, "
    "3rd ed. (2017): hypertension and type 2 diabetes patient health management; 国家基层高血压"
    "防治管理指南 2020; 国家基层糖尿病防治管理指南 2022; 中国成人血脂异常防治指南 2016."
)
SPEC_2017 = "国家基本公共卫生服务规范（第三版，2017）"
HTN_2020 = "国家基层高血压防治管理指南（2020版）"
DM_2022 = "国家基层糖尿病防治管理指南（2022）"
LIPID_2016 = "中国成人血脂异常防治指南（2016年修订版）"
HOME_BP_2018 = "中国高血压防治指南（2018年修订版）家庭血压"
SOURCE_URL = "http://www.nhc.gov.cn/jws/s3578/201703/d20c37e23e1f4c7db7b8e25f34473e1b.shtml"

THRESHOLDS = {
    # SPEC_2017: office BP < 140/90 (general); < 150/90 for older patients (65 in SPEC_2017,
    # 80 in HTN_2020: the age is an input, ``elderly_target_age``).
    "office_bp_target": [140, 90],
    "office_bp_target_elderly": [150, 90],
    "default_elderly_target_age": 65,
    # HTN_2020 / DM_2022: < 130/80 with diabetes or chronic kidney disease.
    "office_bp_target_diabetes_ckd": [130, 80],
    # HOME_BP_2018: mean home BP < 135/85.
    "home_bp_target": [135, 85],
    # SPEC_2017 危急情况
    "urgent_bp": [ur.URGENT_BP[0], ur.URGENT_BP[1]],
    "urgent_glucose_high_mmol_l": ur.URGENT_GLUCOSE_HIGH,
    "urgent_glucose_low_mmol_l": ur.URGENT_GLUCOSE_LOW,
    "urgent_heart_rate_above_diabetes": 100,
    "urgent_temperature_above_c_diabetes": 39.0,
    # pregnancy / lactation is urgent only with BP or glucose above normal (SPEC_2017):
    # BP >= 140/90; glucose above the WHO 1999 normal range (fasting >= 6.1, 2-h / random >= 7.8),
    # the ranges of the 中国2型糖尿病防治指南 2020 glucose-metabolism table.
    "pregnancy_bp_above": [140, 90],
    "pregnancy_fasting_glucose_above_normal": 6.1,
    "pregnancy_random_glucose_above_normal": 7.8,
    # SPEC_2017 fasting < 7.0; DM_2022 HbA1c < 7.0 %, non-fasting < 10.0 mmol/L.
    "fasting_glucose_target_mmol_l": 7.0,
    "non_fasting_glucose_target_mmol_l": 10.0,
    "hba1c_target_percent": 7.0,
    # LIPID_2016 / DM_2022 LDL-C targets by risk (mmol/L).
    "ldl_target_very_high": 1.8,
    "ldl_target_high": 2.6,
    "ldl_target_other": 3.4,
    # SPEC_2017: controlled -> next quarterly visit; otherwise within 2 weeks.
    "days_controlled": 90,
    "days_uncontrolled": 14,
    "days_after_referral": 14,
    "min_home_readings": 3,
}
INFO: CalculatorInfo = make_info("primary-care-follow-up", "2017.2", THRESHOLDS, SOURCE)

Condition = Literal["hypertension", "type2_diabetes"]
# Hypertension 危急情况 symptoms (SPEC_2017): 剧烈头痛或头晕、恶心呕吐、视力模糊、眼痛、心悸、胸闷、
# 喘憋不能平卧. Diabetes (SPEC_2017): 意识或行为改变、呼气有烂苹果样丙酮味、心悸、出汗、食欲减退、
# 恶心、呕吐、多饮、多尿、腹痛、有深大呼吸、皮肤潮红、视力突然骤降. chest_pain is medgate's
# conservative addition (not in either list); which list counts for whom: ``danger_symptoms``.
# one_sided_weakness, slurred_speech and facial_droop are the signs of a stroke (STROKE_120).
Symptom = Literal[
    "severe_headache",
    "severe_dizziness",
    "nausea_vomiting",
    "blurred_vision",
    "eye_pain",
    "chest_pain",
    "chest_tightness",
    "palpitations",
    "dyspnoea",
    "fruity_breath",
    "profuse_sweating",
    "loss_of_appetite",
    "abdominal_pain",
    "deep_rapid_breathing",
    "polyuria_polydipsia",
    "skin_flushing",
    "behaviour_change",
    "sudden_vision_loss",
    "one_sided_weakness",
    "slurred_speech",
    "facial_droop",
]


def _aware(value: dt.datetime) -> dt.datetime:
    """A reading's time must carry its UTC offset: naive and offset times cannot be ordered."""
    if value.tzinfo is None:
        raise ValueError(
            "time needs a UTC offset (for example 2024-05-01T08:00:00+08:00): without one the "
            "readings cannot be put in order"
        )
    return value


class BpReading(BaseModel):
    """One timestamped home / wearable blood-pressure reading."""

    time: Annotated[dt.datetime, AfterValidator(_aware)]
    sbp_mmhg: int = Field(ge=50, le=300)
    dbp_mmhg: int = Field(ge=20, le=200)
    heart_rate: int | None = Field(None, ge=20, le=300)

    @model_validator(mode="after")
    def _pair(self) -> BpReading:
        check_bp_pair(self.sbp_mmhg, self.dbp_mmhg, f"home reading at {self.time.isoformat()}")
        return self


class GlucoseReading(BaseModel):
    """One timestamped home / CGM glucose reading in mmol/L."""

    time: Annotated[dt.datetime, AfterValidator(_aware)]
    glucose_mmol_l: float = Field(ge=0.5, le=50)
    fasting: bool = True


class VisitHistory(BaseModel):
    """What the follow-up rules ask besides today's readings (SPEC_2017): pregnancy, symptoms,
    the previous visit, adverse reactions, complications, and the home / wearable series."""

    pregnant_or_lactating: bool = False
    symptoms: list[Symptom] = Field(default_factory=list)
    previous_visit_uncontrolled: bool = False
    medication_adverse_reaction: bool = False
    adverse_reaction_hard_to_control: bool = False
    new_or_worse_complication: bool = False
    home_bp: list[BpReading] = Field(default_factory=list, max_length=5000)
    home_glucose: list[GlucoseReading] = Field(default_factory=list, max_length=5000)
    #: glucose measured before today's values (clinic or laboratory, as a record holds them),
    #: each with its time: read only for an earlier hypoglycaemia, which a later normal value
    #: does not undo (DM 2022); CDS Hooks fills it from the record's recent glucose
    earlier_glucose: list[GlucoseReading] = Field(default_factory=list, max_length=5000)


class FollowUpInput(VisitHistory):
    conditions: list[Condition] = Field(min_length=1)
    age: int | None = Field(None, ge=18, le=120)
    elderly_target_age: int = Field(65, ge=60, le=90)
    ckd: bool = False
    ascvd: bool = False
    #: why the ASCVD risk assessment (China-PAR flow) put the person at high risk, if it did
    ascvd_high_risk_basis: str | None = None
    #: type 1 diabetes besides ``conditions``: its glucose control is not judged by these rules
    #: (SPEC_2017 manages type 2), but the BP and LDL-C targets and urgent signs of diabetes apply
    type1_diabetes: bool = False
    sbp_mmhg: int | None = Field(None, ge=20, le=300)
    dbp_mmhg: int | None = Field(None, ge=20, le=200)
    fasting_glucose_mmol_l: float | None = Field(None, ge=0.5, le=50)
    random_glucose_mmol_l: float | None = Field(None, ge=0.5, le=50)
    hba1c_percent: float | None = Field(None, ge=3, le=20)
    ldl_cholesterol_mmol_l: float | None = Field(None, ge=0.1, le=15)
    heart_rate: int | None = Field(None, ge=20, le=300)
    temperature_c: float | None = Field(None, ge=25, le=45)
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None

    @model_validator(mode="after")
    def _pair(self) -> FollowUpInput:
        check_bp_pair(self.sbp_mmhg, self.dbp_mmhg)
        return self


class SeriesSummary(BaseModel):
    count: int
    first: dt.datetime
    last: dt.datetime
    mean: dict[str, float]
    minimum: dict[str, float]
    maximum: dict[str, float]
    latest: dict[str, float]
    above_target_fraction: float


class TargetCheck(BaseModel):
    """One measure against its target, with the guideline edition that sets it."""

    measure: str
    target: str
    value: float | str | None
    met: bool | None
    source: str


#: Words of the English target text and their Chinese, longest first (``target_zh``).
TARGET_ZH: tuple[tuple[str, str], ...] = (
    ("non_fasting_glucose_mmol_l", "非空腹血糖"),
    ("fasting_glucose_mmol_l", "空腹血糖"),
    ("hba1c_percent", "糖化血红蛋白"),
    ("mean home BP", "家庭血压均值"),
    ("office BP", "诊室血压"),
    ("fasting glucose", "空腹血糖"),
    ("HbA1c", "糖化血红蛋白"),
    ("; ", "；"),
    (", ", "，"),
)


class ConditionStatus(BaseModel):
    condition: Condition
    controlled: bool | None
    basis: Literal["office", "home", "none"]
    target: str
    reason: str | None = None
    #: the reason in Chinese, where a card must show it (hypoglycaemia)
    reason_zh: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def target_zh(self) -> str:
        """The target in Chinese (for Chinese cards, which carry no English)."""
        text = self.target
        for en, zh in TARGET_ZH:
            text = text.replace(en, zh)
        return text


class FollowUpResult(BaseModel):
    urgent_referral: bool
    emergency: bool
    urgent_reasons: list[Reason]
    routine_referral: bool
    routine_reasons: list[Reason]
    status: list[ConditionStatus]
    targets: list[TargetCheck]
    next_follow_up_days: int
    advice: Reason
    home_bp_summary: SeriesSummary | None = None
    home_glucose_summary: SeriesSummary | None = None
    calculator: CalculatorInfo = INFO
    disclaimer: dict[str, str] = DISCLAIMER


def summarise_bp(readings: list[BpReading]) -> SeriesSummary | None:
    if not readings:
        return None
    ordered = sorted(readings, key=lambda r: r.time)
    target_s, target_d = _pair("home_bp_target")
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
    target = float(THRESHOLDS["fasting_glucose_target_mmol_l"])  # type: ignore[arg-type]
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
    "chest_tightness": ("chest tightness", "胸闷"),
    "palpitations": ("palpitations", "心悸"),
    "dyspnoea": ("shortness of breath, cannot lie flat", "喘憋不能平卧"),
    "fruity_breath": ("fruity (ketotic) breath", "呼气有烂苹果样丙酮味"),
    "profuse_sweating": ("profuse sweating", "大汗"),
    "loss_of_appetite": ("loss of appetite", "食欲减退"),
    "abdominal_pain": ("abdominal pain", "腹痛"),
    "deep_rapid_breathing": ("deep, rapid breathing", "深大呼吸"),
    "polyuria_polydipsia": ("marked thirst and polyuria", "口干多饮多尿"),
    "skin_flushing": ("flushed skin", "皮肤潮红"),
    "behaviour_change": ("change in behaviour", "行为改变"),
    "sudden_vision_loss": ("sudden loss of vision", "视力骤降"),
    "one_sided_weakness": (
        "weakness or numbness of one side (suspected stroke)",
        "一侧肢体无力或麻木（疑似卒中）",
    ),
    "slurred_speech": ("slurred speech (suspected stroke)", "言语不清（疑似卒中）"),
    "facial_droop": (
        "one side of the face drooping (suspected stroke)",
        "一侧口角歪斜（疑似卒中）",
    ),
}


def _t(name: str) -> float:
    return float(THRESHOLDS[name])  # type: ignore[arg-type]


def _pair(name: str) -> tuple[int, int]:
    value = THRESHOLDS[name]
    assert isinstance(value, list)
    return int(value[0]), int(value[1])


def has_diabetes(x: FollowUpInput) -> bool:
    """Diabetes of either type, for the rules that do not depend on the type."""
    return "type2_diabetes" in x.conditions or x.type1_diabetes


class DangerInputs(Protocol):
    """What the danger criteria read: today's readings, the home series and the history (the
    follow-up's input and the whole-patient summary both have these fields)."""

    sbp_mmhg: int | None
    dbp_mmhg: int | None
    fasting_glucose_mmol_l: float | None
    random_glucose_mmol_l: float | None
    heart_rate: int | None
    temperature_c: float | None
    consciousness: Literal["A", "C", "V", "P", "U"] | None
    symptoms: list[Symptom]
    pregnant_or_lactating: bool
    home_bp: list[BpReading]
    home_glucose: list[GlucoseReading]


def danger_criteria(
    x: DangerInputs, *, hypertension: bool, diabetes: bool, child: bool = False
) -> list[ur.Criterion]:
    """SPEC_2017 危急情况, each with its level: the office and latest home BP and glucose, altered
    consciousness, pregnancy with raised BP or glucose, the danger symptoms for this patient
    (``danger_symptoms``); from 16, a systolic BP <= 90 (RCP 2017) and, for diabetes of either
    type, heart rate > 100 and temperature > 39 (a child's limits: ``urgent.child_criteria``).

    One list for the follow-up of a managed patient and for the whole-patient assessment of
    anyone, so the two cannot drift apart.
    """
    altered = (x.consciousness is not None and x.consciousness != "A") or (
        "behaviour_change" in x.symptoms
    )
    found = ur.bp_criteria(x.sbp_mmhg, x.dbp_mmhg, list(x.symptoms), altered)
    if x.home_bp:
        home = max(x.home_bp, key=lambda r: r.time)
        found += ur.bp_criteria(
            home.sbp_mmhg, home.dbp_mmhg, list(x.symptoms), altered, label="home"
        )
    glucose: list[tuple[str, float | None]] = [
        ("fasting", x.fasting_glucose_mmol_l),
        ("random", x.random_glucose_mmol_l),
    ]
    if x.home_glucose:
        glucose.append(("home", max(x.home_glucose, key=lambda r: r.time).glucose_mmol_l))
    found += ur.glucose_criteria(glucose, altered)
    if diabetes and not child:
        found += diabetes_vital_criteria(x.heart_rate, x.temperature_c)
    if not child and x.sbp_mmhg is not None and x.sbp_mmhg <= ur.LOW_SBP:
        found.append(
            ur.Criterion.of(
                "urgent",
                "low-sbp",
                f"systolic BP {x.sbp_mmhg} mmHg (<= {ur.LOW_SBP})",
                f"收缩压 {x.sbp_mmhg} mmHg（≤{ur.LOW_SBP}）",
                ur.RCP_NEWS2_LOW_SBP,
            )
        )
    found += consciousness_criteria(x.consciousness)
    if x.pregnant_or_lactating:
        found += pregnancy_criteria(x)
    symptoms = danger_symptoms(x.symptoms, hypertension, diabetes, x.pregnant_or_lactating)
    return found + symptom_criteria(symptoms)


def consciousness_criteria(consciousness: str | None) -> list[ur.Criterion]:
    """SPEC_2017 意识改变: altered consciousness (C, V, P or U) is an urgent referral."""
    if consciousness is None or consciousness == "A":
        return []
    return [
        ur.Criterion.of(
            "urgent", "altered-consciousness", "altered consciousness", "意识改变", SPEC_2017
        )
    ]


def pregnancy_criteria(x: DangerInputs) -> list[ur.Criterion]:
    """SPEC_2017: pregnancy or lactation is urgent *with* BP or glucose above normal.

    Applied to every pregnant or lactating patient, diagnosis or not: raised BP in pregnancy is
    the pre-eclampsia warning, whether or not hypertension was known before.
    """
    raised = _pregnancy_raised(x)
    if raised is None:
        return []
    return [
        ur.Criterion.of(
            "urgent",
            "pregnancy",
            f"pregnant or lactating with {raised[0]}",
            f"妊娠期或哺乳期且{raised[1]}",
            SPEC_2017,
        )
    ]


def diabetes_vital_criteria(
    heart_rate: int | None, temperature_c: float | None
) -> list[ur.Criterion]:
    """SPEC_2017 diabetes list: 持续性心动过速（心率超过100次/分钟）; 体温超过39摄氏度.

    For diabetes of any type: these are signs of ketoacidosis or a hyperosmolar state, which
    type 1 diabetes meets at least as often as type 2.
    """
    found: list[ur.Criterion] = []
    if heart_rate is not None and heart_rate > _t("urgent_heart_rate_above_diabetes"):
        found.append(
            ur.Criterion.of(
                "urgent",
                "tachycardia",
                f"heart rate {heart_rate}/min (> 100, diabetes)",
                f"心率 {heart_rate} 次/分（>100）",
                SPEC_2017,
            )
        )
    if temperature_c is not None and temperature_c > _t("urgent_temperature_above_c_diabetes"):
        found.append(
            ur.Criterion.of(
                "urgent",
                "fever",
                f"temperature {temperature_c:g} C (> 39)",
                f"体温 {temperature_c:g}℃（>39）",
                SPEC_2017,
            )
        )
    return found


#: SPEC_2017's two lists of danger symptoms (危急情况): hypertension (剧烈头痛或头晕、恶心呕吐、
#: 视力模糊、眼痛、心悸、胸闷、喘憋不能平卧) and type 2 diabetes (意识或行为改变、
#: 呼气有烂苹果样丙酮味、心悸、出汗、食欲减退、恶心、呕吐、多饮、多尿、腹痛、有深大呼吸、皮肤潮红、
#: 视力骤降). Each list is applied to its own patients: loss of appetite is a ketoacidosis sign in
#: a diabetic, not a reason to transfer a hypertension-only patient.
HYPERTENSION_SYMPTOMS: frozenset[str] = frozenset(
    {
        "severe_headache",
        "severe_dizziness",
        "nausea_vomiting",
        "blurred_vision",
        "eye_pain",
        "palpitations",
        "chest_tightness",
        "dyspnoea",
    }
)
DIABETES_SYMPTOMS: frozenset[str] = frozenset(
    {
        "behaviour_change",
        "fruity_breath",
        "palpitations",
        "profuse_sweating",
        "loss_of_appetite",
        "nausea_vomiting",
        "polyuria_polydipsia",
        "abdominal_pain",
        "deep_rapid_breathing",
        "skin_flushing",
        "sudden_vision_loss",
    }
)
#: Danger symptoms urgent in anyone, diagnosis or not (medgate's choice, docs/clinical.md §7):
#: chest pain (medgate's addition) or tightness, breathlessness lying flat, altered behaviour,
#: sudden loss of vision, and the ketoacidosis signs (diabetes often first shows as
#: ketoacidosis).
UNIVERSAL_SYMPTOMS: frozenset[str] = frozenset(
    {
        "chest_pain",
        "chest_tightness",
        "dyspnoea",
        "behaviour_change",
        "sudden_vision_loss",
        "fruity_breath",
        "deep_rapid_breathing",
    }
)
#: NICE NG133 (2019), hypertension in pregnancy: symptoms of pre-eclampsia (severe headache,
#: problems with vision, severe pain just below the ribs, vomiting) - urgent in pregnancy with or
#: without raised BP.
PREGNANCY_SYMPTOMS: frozenset[str] = frozenset(
    {"severe_headache", "blurred_vision", "sudden_vision_loss", "abdominal_pain", "nausea_vomiting"}
)
NICE_NG133 = (
    "NICE guideline NG133 (2019). Hypertension in pregnancy: diagnosis and management, "
    "symptoms of pre-eclampsia"
)


def danger_symptoms(
    symptoms: list[Symptom], hypertension: bool, diabetes: bool, pregnant: bool
) -> list[Symptom]:
    """The symptoms that are danger signs for this patient: the universal ones, each
    specification list for its own patients, and the pre-eclampsia ones in pregnancy."""
    wanted = set(UNIVERSAL_SYMPTOMS) | STROKE_SYMPTOMS
    if hypertension:
        wanted |= HYPERTENSION_SYMPTOMS | {"chest_pain"}
    if diabetes:
        wanted |= DIABETES_SYMPTOMS
    if pregnant:
        wanted |= PREGNANCY_SYMPTOMS
    return [s for s in symptoms if s in wanted]


#: The signs of a stroke (中风120: 1 看1张脸, 2 查2只胳膊, 0 聆听语言 - then call 120): an
#: emergency for anyone, at any age.
STROKE_SYMPTOMS: frozenset[str] = frozenset(
    {"one_sided_weakness", "slurred_speech", "facial_droop"}
)
STROKE_120 = (
    "Zhao J, Liu R. Stroke 1-2-0: a rapid response programme for stroke in China. Lancet Neurol "
    "2017;16(1):27-28 (中风120: face asymmetry, one-arm weakness, unclear speech: call 120)"
)


def symptom_criteria(symptoms: list[Symptom]) -> list[ur.Criterion]:
    """SPEC_2017 危急情况 symptoms, each an urgent referral (the lists of both specifications);
    a stroke sign is an emergency (STROKE_120)."""
    return [
        ur.Criterion.of("emergency", f"symptom-{symptom}", *SYMPTOM_TEXT[symptom], STROKE_120)
        if symptom in STROKE_SYMPTOMS
        else ur.Criterion.of("urgent", f"symptom-{symptom}", *SYMPTOM_TEXT[symptom], SPEC_2017)
        for symptom in symptoms
    ]


def _pregnancy_raised(x: DangerInputs) -> tuple[str, str] | None:
    """SPEC_2017: pregnancy / lactation counts *with* BP or glucose above normal.

    Office values and the latest home reading alike: a home BP of 160/100 in pregnancy is the
    pre-eclampsia warning the rule is for, whether or not it was measured in the clinic.
    """
    s, d = _pair("pregnancy_bp_above")
    pairs = [(x.sbp_mmhg, x.dbp_mmhg)]
    if x.home_bp:
        home = max(x.home_bp, key=lambda r: r.time)
        pairs.append((home.sbp_mmhg, home.dbp_mmhg))
    for systolic, diastolic in pairs:
        if (systolic is not None and systolic >= s) or (diastolic is not None and diastolic >= d):
            return "BP above normal (>= 140/90)", "血压高于正常（≥140/90 mmHg）"
    fasting_limit = _t("pregnancy_fasting_glucose_above_normal")
    random_limit = _t("pregnancy_random_glucose_above_normal")
    readings = [(x.fasting_glucose_mmol_l, fasting_limit), (x.random_glucose_mmol_l, random_limit)]
    if x.home_glucose:
        latest = max(x.home_glucose, key=lambda r: r.time)
        limit = fasting_limit if latest.fasting else random_limit
        readings.append((latest.glucose_mmol_l, limit))
    if any(value is not None and value >= limit for value, limit in readings):
        return "glucose above normal", "血糖高于正常"
    return None


def bp_target(x: FollowUpInput) -> tuple[tuple[int, int], str]:
    """Office BP target and the edition that sets it.

    Older patients first (tolerance): ``elderly_target_age`` and over -> < 150/90 (SPEC_2017 at
    65, HTN_2020 at 80); then diabetes or CKD -> < 130/80 (HTN_2020, DM_2022); else < 140/90.
    """
    if x.age is not None and x.age >= x.elderly_target_age:
        edition = SPEC_2017 if x.elderly_target_age < 80 else HTN_2020
        return _pair("office_bp_target_elderly"), f"{edition}, age >= {x.elderly_target_age}"
    if has_diabetes(x) or x.ckd:
        return _pair("office_bp_target_diabetes_ckd"), f"{HTN_2020}; {DM_2022}"
    return _pair("office_bp_target"), SPEC_2017


def _bp_result(
    measure: str,
    basis: Literal["office", "home", "none"],
    target: str,
    value: str | None,
    met: bool | None,
    source: str,
    reason: str | None = None,
) -> tuple[ConditionStatus, TargetCheck]:
    """The hypertension status and its BP target check, from one target and one result."""
    status = ConditionStatus(
        condition="hypertension", controlled=met, basis=basis, target=target, reason=reason
    )
    return status, TargetCheck(measure=measure, target=target, value=value, met=met, source=source)


def _bp_status(x: FollowUpInput, bp: SeriesSummary | None) -> tuple[ConditionStatus, TargetCheck]:
    (ts, td), source = bp_target(x)
    text = f"office BP < {ts}/{td} mmHg"
    if x.sbp_mmhg is not None and x.dbp_mmhg is not None:
        ok = x.sbp_mmhg < ts and x.dbp_mmhg < td
        return _bp_result("office_bp", "office", text, f"{x.sbp_mmhg}/{x.dbp_mmhg}", ok, source)
    hs, hd = _pair("home_bp_target")
    if bp is not None and bp.count >= _t("min_home_readings"):
        sbp, dbp = bp.mean["sbp_mmhg"], bp.mean["dbp_mmhg"]
        home = f"mean home BP < {hs}/{hd} mmHg"
        return _bp_result(
            "home_bp", "home", home, f"{sbp:g}/{dbp:g}", sbp < hs and dbp < hd, HOME_BP_2018
        )
    return _bp_result(
        "office_bp",
        "none",
        text,
        None,
        None,
        source,
        "no office BP (systolic and diastolic) and fewer than 3 home readings",
    )


def below_target(
    measure: str, value: float | None, limit: float, unit: str, source: str
) -> TargetCheck:
    """A "< limit" target and whether the value meets it (``met`` None when no value)."""
    return TargetCheck(
        measure=measure,
        target=f"< {limit:g} {unit}",
        value=value,
        met=None if value is None else value < limit,
        source=source,
    )


def _glucose_status(
    x: FollowUpInput, glu: SeriesSummary | None
) -> tuple[ConditionStatus, list[TargetCheck]]:
    """Controlled when every glycaemic measure given meets its target (SPEC_2017, DM_2022)."""
    checks: list[TargetCheck] = []
    basis: Literal["office", "home", "none"] = "office"
    fasting_target = _t("fasting_glucose_target_mmol_l")
    fasting = x.fasting_glucose_mmol_l
    if fasting is None and glu is not None and "fasting_glucose_mmol_l" in glu.mean:
        fasting, basis = glu.mean["fasting_glucose_mmol_l"], "home"
    measures = (
        ("fasting_glucose_mmol_l", fasting, fasting_target, "mmol/L", SPEC_2017),
        (
            "non_fasting_glucose_mmol_l",
            x.random_glucose_mmol_l,
            _t("non_fasting_glucose_target_mmol_l"),
            "mmol/L",
            DM_2022,
        ),
        ("hba1c_percent", x.hba1c_percent, _t("hba1c_target_percent"), "%", DM_2022),
    )
    for measure, value, limit, unit, source in measures:
        if value is not None:
            check = below_target(measure, value, limit, unit, source)
            if measure != "hba1c_percent" and value <= ur.URGENT_GLUCOSE_LOW:
                check = check.model_copy(update={"met": False})  # low is not "on target"
            checks.append(check)
    target = "; ".join(f"{c.measure} {c.target}" for c in checks) or (
        f"fasting glucose < {fasting_target:g} mmol/L, HbA1c < 7 %"
    )
    lowest = _lowest_glucose(x)
    if lowest is not None:
        # DM_2022: hypoglycaemia means the treatment is reviewed, whatever the averages say
        return (
            ConditionStatus(
                condition="type2_diabetes",
                controlled=False,
                basis=basis,
                target=target,
                reason=f"hypoglycaemia: glucose {lowest:g} mmol/L (<= {ur.URGENT_GLUCOSE_LOW:g}): "
                "review the treatment",
                reason_zh=f"低血糖：血糖 {lowest:g} mmol/L"
                f"（≤{ur.URGENT_GLUCOSE_LOW:g}），需调整治疗",
            ),
            checks,
        )
    if not checks:
        return (
            ConditionStatus(
                condition="type2_diabetes",
                controlled=None,
                basis="none",
                target=target,
                reason="no fasting or non-fasting glucose and no HbA1c",
            ),
            checks,
        )
    controlled = all(bool(c.met) for c in checks)
    return (
        ConditionStatus(
            condition="type2_diabetes", controlled=controlled, basis=basis, target=target
        ),
        checks,
    )


def _lowest_glucose(x: FollowUpInput) -> float | None:
    """The lowest glucose at or below 3.9 mmol/L among today's values, every home reading and
    every earlier value sent: an earlier hypoglycaemia is not hidden by a later normal one."""
    values = [x.fasting_glucose_mmol_l, x.random_glucose_mmol_l]
    values += [r.glucose_mmol_l for r in (*x.home_glucose, *x.earlier_glucose)]
    low = [v for v in values if v is not None and v <= ur.URGENT_GLUCOSE_LOW]
    return min(low) if low else None


def ldl_target(x: FollowUpInput) -> tuple[float, str]:
    """LDL-C target of a followed-up patient (``ldl_target_by_risk``)."""
    return ldl_target_by_risk(x.ascvd, has_diabetes(x) or x.ckd, x.ascvd_high_risk_basis)


def ldl_target_by_risk(
    ascvd: bool, diabetes_or_ckd: bool, high_risk_basis: str | None
) -> tuple[float, str]:
    """LDL-C target by risk: ASCVD < 1.8; diabetes, CKD, or high risk by the ASCVD risk
    assessment (10-year, direct or lifetime) < 2.6 (DM_2022; LIPID_2016 table); otherwise < 3.4
    (LIPID_2016 low/intermediate). One rule for the follow-up and for every other patient."""
    if ascvd:
        return _t("ldl_target_very_high"), f"{LIPID_2016} very high risk (ASCVD); {DM_2022}"
    if diabetes_or_ckd:
        return _t("ldl_target_high"), f"{LIPID_2016} high risk (diabetes / CKD); {DM_2022}"
    if high_risk_basis:
        return _t("ldl_target_high"), f"{LIPID_2016} high risk ({high_risk_basis})"
    return _t("ldl_target_other"), f"{LIPID_2016} low / intermediate risk"


ADVICE: dict[str, tuple[str, str]] = {
    "emergency": (
        "Emergency: call 120 / transfer now; follow up within {days} days.",
        "急救：立即拨打120或立即转运；{days}天内随访转诊情况。",
    ),
    "urgent": (
        "Urgent referral after first aid; follow up the referral within {days} days.",
        "紧急转诊（处理后）；{days}天内主动随访转诊情况。",
    ),
    "routine": (
        "Refer to a specialist; follow up within {days} days.",
        "建议转诊至上级医院；{days}天内主动随访转诊情况。",
    ),
    "uncontrolled": (
        "Not controlled (or adverse drug reaction): adjust treatment; next visit within "
        "{days} days.",
        "控制不满意或出现药物不良反应：调整治疗，{days}天内随访。",
    ),
    "unknown": (
        "Control cannot be judged from the values given: measure and review within {days} days.",
        "现有数据无法判断控制情况：{days}天内复测并随访。",
    ),
    "controlled": (
        "Controlled: next follow-up in {days} days (at least 4 visits a year).",
        "控制满意：{days}天后随访（每年至少4次）。",
    ),
}


def follow_up(x: FollowUpInput) -> FollowUpResult:
    """Control status, urgent / routine referral and the next follow-up interval (SPEC_2017)."""
    bp = summarise_bp(x.home_bp)
    glu = summarise_glucose(x.home_glucose)
    criteria = danger_criteria(
        x, hypertension="hypertension" in x.conditions, diabetes=has_diabetes(x)
    )
    status: list[ConditionStatus] = []
    targets: list[TargetCheck] = []
    if "hypertension" in x.conditions:
        bp_status, bp_check = _bp_status(x, bp)
        status.append(bp_status)
        targets.append(bp_check)
    if "type2_diabetes" in x.conditions:
        glucose_status, checks = _glucose_status(x, glu)
        status.append(glucose_status)
        targets += checks
    limit, source = ldl_target(x)
    targets.append(
        below_target("ldl_cholesterol_mmol_l", x.ldl_cholesterol_mmol_l, limit, "mmol/L", source)
    )
    uncontrolled = [s for s in status if s.controlled is False]
    routine: list[Reason] = []
    # SPEC_2017: 连续两次出现控制不满意或药物不良反应难以控制以及出现新的并发症或原有并发症
    # 加重 -> 转诊
    if uncontrolled and x.previous_visit_uncontrolled:
        names = ", ".join(s.condition for s in uncontrolled)
        routine.append(
            Reason(
                code="two-uncontrolled-visits",
                en=f"{names} uncontrolled at two consecutive visits",
                zh="连续两次随访控制不满意",
                source=SPEC_2017,
            )
        )
    if x.adverse_reaction_hard_to_control:
        routine.append(
            Reason(
                code="adverse-reaction",
                en="adverse drug reaction hard to control",
                zh="药物不良反应难以控制",
                source=SPEC_2017,
            )
        )
    if x.new_or_worse_complication:
        routine.append(
            Reason(
                code="complication",
                en="new complication or worsening of a known one",
                zh="出现新的并发症或原有并发症加重",
                source=SPEC_2017,
            )
        )
    emergency = any(c.level == "emergency" for c in criteria)
    urgent = [c.reason for c in sorted(criteria, key=lambda c: c.level != "emergency")]
    if emergency:
        key = "emergency"
    elif urgent:
        key = "urgent"
    elif routine:
        key = "routine"
    elif uncontrolled or x.medication_adverse_reaction:
        key = "uncontrolled"
    elif any(s.controlled is None for s in status):
        key = "unknown"
    else:
        key = "controlled"
    days = int(_t("days_controlled" if key == "controlled" else "days_uncontrolled"))
    if key in ("emergency", "urgent", "routine"):
        days = int(_t("days_after_referral"))
    en, zh = ADVICE[key]
    return FollowUpResult(
        urgent_referral=bool(urgent),
        emergency=emergency,
        urgent_reasons=urgent,
        routine_referral=bool(routine) and not urgent,
        routine_reasons=routine,
        status=status,
        targets=targets,
        next_follow_up_days=days,
        advice=Reason(code=key, en=en.format(days=days), zh=zh.format(days=days), source=SPEC_2017),
        home_bp_summary=bp,
        home_glucose_summary=glu,
    )


def after_referral(
    result: FollowUpResult, level: Literal["emergency", "urgent", "routine"]
) -> FollowUpResult:
    """The follow-up when another rule (NEWS2, qSOFA, a reading) refers the patient.

    SPEC_2017 follows every referral up within 2 weeks, so the visit interval and advice follow
    the most severe referral: the answer never says "next visit in 90 days" beside "call 120".
    The control status and targets stay as measured.
    """
    order = {"emergency": 0, "urgent": 1, "routine": 2}
    if order.get(result.advice.code, 3) <= order[level]:
        return result
    days = int(_t("days_after_referral"))
    en, zh = ADVICE[level]
    advice = Reason(code=level, en=en.format(days=days), zh=zh.format(days=days), source=SPEC_2017)
    return result.model_copy(
        update={
            "next_follow_up_days": days,
            "advice": advice,
            # the flags say what the advice says, so a system reading them sees the referral
            "emergency": level == "emergency",
            "urgent_referral": level in ("emergency", "urgent"),
            "routine_referral": level == "routine",
        }
    )
