"""Plain-language guidance for the primary-care doctor, from versioned rules citing guidelines.

Each rule turns AI findings into one ``GuidanceStatement``: what to do, how soon, in Chinese and
English, with the guideline it follows and a reminder that it is an AI result a radiologist must
confirm. The rules are deliberately few and literal; they never diagnose, they route.

Boundaries (golden-tested in tests/reports/test_guidance.py):

* Fleischner Society 2017, incidental solid nodules: ``< 6 mm``, ``6 mm <= d <= 8 mm``,
  ``> 8 mm`` on the size the model reports (mean of long and short axis when both are given,
  else the diameter). Low/high risk; unknown risk uses low risk and says so.
* Cardiothoracic ratio ``> 0.5`` (strictly) suggests an enlarged heart.
* Pneumothorax present: emergency. Pleural effusion present: further work-up soon.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from medgate.clinical.findings import axis_kind, finding_is, measurement_is_ctr
from medgate.models.findings import Finding, GuidanceStatement, Measurement, StudyResult

RULESET_VERSION = "2024.1"

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
    "1.0",
    "MacMahon H, et al. Guidelines for Management of Incidental Pulmonary Nodules Detected on CT "
    "Images: From the Fleischner Society 2017. Radiology 2017;284(1):228-243.",
)
CTR_RULE = Rule(
    "ctr-enlarged-heart",
    "1.0",
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
    """The size Fleischner classifies on: mean of long and short axis, else the diameter."""
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


def fleischner_category(size_mm: float) -> Literal["<6", "6-8", ">8"]:
    """Fleischner 2017 size band: <6 mm, 6-8 mm (both ends included), >8 mm."""
    if size_mm < 6.0:
        return "<6"
    if size_mm <= 8.0:
        return "6-8"
    return ">8"


# (category, multiple, risk) -> (urgency, en, zh); MacMahon 2017, Table 1, solid nodules.
_FLEISCHNER_TABLE: dict[tuple[str, bool, str], tuple[Urgency, str, str]] = {
    ("<6", False, "low"): ("routine", "No routine follow-up CT is needed.", "无需常规CT随访。"),
    ("<6", False, "high"): (
        "routine",
        "Optional follow-up chest CT at 12 months.",
        "可选择在12个月时复查胸部CT。",
    ),
    ("6-8", False, "low"): (
        "routine",
        "Follow-up chest CT at 6-12 months, then consider CT at 18-24 months.",
        "6-12个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    ("6-8", False, "high"): (
        "routine",
        "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
        "6-12个月复查胸部CT，并在18-24个月再次复查。",
    ),
    (">8", False, "low"): (
        "soon",
        "Within 2 weeks, refer to a respiratory or thoracic specialist: consider CT at 3 months, "
        "PET/CT or tissue sampling.",
        "请在2周内转诊呼吸科或胸外科：考虑3个月复查CT、PET/CT或组织活检。",
    ),
    ("<6", True, "low"): ("routine", "No routine follow-up CT is needed.", "无需常规CT随访。"),
    ("<6", True, "high"): (
        "routine",
        "Optional follow-up chest CT at 12 months.",
        "可选择在12个月时复查胸部CT。",
    ),
    ("6-8", True, "low"): (
        "routine",
        "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months.",
        "3-6个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    ("6-8", True, "high"): (
        "routine",
        "Follow-up chest CT at 3-6 months, then CT at 18-24 months.",
        "3-6个月复查胸部CT，并在18-24个月再次复查。",
    ),
    (">8", True, "low"): (
        "soon",
        "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months; refer to a "
        "respiratory specialist within 2 weeks.",
        "3-6个月复查胸部CT，之后考虑在18-24个月再次复查；请在2周内转诊呼吸科。",
    ),
}
_FLEISCHNER_TABLE[(">8", False, "high")] = _FLEISCHNER_TABLE[(">8", False, "low")]
_FLEISCHNER_TABLE[(">8", True, "high")] = _FLEISCHNER_TABLE[(">8", True, "low")]


# ----------------------------------------------------------------------------- rules
def _nodule_guidance(
    nodules: list[Finding], patient_age: int | None, risk: str | None
) -> GuidanceStatement:
    sizes = [size for size in (nodule_size_mm(f) for f in nodules) if size is not None]
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
    if not sizes:
        return _statement(
            FLEISCHNER,
            "routine",
            f"AI found a lung nodule{count_en} but could not measure it: ask the radiologist for "
            "its size, then follow the Fleischner 2017 table.",
            f"AI发现肺结节{count_zh}但未能测量大小：请放射科医生测量后按Fleischner 2017指南随访。",
        )
    size = max(sizes)
    category = fleischner_category(size)
    used_risk = risk or "low"
    urgency, action_en, action_zh = _FLEISCHNER_TABLE[(category, count > 1, used_risk)]
    band = {"<6": "< 6 mm", "6-8": "6-8 mm", ">8": "> 8 mm"}[category]
    risk_en = {"low": "low-risk", "high": "high-risk"}[used_risk]
    risk_zh = {"low": "低风险", "high": "高风险"}[used_risk]
    en = [
        f"AI found a solid lung nodule of {size:.1f} mm{count_en} (Fleischner band {band}, "
        f"{risk_en} patient). {action_en}"
    ]
    zh = [
        f"AI发现肺部实性结节，大小{size:.1f}毫米{count_zh}（Fleischner分级{band}，{risk_zh}患者）。"
        f"{action_zh}"
    ]
    if risk is None:
        en.append(
            "Patient risk was not given, so the low-risk advice is shown; use the high-risk "
            "advice for smokers or other risk factors."
        )
        zh.append("未提供患者风险分层，按低风险给出建议；吸烟或有其他危险因素者请按高风险处理。")
    if patient_age is None:
        en.append("Patient age was not given; the advice assumes an adult aged 35 or older.")
        zh.append("未提供患者年龄，以上建议按35岁及以上成人给出。")
    en.append("Not for lung cancer screening, known cancer or immunosuppressed patients.")
    zh.append("不适用于肺癌筛查、已知恶性肿瘤或免疫抑制患者。")
    return _statement(FLEISCHNER, urgency, " ".join(en), "".join(zh))


def _ctr_guidance(ctr: float | None) -> GuidanceStatement:
    value_en = f"cardiothoracic ratio {ctr:.3g} > {CTR_LIMIT}" if ctr is not None else "AI finding"
    value_zh = f"心胸比{ctr:.3g}，大于{CTR_LIMIT}" if ctr is not None else "AI提示"
    return _statement(
        CTR_RULE,
        "soon",
        f"Possible enlarged heart ({value_en} on the chest radiograph). Within 2 weeks, arrange "
        "echocardiography and check for heart failure (symptoms, BNP/NT-proBNP, ECG); refer to "
        "cardiology if confirmed or if the patient is breathless.",
        f"可能存在心脏增大（胸片{value_zh}）。请在2周内安排超声心动图检查，并评估心力衰竭"
        "（症状、BNP/NT-proBNP、心电图）；确诊或患者气促时转诊心内科。",
    )


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


def _other_guidance(labels: list[str]) -> GuidanceStatement:
    names = ", ".join(sorted(set(labels)))
    return _statement(
        OTHER_RULE,
        "routine",
        f"AI flagged: {names}. No specific rule applies; act on the radiologist's report.",
        f"AI提示：{names}。无对应的具体规则，请以放射科医生报告为准。",
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
    study: StudyResult, patient_age: int | None = None, risk: str | None = None
) -> list[GuidanceStatement]:
    """The guidance statements for a study, most urgent first.

    ``risk`` is the Fleischner risk group, ``"low"`` or ``"high"``; None means unknown (low-risk
    advice, said so in the text). Raises ValueError for an unknown risk or an impossible age.
    """
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
    ctr = max(ctrs) if ctrs else None
    cardiomegaly = take("cardiomegaly")
    if (ctr is not None and ctr > CTR_LIMIT) or (cardiomegaly and ctr is None):
        statements.append(_ctr_guidance(ctr))
    if take("effusion"):
        statements.append(_effusion_guidance())
    others = [f.label for f in present if id(f) not in covered]
    if others:
        statements.append(_other_guidance(others))
    if not statements:
        statements.append(_no_finding_guidance())
    statements.sort(key=lambda s: URGENCY_ORDER[s.urgency])
    return statements
