"""Readings that need action now, whatever diagnosis the patient has.

Two levels above routine care:

* ``emergency`` - call 120 / transfer now: a BP crisis with symptoms (hypertensive emergency),
  level-2 hypoglycaemia (< 3.0 mmol/L) or hypoglycaemia with altered consciousness or behaviour,
  NEWS2 >= 7, a single NEWS2 parameter scoring 3 with deterioration, qSOFA >= 2 with suspected
  infection (the last three are decided in ``assess``).
* ``urgent`` - urgent referral after first aid (国家基本公共卫生服务规范 2017 "危急情况"):
  SBP >= 180 and/or DBP >= 110 mmHg, glucose >= 16.7 or <= 3.9 mmol/L.

These BP and glucose criteria apply to every patient: a crisis reading in someone without a
recorded diagnosis is still a crisis (the 2017 lists are for managed patients; medgate applies
the readings to everyone so that it is never silent on them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from medgate.clinical.common import Reason

SPEC_2017 = (
    "国家基本公共卫生服务规范（第三版，2017）：高血压患者健康管理服务规范 / 2型糖尿病患者健康管理"
    "服务规范，危急情况（紧急转诊）"
)
CDS_2020_HYPO = (
    "中华医学会糖尿病学分会. 中国2型糖尿病防治指南（2020年版）. 中华糖尿病杂志 2021;13(4):315-409, "
    "低血糖分级：1级 3.0-<3.9 mmol/L；2级 <3.0 mmol/L；3级 伴意识和/或躯体改变的严重事件"
)
HTN_2018_EMERGENCY = (
    "中国高血压防治指南（2018年修订版）：高血压急症 = 血压显著升高（一般>180/120 mmHg）伴进行性"
    "心、脑、肾等靶器官功能不全的表现"
)

# 2017 spec: SBP >= 180 and/or DBP >= 110 mmHg; glucose >= 16.7 or <= 3.9 mmol/L.
URGENT_BP = (180, 110)
#: RCP 2017 NEWS2 chart 1: a systolic BP <= 90 scores 3 (a single 3 is an urgent response): shock,
#: or in a treated patient over-treatment; never "controlled", and never hidden behind a later
#: partial BP reading (``api.bp_reading``).
LOW_SBP = 90
RCP_NEWS2_LOW_SBP = "Royal College of Physicians. NEWS2, 2017: systolic BP <= 90 mmHg scores 3"
URGENT_GLUCOSE_HIGH = 16.7
URGENT_GLUCOSE_LOW = 3.9
# CDS 2020: level-2 hypoglycaemia below 3.0 mmol/L.
EMERGENCY_GLUCOSE_LOW = 3.0

#: Symptoms that turn a BP crisis into a hypertensive emergency (acute target-organ damage:
#: brain, eye, heart, lung; 2018 hypertension guideline, 高血压急症).
HYPERTENSIVE_EMERGENCY_SYMPTOMS = frozenset(
    {
        "severe_headache",
        "chest_pain",
        "chest_tightness",
        "dyspnoea",
        "sudden_vision_loss",
        "blurred_vision",
        "behaviour_change",
    }
)

Level = Literal["emergency", "urgent"]

PALS_2020_HYPOTENSION = (
    "American Heart Association. Pediatric Advanced Life Support Provider Manual, 2020: "
    "hypotension = SBP < 70 mmHg (infants 1-12 months), < 70 + 2 x age in years (1-10 years), "
    "< 90 mmHg (10 years and over)"
)
WHO_2013_CHILDREN = (
    "World Health Organization. Pocket book of hospital care for children, 2nd ed., 2013: "
    "emergency signs (coma, SpO2 < 90 %: give oxygen)"
)
#: WHO 2013: give oxygen below this saturation (a child's emergency sign).
CHILD_SPO2_BELOW = 90


class Criterion(BaseModel):
    """A criterion that fired and the level it calls for."""

    level: Level
    reason: Reason

    @classmethod
    def of(cls, level: Level, code: str, en: str, zh: str, source: str) -> Criterion:
        """A criterion with its reason, the two every rule builds together."""
        return cls(level=level, reason=Reason(code=code, en=en, zh=zh, source=source))


def bp_criteria(
    sbp: int | None,
    dbp: int | None,
    symptoms: list[str],
    altered_consciousness: bool,
    label: Literal["office", "home"] = "office",
) -> list[Criterion]:
    """BP crisis (2017 spec) and, with symptoms, hypertensive emergency (2018 guideline)."""
    high_s = sbp is not None and sbp >= URGENT_BP[0]
    high_d = dbp is not None and dbp >= URGENT_BP[1]
    if not (high_s or high_d):
        return []
    shown = f"{sbp if sbp is not None else '-'}/{dbp if dbp is not None else '-'}"
    where_en = "latest home BP" if label == "home" else "BP"
    where_zh = "最近一次家庭血压" if label == "home" else "血压"
    code = "home-bp-crisis" if label == "home" else "bp-crisis"
    found = [
        Criterion.of(
            "urgent",
            code,
            f"{where_en} {shown} mmHg (SBP >= 180 and/or DBP >= 110)",
            f"{where_zh} {shown} mmHg（收缩压≥180和/或舒张压≥110）",
            SPEC_2017,
        )
    ]
    organ = sorted(set(symptoms) & HYPERTENSIVE_EMERGENCY_SYMPTOMS)
    if organ or altered_consciousness:
        found.append(
            Criterion.of(
                "emergency",
                "hypertensive-emergency",
                "BP crisis with symptoms of acute organ damage: possible hypertensive emergency",
                "血压危急值伴靶器官损害症状：可能为高血压急症",
                HTN_2018_EMERGENCY,
            )
        )
    return found


def glucose_criteria(
    values: list[tuple[str, float | None]],
    altered_consciousness: bool,
) -> list[Criterion]:
    """Glucose >= 16.7 or <= 3.9 mmol/L (2017 spec); < 3.0 or hypoglycaemia with altered
    consciousness / behaviour is an emergency (CDS 2020 levels 2 and 3)."""
    found: list[Criterion] = []
    labels_zh = {"fasting": "空腹", "random": "随机", "home": "家庭监测"}
    for label, value in values:
        if value is None:
            continue
        zh_label = labels_zh.get(label, "")
        if value >= URGENT_GLUCOSE_HIGH:
            code, en_bound, zh_bound = "glucose-high", ">= 16.7", "≥16.7"
        elif value <= URGENT_GLUCOSE_LOW:
            code, en_bound, zh_bound = "glucose-low", "<= 3.9", "≤3.9"
        else:
            continue
        found.append(
            Criterion.of(
                "urgent",
                code,
                f"{label} glucose {value:g} mmol/L ({en_bound})",
                f"{zh_label}血糖 {value:g} mmol/L（{zh_bound}）",
                SPEC_2017,
            )
        )
        if code == "glucose-low" and (value < EMERGENCY_GLUCOSE_LOW or altered_consciousness):
            level_2 = value < EMERGENCY_GLUCOSE_LOW
            found.append(
                Criterion.of(
                    "emergency",
                    "severe-hypoglycaemia",
                    f"hypoglycaemia {value:g} mmol/L "
                    + (
                        "(< 3.0, level 2)"
                        if level_2
                        else "with altered consciousness or behaviour (level 3)"
                    ),
                    f"低血糖 {value:g} mmol/L"
                    + ("（<3.0，2级低血糖）" if level_2 else "伴意识或行为改变（3级低血糖）"),
                    CDS_2020_HYPO,
                )
            )
    return found


def child_hypotension_limit(age: int) -> int:
    """PALS 2020: the systolic BP below which a child of ``age`` whole years is hypotensive."""
    if age < 1:
        return 70
    if age < 10:
        return 70 + 2 * age
    return 90


def child_criteria(
    age: int, sbp: int | None, spo2: int | None, consciousness: str | None
) -> list[Criterion]:
    """Signs abnormal in a child whatever the adult scores say (no score runs under 16).

    Hypotension by the child's own age-based limit (PALS 2020) and SpO2 < 90 % or coma (WHO
    2013 emergency signs) are emergencies; responding only to voice or new confusion is urgent.
    """
    found: list[Criterion] = []
    limit = child_hypotension_limit(age)
    if sbp is not None and sbp < limit:
        found.append(
            Criterion.of(
                "emergency",
                "child-hypotension",
                f"systolic BP {sbp} mmHg below {limit} (hypotension at age {age})",
                f"收缩压 {sbp} mmHg，低于{limit}（{age}岁儿童低血压）",
                PALS_2020_HYPOTENSION,
            )
        )
    if spo2 is not None and spo2 < CHILD_SPO2_BELOW:
        found.append(
            Criterion.of(
                "emergency",
                "child-hypoxaemia",
                f"SpO2 {spo2} % (< {CHILD_SPO2_BELOW} %: give oxygen)",
                f"血氧饱和度 {spo2}%（<{CHILD_SPO2_BELOW}%，需吸氧）",
                WHO_2013_CHILDREN,
            )
        )
    if consciousness in ("P", "U"):
        found.append(
            Criterion.of(
                "emergency",
                "child-unresponsive",
                "responds only to pain or unresponsive",
                "仅对疼痛有反应或无反应",
                WHO_2013_CHILDREN,
            )
        )
    return found
