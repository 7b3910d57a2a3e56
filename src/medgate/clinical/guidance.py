"""Plain-language guidance for the primary-care doctor, from versioned rules citing guidelines.

Each rule turns AI findings into one ``GuidanceStatement``: what to do, how soon, in Chinese and
English, with the guideline it follows and a reminder that it is an AI result a radiologist must
confirm. The rules are deliberately few and literal; they never diagnose, they route.

Boundaries (golden-tested in tests/reports/test_guidance.py and tests/clinical/):

* Fleischner Society 2017 (MacMahon 2017, Table 1): nodule size = mean of long and short axes
  (or the single diameter), rounded to the nearest whole millimetre (Bankier 2017) *before* the
  row is chosen: solid < 6 mm (<= 5 after rounding), 6-8 mm, > 8 mm (>= 9); subsolid < 6 / >= 6.
  Unknown patient risk -> the high-risk advice, said so. The nodule type is stated; a nodule the
  AI did not type gets the solid table and the words "type not assessed" (type words are read by
  ``clinical.findings.nodule_type``: non-solid / ground-glass / GGN / GGO, part-solid /
  semi-solid, subsolid, solid, whatever the separators).
* Cardiothoracic ratio ``> 0.5`` (strictly) suggests an enlarged heart on a PA radiograph only;
  on AP, lateral, supine or decubitus films the ratio is not judged (said so); with the
  projection not recorded the advice is given with the PA condition stated. A ratio outside
  (0, 1) is implausible: said so, never judged. A present cardiomegaly finding always gets a
  statement: never "no abnormality", whatever the ratio or the projection.
* Pneumothorax present: emergency. Pleural effusion present: further work-up soon.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from medgate.clinical.context import StudyContext
from medgate.clinical.findings import axis_kind, finding_is, measurement_is_ctr, nodule_type
from medgate.models.findings import Finding, GuidanceStatement, Measurement, StudyResult

RULESET_VERSION = "2026.1"

Urgency = Literal["emergency", "urgent", "soon", "routine", "none"]
URGENCY_ORDER: dict[str, int] = {"emergency": 0, "urgent": 1, "soon": 2, "routine": 3, "none": 4}

AI_NOTE = {
    "en": "This is an AI result and must be confirmed by a radiologist.",
    "zh": "以上为AI辅助结果，须经放射科医生确认。",
}


@dataclass(frozen=True)
class Rule:
    """A guidance rule's identity: statements carry its id, version and guideline citation."""

    rule_id: str
    version: str
    guideline: str


FLEISCHNER = Rule(
    "fleischner-2017-solid-nodule",
    "2.1",
    "MacMahon H, et al. Guidelines for Management of Incidental Pulmonary Nodules Detected on CT "
    "Images: From the Fleischner Society 2017. Radiology 2017;284(1):228-243 (Table 1). "
    "Measurement: Bankier AA, et al. Recommendations for Measuring Pulmonary Nodules at CT: "
    "A Statement from the Fleischner Society. Radiology 2017;285(2):584-600.",
)
FLEISCHNER_SUBSOLID = Rule(
    "fleischner-2017-subsolid-nodule",
    "2.1",
    FLEISCHNER.guideline,
)
CTR_RULE = Rule(
    "ctr-enlarged-heart",
    "2.1",
    "Cardiothoracic ratio > 0.5 on a PA chest radiograph suggests cardiomegaly (Danzer 1919); "
    "echocardiography for suspected heart failure: 2021 ESC Heart Failure Guidelines; "
    "Chinese Guidelines for the Diagnosis and Treatment of Heart Failure 2018.",
)
PNEUMOTHORAX_RULE = Rule(
    "pneumothorax-referral",
    "1.0",
    "BTS Guideline for Pleural Disease 2023 (Roberts ME, et al. Thorax 2023;78:s1-s42).",
)
EFFUSION_RULE = Rule(
    "effusion-workup",
    "1.0",
    "BTS Guideline for Pleural Disease 2023 (Roberts ME, et al. Thorax 2023;78:s1-s42).",
)
OTHER_RULE = Rule(
    "other-finding",
    "1.0",
    "medgate reporting policy: every AI finding is reviewed by a radiologist.",
)
NO_FINDING_RULE = Rule(
    "no-finding", "1.0", "medgate reporting policy: every AI finding is reviewed by a radiologist."
)
RULES: tuple[Rule, ...] = (
    FLEISCHNER,
    FLEISCHNER_SUBSOLID,
    CTR_RULE,
    PNEUMOTHORAX_RULE,
    EFFUSION_RULE,
    OTHER_RULE,
    NO_FINDING_RULE,
)

CTR_LIMIT = 0.5
FLEISCHNER_MIN_AGE = 35


# ----------------------------------------------------------------------------- helpers
def _statement(rule: Rule, urgency: Urgency, en: str, zh: str) -> GuidanceStatement:
    return GuidanceStatement(
        rule_id=rule.rule_id,
        rule_version=f"{RULESET_VERSION}/{rule.version}",
        urgency=urgency,
        text={"zh": f"{zh}{AI_NOTE['zh']}", "en": f"{en} {AI_NOTE['en']}"},
        guideline=rule.guideline,
    )


def _findings(study: StudyResult) -> list[Finding]:
    return [finding for result in study.model_results for finding in result.findings]


def _measurements(study: StudyResult) -> Iterable[Measurement]:
    for result in study.model_results:
        yield from result.measurements
        for finding in result.findings:
            yield from finding.measurements


def nodule_size_mm(finding: Finding) -> float | None:
    """The measured size: mean of long and short axis, else the diameter (unrounded)."""
    sizes: dict[str, float] = {}
    for measurement in finding.measurements:
        kind = axis_kind(measurement)
        if kind is not None:
            sizes[kind] = max(sizes.get(kind, 0.0), measurement.value)
    if "long" in sizes and "short" in sizes:
        return (sizes["long"] + sizes["short"]) / 2.0
    for kind in ("diameter", "long"):
        if kind in sizes:
            return sizes[kind]
    return None


def fleischner_size_mm(size_mm: float) -> int:
    """Bankier 2017: the average diameter is rounded to the nearest whole millimetre (half up)."""
    return int(Decimal(repr(size_mm)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def fleischner_category(size_mm: float) -> Literal["<6", "6-8", ">8"]:
    """Fleischner 2017 solid size band on the *rounded* size: <6, 6-8 (both ends), >8 mm."""
    rounded = fleischner_size_mm(size_mm)
    if rounded < 6:
        return "<6"
    if rounded <= 8:
        return "6-8"
    return ">8"


def subsolid_category(size_mm: float) -> Literal["<6", ">=6"]:
    """Fleischner 2017 subsolid size band on the rounded size: <6 or >=6 mm."""
    return "<6" if fleischner_size_mm(size_mm) < 6 else ">=6"


# (category, multiple, risk) -> (urgency, en, zh); MacMahon 2017, Table 1 A, solid nodules.
_FLEISCHNER_TABLE: dict[tuple[str, bool, str], tuple[Urgency, str, str]] = {
    # Table 1 A, single solid < 6 mm: low risk "No routine follow-up"
    ("<6", False, "low"): ("routine", "No routine follow-up CT is needed.", "无需常规CT随访。"),
    # Table 1 A, single solid < 6 mm: high risk "Optional CT at 12 months"
    ("<6", False, "high"): (
        "routine",
        "Optional follow-up chest CT at 12 months.",
        "可选择在12个月时复查胸部CT。",
    ),
    # Table 1 A, single solid 6-8 mm: low "CT at 6-12 months, then consider CT at 18-24 months"
    ("6-8", False, "low"): (
        "routine",
        "Follow-up chest CT at 6-12 months, then consider CT at 18-24 months.",
        "6-12个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    # Table 1 A, single solid 6-8 mm: high "CT at 6-12 months, then CT at 18-24 months"
    ("6-8", False, "high"): (
        "routine",
        "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
        "6-12个月复查胸部CT，并在18-24个月再次复查。",
    ),
    # Table 1 A, single solid > 8 mm, low and high: "Consider CT at 3 months, PET/CT, or tissue
    # sampling"
    (">8", False, "low"): (
        "soon",
        "Within 2 weeks, refer to a respiratory or thoracic specialist: consider CT at 3 months, "
        "PET/CT or tissue sampling.",
        "请在2周内转诊呼吸科或胸外科：考虑3个月复查CT、PET/CT或组织活检。",
    ),
    # Table 1 A, multiple solid < 6 mm: low "No routine follow-up"; high "Optional CT at 12 months"
    ("<6", True, "low"): ("routine", "No routine follow-up CT is needed.", "无需常规CT随访。"),
    ("<6", True, "high"): (
        "routine",
        "Optional follow-up chest CT at 12 months.",
        "可选择在12个月时复查胸部CT。",
    ),
    # Table 1 A, multiple solid 6-8 mm: low "CT at 3-6 months, then consider CT at 18-24 months"
    ("6-8", True, "low"): (
        "routine",
        "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months.",
        "3-6个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    # Table 1 A, multiple solid 6-8 mm: high "CT at 3-6 months, then at 18-24 months"
    ("6-8", True, "high"): (
        "routine",
        "Follow-up chest CT at 3-6 months, then CT at 18-24 months.",
        "3-6个月复查胸部CT，并在18-24个月再次复查。",
    ),
    # Table 1 A, multiple solid > 8 mm: low "CT at 3-6 months, then consider CT at 18-24 months"
    (">8", True, "low"): (
        "soon",
        "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months; refer to a "
        "respiratory specialist within 2 weeks.",
        "3-6个月复查胸部CT，之后考虑在18-24个月再次复查；请在2周内转诊呼吸科。",
    ),
    # Table 1 A, multiple solid > 8 mm: high "CT at 3-6 months, then at 18-24 months"
    (">8", True, "high"): (
        "soon",
        "Follow-up chest CT at 3-6 months, then CT at 18-24 months; refer to a respiratory "
        "specialist within 2 weeks.",
        "3-6个月复查胸部CT，并在18-24个月再次复查；请在2周内转诊呼吸科。",
    ),
}
_FLEISCHNER_TABLE[(">8", False, "high")] = _FLEISCHNER_TABLE[(">8", False, "low")]

# (type, category, multiple) -> (en, zh); MacMahon 2017, Table 1 B, subsolid nodules (no risk
# groups). Multiple subsolid nodules share one row whatever their type.
_SUBSOLID_TABLE: dict[tuple[str, str, bool], tuple[str, str]] = {
    # Table 1 B, single ground glass < 6 mm: "No routine follow-up"
    ("ground_glass", "<6", False): ("No routine follow-up CT is needed.", "无需常规CT随访。"),
    # Table 1 B, single ground glass >= 6 mm: "CT at 6-12 months to confirm persistence, then CT
    # every 2 years until 5 years"
    ("ground_glass", ">=6", False): (
        "Follow-up chest CT at 6-12 months to confirm persistence, then CT every 2 years until "
        "5 years.",
        "6-12个月复查胸部CT确认是否持续存在，之后每2年复查一次CT，直至满5年。",
    ),
    # Table 1 B, single part solid < 6 mm: "No routine follow-up"
    ("part_solid", "<6", False): ("No routine follow-up CT is needed.", "无需常规CT随访。"),
    # Table 1 B, single part solid >= 6 mm: "CT at 3-6 months to confirm persistence. If
    # unchanged and solid component remains < 6 mm, annual CT should be performed for 5 years"
    ("part_solid", ">=6", False): (
        "Follow-up chest CT at 3-6 months to confirm persistence; if unchanged and the solid "
        "component remains < 6 mm, annual CT for 5 years.",
        "3-6个月复查胸部CT确认是否持续存在；如无变化且实性成分仍<6毫米，每年复查CT，共5年。",
    ),
    # Table 1 B, multiple subsolid < 6 mm: "CT at 3-6 months. If stable, consider CT at 2 and
    # 4 years"
    ("any", "<6", True): (
        "Follow-up chest CT at 3-6 months; if stable, consider CT at 2 and 4 years.",
        "3-6个月复查胸部CT；如稳定，考虑在第2年和第4年复查CT。",
    ),
    # Table 1 B, multiple subsolid >= 6 mm: "CT at 3-6 months. Subsequent management based on
    # the most suspicious nodule(s)"
    ("any", ">=6", True): (
        "Follow-up chest CT at 3-6 months; further management by the most suspicious nodule.",
        "3-6个月复查胸部CT；之后按最可疑的结节处理。",
    ),
}
_SUBSOLID_TABLE[("ground_glass", "<6", True)] = _SUBSOLID_TABLE[("any", "<6", True)]

TYPE_TEXT = {
    "solid": ("solid", "实性"),
    "ground_glass": ("pure ground-glass", "纯磨玻璃"),
    "part_solid": ("part-solid", "部分实性"),
}


# ----------------------------------------------------------------------------- rules
def _nodule_guidance(
    nodules: list[Finding], patient_age: int | None, risk: str | None
) -> GuidanceStatement:
    measured = [(size, f) for f, size in ((f, nodule_size_mm(f)) for f in nodules) if size]
    count = len(nodules)
    count_en = f" (largest of {count})" if count > 1 else ""
    count_zh = f"（共{count}个，取最大者）" if count > 1 else ""
    if patient_age is not None and patient_age < FLEISCHNER_MIN_AGE:
        return _statement(
            FLEISCHNER,
            "routine",
            f"AI found a lung nodule{count_en}. The Fleischner guidance applies from age "
            f"{FLEISCHNER_MIN_AGE}; this patient is {patient_age}: agree follow-up with the "
            "radiologist at the routine report.",
            f"AI发现肺结节{count_zh}。Fleischner指南适用于{FLEISCHNER_MIN_AGE}岁及以上患者，"
            f"本患者{patient_age}岁：请在常规报告时与放射科医生商定随访方案。",
        )
    if not measured:
        return _statement(
            FLEISCHNER,
            "routine",
            f"AI found a lung nodule{count_en} but could not measure it: ask the radiologist for "
            "its size, then follow the Fleischner 2017 table.",
            f"AI发现肺结节{count_zh}但未能测量大小：请放射科医生测量后按Fleischner 2017指南随访。",
        )
    size, largest = max(measured, key=lambda item: item[0])
    rounded = fleischner_size_mm(size)
    kind = nodule_type(largest)
    multiple = count > 1
    size_en = f"{size:.1f} mm (rounded to {rounded} mm)"
    size_zh = f"{size:.1f}毫米（取整为{rounded}毫米）"
    if kind in ("ground_glass", "part_solid"):
        sub_category = subsolid_category(size)
        row = ("any" if multiple else kind, sub_category, multiple)
        action_en, action_zh = _SUBSOLID_TABLE[row]
        type_en, type_zh = TYPE_TEXT[kind]
        band = {"<6": "< 6 mm", ">=6": ">= 6 mm"}[sub_category]
        band_zh = {"<6": "<6毫米", ">=6": "≥6毫米"}[sub_category]
        en = [
            f"AI found a {type_en} (subsolid) lung nodule of {size_en}{count_en} (Fleischner "
            f"subsolid band {band}). {action_en}"
        ]
        zh = [
            f"AI发现肺部{type_zh}（亚实性）结节，大小{size_zh}{count_zh}（Fleischner亚实性结节"
            f"分级{band_zh}）。{action_zh}"
        ]
        rule = FLEISCHNER_SUBSOLID
        urgency: Urgency = "routine"
    else:
        category = fleischner_category(size)
        used_risk = risk or "high"
        urgency, action_en, action_zh = _FLEISCHNER_TABLE[(category, multiple, used_risk)]
        band = {"<6": "< 6 mm", "6-8": "6-8 mm", ">8": "> 8 mm"}[category]
        band_zh = {"<6": "<6毫米", "6-8": "6-8毫米", ">8": ">8毫米"}[category]
        risk_en = {"low": "low-risk", "high": "high-risk"}[used_risk]
        risk_zh = {"low": "低风险", "high": "高风险"}[used_risk]
        if kind == "solid":
            type_en, type_zh = "solid lung nodule", "肺部实性结节"
        else:
            type_en, type_zh = "lung nodule", "肺结节"
        en = [
            f"AI found a {type_en} of {size_en}{count_en} (Fleischner solid-nodule band {band}, "
            f"{risk_en} patient). {action_en}"
        ]
        zh = [
            f"AI发现{type_zh}，大小{size_zh}{count_zh}（Fleischner实性结节分级{band_zh}，"
            f"{risk_zh}患者）。{action_zh}"
        ]
        if kind is None:
            en.append(
                "Nodule type (solid / subsolid) not assessed by the AI: the solid-nodule table "
                "is shown; if the radiologist reports a ground-glass or part-solid nodule, the "
                "Fleischner subsolid table applies instead."
            )
            zh.append(
                "AI未判断结节类型（实性/亚实性）：以上按实性结节给出；如放射科医生报告为磨玻璃或"
                "部分实性结节，应改按Fleischner亚实性结节建议处理。"
            )
        rule = FLEISCHNER
        if risk is None:
            en.append(
                "Patient risk was not given, so the high-risk advice is shown (Fleischner: when "
                "risk is unknown, manage as high risk)."
            )
            zh.append("未提供患者风险分层，按高风险给出建议（风险不明时按高风险处理）。")
    if patient_age is None:
        en.append("Patient age was not given; the advice assumes an adult aged 35 or older.")
        zh.append("未提供患者年龄，以上建议按35岁及以上成人给出。")
    en.append("Not for lung cancer screening, known cancer or immunosuppressed patients.")
    zh.append("不适用于肺癌筛查、已知恶性肿瘤或免疫抑制患者。")
    return _statement(rule, urgency, " ".join(en), "".join(zh))


def _number(value: float, limit: float | None = None) -> str:
    """A measured value for the text, without exponent notation (no Latin letters in Chinese).

    Three significant digits, more where needed so the value shown lies on the same side of
    ``limit`` as the value itself: 0.5004 against 0.5 is "0.5004", never "0.5" (which would read
    "0.5 > 0.5"); 0.49996 is "0.49996".
    """
    if not math.isfinite(value):
        return "?"
    for digits in range(3, 18):
        shown = f"{value:.{digits}g}"
        if "e" in shown:
            shown = f"{value:.{digits + 4}f}".rstrip("0").rstrip(".")
        if limit is None or (
            (float(shown) > limit) == (value > limit)
            and (float(shown) == limit) == (value == limit)
        ):
            return shown
    return repr(value)


def ctr_is_plausible(value: float) -> bool:
    """A cardiothoracic ratio lies strictly between 0 and 1; anything else (55 written as a
    percentage, 1.2, 0, a negative or non-finite number) is not a ratio and is not judged."""
    return 0.0 < value < 1.0


def _unjudged_view(context: StudyContext) -> tuple[str, str, str, str] | None:
    """(view, view in Chinese, reason, reason in Chinese) for a projection on which the
    cardiothoracic ratio is not defined, else None (PA, or the projection not recorded)."""
    magnify = ("AP and supine films magnify the heart", "前后位或仰卧位片会放大心影")
    if context.decubitus:
        return (
            "decubitus",
            "侧卧位",
            "decubitus films magnify and displace the heart",
            "侧卧位片会放大并移位心影",
        )
    if context.supine:
        return ("supine", "仰卧位", *magnify)
    if context.projection == "AP":
        return ("AP", "前后位（AP）", *magnify)
    if context.projection == "lateral":
        return (
            "lateral",
            "侧位",
            "a lateral film does not show the widths the ratio compares",
            "侧位片不显示心胸比所比较的横径",
        )
    return None


def _ctr_guidance(
    ctr: float | None, implausible: list[float], flagged: bool, context: StudyContext
) -> GuidanceStatement | None:
    """The heart-size statement from a plausible CTR (the largest, or None), any implausible CTR
    values and whether a cardiomegaly finding is present; None when there is nothing to say.

    CTR > 0.5 suggests an enlarged heart on a PA film only: on AP, lateral, supine or decubitus
    films heart size is not judged (said so). A present cardiomegaly finding is never dropped:
    with a ratio not above 0.5 the disagreement is stated; without a ratio the finding's own
    advice is given. An implausible ratio is said to be unusable and is never judged.
    """
    enlarged = ctr is not None and ctr > CTR_LIMIT
    if not (enlarged or flagged or implausible):
        return None
    ratio = _number(ctr, CTR_LIMIT) if ctr is not None else ""
    ratio_en = f"cardiothoracic ratio {ratio}" if ctr is not None else ""
    ratio_zh = f"心胸比{ratio}" if ctr is not None else ""
    flag_en = "The AI flagged an enlarged heart (cardiomegaly), but heart" if flagged else "Heart"
    flag_zh = "AI提示心脏增大，但" if flagged else ""
    en: list[str] = []
    zh: list[str] = []
    urgency: Urgency = "routine"
    view = _unjudged_view(context)
    if view is not None:
        view_en, view_zh, reason_en, reason_zh = view
        shown_en = f" ({ratio_en})" if ratio_en else ""
        shown_zh = f"（{ratio_zh}）" if ratio_zh else ""
        en.append(
            f"{flag_en} size cannot be judged on this {view_en} radiograph{shown_en}: the "
            f"cardiothoracic ratio > 0.5 rule holds for PA films only ({reason_en}). If heart "
            "failure is suspected clinically, arrange a PA chest radiograph or echocardiography."
        )
        zh.append(
            f"{flag_zh}该胸片为{view_zh}摄片{shown_zh}，无法判断心脏大小：心胸比>0.5的标准仅适用于"
            f"后前位（PA）胸片（{reason_zh}）。如临床怀疑心力衰竭，请加摄后前位胸片或行超声心动图"
            "检查。"
        )
    elif enlarged or (flagged and ctr is None):
        if ctr is not None:
            shown_en = f"{ratio_en} > {CTR_LIMIT} on the chest radiograph"
            shown_zh = f"胸片{ratio_zh}，大于{CTR_LIMIT}"
        else:
            shown_en = (
                "AI finding on the chest radiograph: the AI flagged cardiomegaly; no usable "
                "cardiothoracic ratio was measured"
            )
            shown_zh = "胸片AI提示心脏增大，未获得可用的心胸比测量值"
        en.append(
            f"Possible enlarged heart ({shown_en}). Within 2 weeks, arrange echocardiography and "
            "check for heart failure (symptoms, BNP/NT-proBNP, ECG); refer to cardiology if "
            "confirmed or if the patient is breathless."
        )
        zh.append(
            f"可能存在心脏增大（{shown_zh}）。请在2周内安排超声心动图检查，并评估心力衰竭"
            "（症状、BNP/NT-proBNP、心电图）；确诊或患者气促时转诊心内科。"
        )
        urgency = "soon"
    elif flagged and ctr is not None:
        en.append(
            f"The AI flagged an enlarged heart (cardiomegaly), but the measured {ratio_en} is not "
            f"above {CTR_LIMIT}: the two disagree, so review the image and act on the "
            "radiologist's report. If heart failure is suspected clinically, arrange "
            "echocardiography."
        )
        zh.append(
            f"AI提示心脏增大，但测得的{ratio_zh}未超过{CTR_LIMIT}：两者不一致，请复核影像，并以放射科"
            "医生报告为准。如临床怀疑心力衰竭，请行超声心动图检查。"
        )
    if view is None and (ctr is not None or flagged) and context.projection != "PA":
        what_en = "the ratio is valid" if ctr is not None else "heart size is judged"
        what_zh = "心胸比仅在后前位片上有效" if ctr is not None else "心脏大小仅能在后前位片上判断"
        en.append(
            f"The projection is not recorded as PA: {what_en} only on a PA film (AP or supine "
            "films magnify the heart)."
        )
        zh.append(f"影像未标明为后前位（PA）：{what_zh}（前后位或卧位片会放大心影）。")
    if implausible:
        values = ", ".join(_number(v) for v in implausible)
        values_zh = "、".join(_number(v) for v in implausible)
        one = len(implausible) == 1
        en.append(
            f"The reported cardiothoracic ratio {'value' if one else 'values'} {values} "
            f"{'is' if one else 'are'} implausible (a ratio lies between 0 and 1) and cannot be "
            "used: heart size is not judged from "
            f"{'it' if one else 'them'}; act on the radiologist's report."
        )
        zh.append(
            f"报告的心胸比数值{values_zh}不合理（比值应在0与1之间），无法使用，不据此判断心脏大小；"
            "请以放射科医生报告为准。"
        )
    return _statement(CTR_RULE, urgency, " ".join(en), "".join(zh))


def _pneumothorax_guidance() -> GuidanceStatement:
    return _statement(
        PNEUMOTHORAX_RULE,
        "emergency",
        "Possible pneumothorax. Assess the patient now (breathing, oxygen saturation, blood "
        "pressure). If breathless or unstable, call emergency services and transfer to an "
        "emergency department immediately; otherwise refer the same day.",
        "可能存在气胸。请立即评估患者（呼吸、血氧饱和度、血压）。如有气促或生命体征不稳定，"
        "立即呼叫急救并转送急诊；否则当天转诊。",
    )


def _effusion_guidance() -> GuidanceStatement:
    return _statement(
        EFFUSION_RULE,
        "soon",
        "Possible pleural effusion. Within 1-2 weeks arrange further work-up (chest ultrasound, "
        "history for heart failure, infection or cancer, blood tests) and refer to a respiratory "
        "specialist; refer the same day if the patient is breathless or febrile.",
        "可能存在胸腔积液。请在1-2周内进一步检查（胸部超声，询问心衰、感染或肿瘤病史，血液检查）"
        "并转诊呼吸科；如患者气促或发热，当天转诊。",
    )


LABEL_ZH = {
    "consolidation": "实变",
    "pneumonia": "肺炎",
    "atelectasis": "肺不张",
    "edema": "肺水肿",
    "oedema": "肺水肿",
    "emphysema": "肺气肿",
    "fibrosis": "肺纤维化",
    "infiltration": "浸润影",
    "mass": "肿块",
    "fracture": "骨折",
    "hernia": "膈疝",
    "pleural_thickening": "胸膜增厚",
    "lung_opacity": "肺部阴影",
    "opacity": "阴影",
}


def _other_guidance(labels: list[str]) -> GuidanceStatement:
    names = sorted(set(labels))
    known = [LABEL_ZH[n.lower()] for n in names if n.lower() in LABEL_ZH]
    unknown = len(names) - len(known)
    parts = list(known) + ([f"其他{unknown}项异常"] if unknown else [])
    return _statement(
        OTHER_RULE,
        "routine",
        f"AI flagged: {', '.join(names)}. No specific rule applies; act on the radiologist's "
        "report.",
        f"AI提示：{'、'.join(parts)}。无对应的具体规则，请以放射科医生报告为准。",
    )


def _no_finding_guidance() -> GuidanceStatement:
    return _statement(
        NO_FINDING_RULE,
        "none",
        "AI found no abnormality it was trained to detect. No action from this result; the "
        "radiologist's report follows as usual.",
        "AI未发现其可识别的异常。无需因此结果采取措施，放射科医生报告照常发出。",
    )


def guidance_for(
    study: StudyResult,
    patient_age: int | None = None,
    risk: str | None = None,
    context: StudyContext | None = None,
) -> list[GuidanceStatement]:
    """The guidance statements for a study, most urgent first.

    ``risk`` is the Fleischner risk group, ``"low"`` or ``"high"``; None means unknown (high-risk
    advice, said so in the text). ``context`` is what the study header says (age, projection;
    see ``clinical.context.study_context``); ``patient_age`` overrides its age when given.
    Raises ValueError for an unknown risk or an impossible age.
    """
    context = context or StudyContext()
    if patient_age is None:
        patient_age = context.patient_age
    if risk is not None and risk not in ("low", "high"):
        raise ValueError(f"risk must be 'low', 'high' or None, not {risk!r}")
    if patient_age is not None and not 0 <= patient_age <= 130:
        raise ValueError(f"patient_age must be 0-130 years, not {patient_age}")
    present = [f for f in _findings(study) if f.present]
    statements: list[GuidanceStatement] = []
    covered: set[int] = set()

    def take(kind: str) -> list[Finding]:
        hits = [f for f in present if finding_is(f, kind)]
        covered.update(id(f) for f in hits)
        return hits

    if take("pneumothorax"):
        statements.append(_pneumothorax_guidance())
    nodules = take("nodule")
    if nodules:
        statements.append(_nodule_guidance(nodules, patient_age, risk))
    ctrs = [m.value for m in _measurements(study) if measurement_is_ctr(m)]
    plausible = [value for value in ctrs if ctr_is_plausible(value)]
    implausible = list(dict.fromkeys(value for value in ctrs if not ctr_is_plausible(value)))
    heart = _ctr_guidance(
        max(plausible) if plausible else None, implausible, bool(take("cardiomegaly")), context
    )
    if heart is not None:
        statements.append(heart)
    if take("effusion"):
        statements.append(_effusion_guidance())
    others = [f.label for f in present if id(f) not in covered]
    if others:
        statements.append(_other_guidance(others))
    if not statements:
        statements.append(_no_finding_guidance())
    statements.sort(key=lambda s: URGENCY_ORDER[s.urgency])
    return statements
