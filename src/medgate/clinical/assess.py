"""One patient summary in; every applicable score, referral advice and guidance out.

Safety rule: an urgent rule (NEWS2 high, a follow-up urgent-referral criterion, qSOFA positive)
always decides the referral level; the learned model's score is shown for information only and is
marked as overridden. Whatever cannot be computed is listed with the missing inputs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel

from medgate.clinical import china_par as cp
from medgate.clinical import followup as fu
from medgate.clinical import news2 as nw
from medgate.clinical.common import MG_DL_PER_MMOL_L_GLUCOSE, MG_DL_PER_MMOL_L_TRIGLYCERIDES
from medgate.clinical.schemas import AssessRequest
from medgate.models.tabular import BundleError, TabularPredictor

Language = Literal["zh", "en"]
Level = Literal["urgent", "routine", "none"]

NOT_FOR_CLINICAL = {
    "en": "Decision support only: the treating doctor decides. The learned model is a "
    "demonstration, not for clinical use.",
    "zh": "仅供辅助决策，由接诊医生判断。机器学习模型仅为演示，不用于临床。",
}


class NotComputed(BaseModel):
    score: str
    reason: str
    missing: list[str] = []


class Referral(BaseModel):
    level: Level
    reasons: list[str]


class AssessResult(BaseModel):
    language: Language
    china_par: cp.ChinaParResult | None = None
    news2: nw.News2Result | None = None
    qsofa: nw.QsofaResult | None = None
    follow_up: fu.FollowUpResult | None = None
    learned_model: dict[str, Any] | None = None
    referral: Referral
    guidance: list[str]
    not_computed: list[NotComputed]
    disclaimer: str


def _missing(x: AssessRequest, names: list[str]) -> list[str]:
    return [n for n in names if getattr(x, n) is None]


def _china_par(x: AssessRequest) -> cp.ChinaParResult | NotComputed:
    needed = [
        "age",
        "sex",
        "sbp_mmhg",
        "on_bp_treatment",
        "waist_cm",
        "current_smoker",
        "region",
        "residence",
        "family_history_ascvd",
    ]
    missing = _missing(x, needed)
    tc, hdl = x.lipid_mg_dl("total_cholesterol"), x.lipid_mg_dl("hdl_cholesterol")
    if tc is None:
        missing.append("total_cholesterol_mmol_l|total_cholesterol_mg_dl")
    if hdl is None:
        missing.append("hdl_cholesterol_mmol_l|hdl_cholesterol_mg_dl")
    diabetes = x.has_diabetes()
    if diabetes is None:
        missing.append("diabetes")
    if missing:
        return NotComputed(score="china_par", reason="inputs missing", missing=missing)
    return cp.china_par(
        cp.ChinaParInput(
            age=x.age,
            sex=x.sex,
            sbp_mmhg=x.sbp_mmhg,
            on_bp_treatment=x.on_bp_treatment,
            total_cholesterol_mg_dl=tc,
            hdl_cholesterol_mg_dl=hdl,
            waist_cm=x.waist_cm,
            current_smoker=x.current_smoker,
            diabetes=diabetes,
            region=x.region,
            residence=x.residence,
            family_history_ascvd=x.family_history_ascvd,
        )
    )


def _news2(x: AssessRequest) -> nw.News2Result | NotComputed:
    needed = [
        "respiratory_rate",
        "spo2",
        "on_oxygen",
        "sbp_mmhg",
        "heart_rate",
        "consciousness",
        "temperature_c",
    ]
    missing = _missing(x, needed)
    if missing:
        return NotComputed(score="news2", reason="inputs missing", missing=missing)
    return nw.news2(
        nw.News2Input(
            respiratory_rate=x.respiratory_rate,
            spo2=x.spo2,
            spo2_scale=x.spo2_scale,
            on_oxygen=x.on_oxygen,
            sbp_mmhg=x.sbp_mmhg,
            heart_rate=x.heart_rate,
            consciousness=x.consciousness,
            temperature_c=x.temperature_c,
        )
    )


def _qsofa(x: AssessRequest) -> nw.QsofaResult | NotComputed:
    missing = _missing(x, ["respiratory_rate", "sbp_mmhg", "consciousness"])
    if missing:
        return NotComputed(score="qsofa", reason="inputs missing", missing=missing)
    return nw.qsofa(
        nw.QsofaInput(
            respiratory_rate=x.respiratory_rate, sbp_mmhg=x.sbp_mmhg, consciousness=x.consciousness
        )
    )


def _follow_up(x: AssessRequest) -> fu.FollowUpResult | NotComputed:
    conditions = list(dict.fromkeys(x.conditions))
    if x.diabetes and "type2_diabetes" not in conditions:
        conditions.append("type2_diabetes")
    if not conditions:
        return NotComputed(
            score="follow_up",
            reason="no hypertension or type 2 diabetes in conditions: follow-up rules do not apply",
        )
    return fu.follow_up(
        fu.FollowUpInput(
            conditions=conditions,
            age=x.age,
            sbp_mmhg=x.sbp_mmhg,
            dbp_mmhg=x.dbp_mmhg,
            fasting_glucose_mmol_l=x.fasting_glucose_mmol_l,
            random_glucose_mmol_l=x.random_glucose_mmol_l,
            heart_rate=x.heart_rate,
            temperature_c=x.temperature_c,
            consciousness=x.consciousness,
            pregnant_or_lactating=x.pregnant_or_lactating,
            symptoms=x.symptoms,
            previous_visit_uncontrolled=x.previous_visit_uncontrolled,
            medication_adverse_reaction=x.medication_adverse_reaction,
            home_bp=x.home_bp,
            home_glucose=x.home_glucose,
        )
    )


def model_inputs(x: AssessRequest) -> tuple[dict[str, float], list[str]]:
    """The learned model's inputs derived from the summary, and the names still missing."""
    values: dict[str, float] = {}
    missing: list[str] = []
    tc, hdl = x.lipid_mg_dl("total_cholesterol"), x.lipid_mg_dl("hdl_cholesterol")
    pairs: list[tuple[str, float | None, str]] = [
        ("age", x.age, "age"),
        ("bmi", x.bmi, "bmi"),
        (
            "mean_arterial_pressure_mmhg",
            (x.sbp_mmhg + 2 * x.dbp_mmhg) / 3 if x.sbp_mmhg and x.dbp_mmhg else None,
            "sbp_mmhg+dbp_mmhg",
        ),
        ("total_cholesterol_mg_dl", tc, "total_cholesterol"),
        (
            "ldl_cholesterol_mg_dl",
            x.ldl_cholesterol_mmol_l * 38.61 if x.ldl_cholesterol_mmol_l else None,
            "ldl_cholesterol_mmol_l",
        ),
        ("hdl_cholesterol_mg_dl", hdl, "hdl_cholesterol"),
        ("tc_hdl_ratio", tc / hdl if tc and hdl else None, "total_cholesterol+hdl_cholesterol"),
        (
            "ln_triglycerides_mg_dl",
            math.log(x.triglycerides_mmol_l * MG_DL_PER_MMOL_L_TRIGLYCERIDES)
            if x.triglycerides_mmol_l
            else None,
            "triglycerides_mmol_l",
        ),
        (
            "glucose_mg_dl",
            x.fasting_glucose_mmol_l * MG_DL_PER_MMOL_L_GLUCOSE
            if x.fasting_glucose_mmol_l
            else None,
            "fasting_glucose_mmol_l",
        ),
    ]
    for name, value, source in pairs:
        if value is None:
            missing.append(source)
        else:
            values[name] = float(value)
    return values, missing


GUIDANCE: dict[str, dict[str, str]] = {
    "urgent": {
        "en": "Urgent referral: arrange transfer to a higher-level hospital now and "
        "follow up within 2 weeks.",
        "zh": "紧急转诊：立即安排转上级医院，2 周内主动随访转诊情况。",
    },
    "routine": {
        "en": "Routine referral: refer to a specialist; follow up within 2 weeks.",
        "zh": "建议转诊至上级医院专科，2 周内随访。",
    },
    "news2-high": {
        "en": "NEWS2 >= 7: emergency assessment by a critical-care team.",
        "zh": "NEWS2≥7：需急救/重症团队紧急评估。",
    },
    "news2-medium": {
        "en": "NEWS2 5-6: urgent review by a clinician.",
        "zh": "NEWS2 5-6：需临床医生紧急评估。",
    },
    "news2-low-medium": {
        "en": "A single NEWS2 parameter scores 3: urgent ward-based review.",
        "zh": "NEWS2 单项 3 分：需尽快由医生评估。",
    },
    "qsofa": {"en": "qSOFA >= 2: assess for sepsis.", "zh": "qSOFA≥2：警惕脓毒症，需评估。"},
    "cvd-high": {
        "en": "10-year ASCVD risk >= 10 %: lifestyle change and drug treatment of risk "
        "factors (BP, lipids, glucose) under a doctor; yearly check-up.",
        "zh": "10 年心血管病风险≥10%（高危）：改善生活方式，并在医生指导下针对危险因素"
        "降压、调脂、降糖治疗，至少每年体检一次。",
    },
    "cvd-intermediate": {
        "en": "10-year ASCVD risk 5-9.9 %: stop smoking, control weight, "
        "be active; consider treatment with a doctor.",
        "zh": "10 年心血管病风险 5%–9.9%（中危）：戒烟、控制体重、增加体力活动，"
        "必要时在医生指导下治疗。",
    },
    "cvd-low": {
        "en": "10-year ASCVD risk < 5 %: keep a healthy lifestyle.",
        "zh": "10 年心血管病风险<5%（低危）：保持健康生活方式。",
    },
    "controlled": {
        "en": "Controlled: next follow-up in 3 months.",
        "zh": "控制满意：3 个月后随访。",
    },
    "uncontrolled": {
        "en": "Not controlled: adjust treatment, follow up within 2 weeks.",
        "zh": "控制不满意：调整治疗，2 周内随访。",
    },
    "model": {
        "en": "Learned-model score (demo, not for clinical use): {p:.0%} probability of "
        "high diabetes progression.",
        "zh": "机器学习模型（演示，不用于临床）：糖尿病进展较快的概率 {p:.0%}。",
    },
    "model-overridden": {
        "en": "An urgent rule applies: the model score does not change the referral.",
        "zh": "已触发紧急规则：模型评分不改变转诊决定。",
    },
}


def assess(x: AssessRequest, predictor: TabularPredictor | None, lang: Language) -> AssessResult:
    """Run every score that the summary allows; urgent rules decide the referral."""
    not_computed: list[NotComputed] = []
    result: dict[str, Any] = {}
    for key, func in (
        ("china_par", _china_par),
        ("news2", _news2),
        ("qsofa", _qsofa),
        ("follow_up", _follow_up),
    ):
        value = func(x)
        if isinstance(value, NotComputed):
            not_computed.append(value)
        else:
            result[key] = value
    guidance: list[str] = []
    urgent: list[str] = []
    routine: list[str] = []
    n2: nw.News2Result | None = result.get("news2")
    if n2 is not None:
        if n2.risk == "high":
            urgent.append(f"NEWS2 {n2.score} (high)")
        elif n2.risk == "medium":
            urgent.append(f"NEWS2 {n2.score} (medium)")
        if n2.risk != "low":
            guidance.append(GUIDANCE[f"news2-{n2.risk}"][lang])
    qs: nw.QsofaResult | None = result.get("qsofa")
    if qs is not None and qs.positive:
        urgent.append(f"qSOFA {qs.score}")
        guidance.append(GUIDANCE["qsofa"][lang])
    fup: fu.FollowUpResult | None = result.get("follow_up")
    if fup is not None:
        urgent += [getattr(r, lang) for r in fup.urgent_reasons]
        routine += [getattr(r, lang) for r in fup.routine_reasons]
        if not fup.urgent_referral and fup.status:
            known = [s.controlled for s in fup.status if s.controlled is not None]
            if known:
                guidance.append(GUIDANCE["controlled" if all(known) else "uncontrolled"][lang])
    par: cp.ChinaParResult | None = result.get("china_par")
    if par is not None and par.applicable and par.category:
        guidance.append(GUIDANCE[f"cvd-{par.category}"][lang])
    elif par is not None:
        not_computed.append(NotComputed(score="china_par", reason=par.reason or "not applicable"))
    level: Level = "urgent" if urgent else ("routine" if routine else "none")
    learned: dict[str, Any] | None = None
    if x.has_diabetes():
        values, missing = model_inputs(x)
        if predictor is None:
            not_computed.append(
                NotComputed(
                    score="learned_model", reason="model bundle not available on this server"
                )
            )
        elif missing:
            not_computed.append(
                NotComputed(score="learned_model", reason="inputs missing", missing=missing)
            )
        else:
            try:
                prediction = predictor.predict(values)
            except (BundleError, ValueError) as exc:
                not_computed.append(NotComputed(score="learned_model", reason=str(exc)))
            else:
                learned = prediction.model_dump()
                learned["overridden_by_urgent_rule"] = level == "urgent"
                guidance.append(GUIDANCE["model"][lang].format(p=prediction.probability))
                if level == "urgent":
                    guidance.append(GUIDANCE["model-overridden"][lang])
    else:
        not_computed.append(
            NotComputed(
                score="learned_model",
                reason="applies only to patients with diabetes (its training population)",
            )
        )
    if level != "none":
        guidance.insert(0, GUIDANCE[level][lang])
    return AssessResult(
        language=lang,
        china_par=par,
        news2=n2,
        qsofa=qs,
        follow_up=fup,
        learned_model=learned,
        referral=Referral(level=level, reasons=urgent if urgent else routine),
        guidance=guidance,
        not_computed=not_computed,
        disclaimer=NOT_FOR_CLINICAL[lang],
    )
