"""One patient summary in; every applicable score, referral advice and guidance out.

Referral levels, most severe first (each criterion with its source in ``urgent``, ``news2`` and
``followup``):

* ``emergency`` (call 120 / transfer now): NEWS2 >= 7; a single NEWS2 parameter scoring 3 with
  deterioration; qSOFA >= 2 with suspected infection; BP crisis with symptoms of organ damage;
  glucose < 3.0 mmol/L or hypoglycaemia with altered consciousness or behaviour.
* ``urgent`` (urgent referral): NEWS2 5-6 or a single parameter scoring 3 (RCP 2017); qSOFA >= 2
  with infection not yet asked about; any 2017-specification 危急情况 - BP >= 180 and/or >= 110
  and glucose >= 16.7 or <= 3.9 mmol/L for *every* patient, with or without a diagnosis.
* ``routine``: the follow-up rules' referral (two uncontrolled visits, adverse reactions hard to
  control, new complications).

Safety rule: the rules decide the level; the learned model's score is shown for information only
and marked as overridden when a rule applies. Whatever cannot be computed is listed with the
missing inputs.

Who it is for: NEWS2 from age 16 (RCP 2017); qSOFA, China-PAR, the follow-up rules and the
learned model from 18 (``ADULT_MIN_AGE``). A younger patient gets no score at all, since adult
bands would call a child's normal breathing and heart rates an emergency; the urgent readings
(BP, glucose) are still checked at every age, because a reading at an adult crisis value is a
crisis in a child too, and the answer says a child's own thresholds are lower.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from medgate.clinical import china_par as cp
from medgate.clinical import followup as fu
from medgate.clinical import news2 as nw
from medgate.clinical import urgent as ur
from medgate.clinical.common import (
    DISCLAIMER,
    LEVEL_ORDER,
    MG_DL_PER_MMOL_L_CHOLESTEROL,
    MG_DL_PER_MMOL_L_GLUCOSE,
    MG_DL_PER_MMOL_L_TRIGLYCERIDES,
    Reason,
)
from medgate.clinical.schemas import AssessRequest
from medgate.models.tabular import BundleError, TabularPredictor

Language = Literal["zh", "en"]
Model = TypeVar("Model", bound=BaseModel)
Level = Literal["emergency", "urgent", "routine", "none"]

NOT_FOR_CLINICAL = {
    "en": DISCLAIMER["en"] + " The learned model is a demonstration, not for clinical use.",
    "zh": DISCLAIMER["zh"] + "机器学习模型仅为演示，不用于临床。",
}
#: The adult scores' population. qSOFA: Seymour 2016 derived and validated it in encounters of
#: patients aged 18 and over (Singer 2016: Sepsis-3 is an adult definition). China-PAR (2019
#: guideline, adults) and the hypertension / type 2 diabetes follow-up (Spec 2017, 基层指南) are
#: adult guidelines; the learned model was trained on adults.
ADULT_MIN_AGE = 18
ADULT_ONLY = f"an adult score: for ages {ADULT_MIN_AGE} and over"
UNDER_16 = f"patient under {nw.NEWS2_MIN_AGE}: use a paediatric early warning score"
ADULT_ONLY_ZH = f"成人评分，适用于{ADULT_MIN_AGE}岁及以上"
UNDER_16_ZH = f"患者未满{nw.NEWS2_MIN_AGE}岁，请使用儿童早期预警评分"
#: Why the China-PAR flow did not apply, by its route (the English is ``ChinaParResult.reason``).
CHINA_PAR_NOT_APPLICABLE_ZH = {
    "established-ascvd": "已确诊动脉粥样硬化性心血管病：极高危，二级预防；"
    "China-PAR仅用于无心血管病者",
    "not-applicable": f"China-PAR在{cp.AGE_RANGE[0]}-{cp.AGE_RANGE[1]}岁成人中建立，"
    "该年龄不在此范围",
}
#: What a patient below every score's population is told (NEWS2: RCP 2017, from 16).
NOT_ASSESSED: dict[str, dict[str, str]] = {
    "summary": {
        "en": f"Scores not applied: patient under {nw.NEWS2_MIN_AGE}",
        "zh": f"未计算评分：患者未满{nw.NEWS2_MIN_AGE}岁",
    },
    "detail": {
        "en": f"medgate's scores are for patients aged {nw.NEWS2_MIN_AGE} and over (NEWS2, RCP "
        "2017; qSOFA, China-PAR and the follow-up rules are adult scores), so none was computed. "
        "Flagged for a child: hypotension for the age, SpO2 < 90 %, altered consciousness, BP >= "
        "180 and/or >= 110 mmHg, glucose >= 16.7 or <= 3.9 mmol/L and the danger symptoms "
        "entered. Breathing and heart rates are not judged against a child's own ranges, so no "
        "flag does not mean normal: assess this patient with a paediatric early warning score.",
        "zh": f"本决策支持的评分仅适用于{nw.NEWS2_MIN_AGE}岁及以上患者（NEWS2用于"
        f"{nw.NEWS2_MIN_AGE}岁及以上；qSOFA、China-PAR和随访规则为成人评分），因此未计算任何评分。"
        "对儿童提示：按年龄的低血压、血氧饱和度<90%、意识改变、血压≥180和/或≥110毫米汞柱、血糖"
        "≥16.7或≤3.9毫摩尔/升以及所填危急症状。呼吸频率和心率未按儿童参考范围判断，未提示不等于"
        "正常：请使用儿童早期预警评分评估该患者。",
    },
}
CATEGORY_ZH = {"low": "低危", "intermediate": "中危", "high": "高危"}
NEWS2_RISK_ZH = {"low": "低风险", "low-medium": "低-中风险", "medium": "中风险", "high": "高风险"}


class NotComputed(BaseModel):
    score: str
    reason: str
    missing: list[str] = []
    #: the reason in Chinese, for Chinese cards (None: the card says only that it does not apply)
    reason_zh: str | None = None


class Referral(BaseModel):
    """The action level and every criterion that set it (most severe first)."""

    level: Level
    reasons: list[str]
    sources: list[str] = []


class AssessResult(BaseModel):
    language: Language
    china_par: cp.ChinaParResult | None = None
    news2: nw.News2Result | None = None
    #: NEWS2 from the recorded parameters when some are missing: a floor (``news2_lower_bound``)
    news2_at_least: nw.News2LowerBound | None = None
    qsofa: nw.QsofaResult | None = None
    follow_up: fu.FollowUpResult | None = None
    #: the LDL-C target by ASCVD risk for a patient the follow-up does not cover (the follow-up's
    #: targets carry it otherwise); None without an LDL-C or without a known risk level
    ldl_target: fu.TargetCheck | None = None
    learned_model: dict[str, Any] | None = None
    referral: Referral
    guidance: list[str]
    not_computed: list[NotComputed]
    disclaimer: str


def _calculator_input(
    x: AssessRequest,
    model: type[Model],
    score: str,
    derived: dict[str, tuple[Any, str]] | None = None,
) -> Model | NotComputed:
    """A calculator's input from the summary, or what is missing for it.

    Each field of ``model`` takes the summary's field of the same name, or its ``derived``
    value (name: (value, the input to ask for when it is missing)) where the summary holds it
    in another form. Required inputs that are missing are listed, never guessed.
    """
    derived = derived or {}
    values: dict[str, Any] = {}
    missing: list[str] = []
    for name, field in model.model_fields.items():
        value, ask_for = derived[name] if name in derived else (getattr(x, name), name)
        if value is None and field.is_required():
            missing.append(ask_for)
        values[name] = value
    if missing:
        return NotComputed(
            score=score, reason="inputs missing", missing=missing, reason_zh="缺少输入"
        )
    try:
        return model.model_validate(values)
    except ValidationError as exc:  # a value the summary takes but this calculator cannot use
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return NotComputed(
            score=score,
            reason=f"input outside this score's range: {where}",
            reason_zh=f"输入超出该评分的适用范围：`{where}`",
        )


def _china_par(x: AssessRequest) -> cp.ChinaParResult | NotComputed:
    if x.ascvd:  # very high risk whatever the equation's inputs: nothing to ask for
        return cp.established_ascvd()
    if x.pregnant_or_lactating:
        # the long-term risk flow (and its lipid-lowering advice) is not for pregnancy or
        # breastfeeding, and a raised BP then is pre-eclampsia's, not grade 3 hypertension's
        return NotComputed(
            score="china_par",
            reason="pregnant or lactating: the cardiovascular risk assessment waits until after",
            reason_zh="妊娠期或哺乳期：心血管病风险评估待其后进行",
        )
    ldl = x.ldl_cholesterol_mmol_l
    par_input = _calculator_input(
        x,
        cp.ChinaParInput,
        "china_par",
        {
            "total_cholesterol_mg_dl": (
                x.lipid_mg_dl("total_cholesterol"),
                "total_cholesterol_mmol_l|total_cholesterol_mg_dl",
            ),
            "hdl_cholesterol_mg_dl": (
                x.lipid_mg_dl("hdl_cholesterol"),
                "hdl_cholesterol_mmol_l|hdl_cholesterol_mg_dl",
            ),
            "diabetes": (x.has_diabetes(), "diabetes"),
            "ldl_cholesterol_mg_dl": (
                None if ldl is None else ldl * MG_DL_PER_MMOL_L_CHOLESTEROL,
                "ldl_cholesterol_mmol_l",
            ),
        },
    )
    if not isinstance(par_input, NotComputed):
        return cp.china_par(par_input)
    # the equation cannot run, but a direct criterion needs only its own inputs; grade 3
    # hypertension only for a patient known to have hypertension (one crisis reading is not it)
    tc = x.lipid_mg_dl("total_cholesterol")
    hypertensive = "hypertension" in x.conditions or bool(x.on_bp_treatment)
    direct = cp.direct_high_risk_from(
        age=x.age,
        diabetes=x.has_diabetes(),
        ldl_cholesterol_mg_dl=None if ldl is None else ldl * MG_DL_PER_MMOL_L_CHOLESTEROL,
        total_cholesterol_mg_dl=tc,
        sbp_mmhg=x.sbp_mmhg if hypertensive else None,
        dbp_mmhg=x.dbp_mmhg if hypertensive else None,
        ckd_stage_3_4=x.ckd_stage_3_4,
    )
    if direct:
        return cp.direct_result(direct)
    return par_input


def _news2(x: AssessRequest, lang: Language) -> nw.News2Result | NotComputed:
    n2_input = _calculator_input(x, nw.News2Input, "news2")
    return n2_input if isinstance(n2_input, NotComputed) else nw.news2(n2_input, lang)


def _qsofa(x: AssessRequest, lang: Language) -> nw.QsofaResult | NotComputed:
    qs_input = _calculator_input(x, nw.QsofaInput, "qsofa")
    return qs_input if isinstance(qs_input, NotComputed) else nw.qsofa(qs_input, lang)


def ascvd_high_risk_basis(par: cp.ChinaParResult | None) -> str | None:
    """Why the China-PAR flow found high ASCVD risk (10-year, direct or lifetime), else None."""
    if par is None:
        return None
    lifetime = par.lifetime_risk
    if lifetime is not None and lifetime.status == "high":
        return "remaining-lifetime risk high, 2 or more of 5 risk factors"
    if par.category != "high":
        return None
    if par.route == "direct-high-risk":
        return "ASCVD risk high without calculation: " + "; ".join(par.direct_high_risk_reasons)
    return f"China-PAR 10-year ASCVD risk {par.risk_10y_percent:.1f} %"


def ldl_target_check(x: AssessRequest, par: cp.ChinaParResult | None) -> fu.TargetCheck | None:
    """The LDL-C target of the China-PAR flow's risk level (``fu.ldl_target_by_risk``, Lipid
    2016), or None without an LDL-C or where the flow gave no level (inputs missing, age out of
    range, pregnancy)."""
    if x.ldl_cholesterol_mmol_l is None or par is None:
        return None
    ascvd = par.route == "established-ascvd"
    if not ascvd and par.category is None:
        return None
    limit, source = fu.ldl_target_by_risk(
        ascvd, x.has_diabetes() or x.ckd or x.ckd_stage_3_4, ascvd_high_risk_basis(par)
    )
    return fu.below_target(
        "ldl_cholesterol_mmol_l", x.ldl_cholesterol_mmol_l, limit, "mmol/L", source
    )


def ldl_line(check: fu.TargetCheck, lang: Language) -> str:
    """An LDL-C target's line, the same on every card that shows one (the follow-up card's unmet
    target, the China-PAR and established-ASCVD cards); two decimals at most, as a doctor reads a
    lab value (3.626 converted from mg/dL: 3.63)."""
    value = f"{round(float(check.value or 0), 2):g}"
    if lang == "zh":
        return f"LDL-C {value} mmol/L，{'已达标' if check.met else '未达标'}（目标 {check.target}）"
    return f"LDL-C {value} mmol/L: {'at target' if check.met else 'not at target'} ({check.target})"


def _follow_up(x: AssessRequest, par: cp.ChinaParResult | None) -> fu.FollowUpResult | NotComputed:
    conditions = list(dict.fromkeys(x.conditions))
    if x.has_diabetes() and x.diabetes_type != "type1" and "type2_diabetes" not in conditions:
        conditions.append("type2_diabetes")
    if x.diabetes_type == "type1" and "type2_diabetes" in conditions:
        conditions.remove("type2_diabetes")
    if not conditions:
        if x.diabetes_type == "type1":
            return NotComputed(
                score="follow_up",
                reason="type 1 diabetes: the type 2 diabetes follow-up rules do not apply "
                "(urgent readings, danger symptoms and the diabetes vital signs are still checked)",
                reason_zh="1型糖尿病：2型糖尿病随访规则不适用（仍检查危急读数、危急症状和糖尿病"
                "危急体征）",
            )
        return NotComputed(
            score="follow_up",
            reason="no hypertension or type 2 diabetes in conditions: follow-up rules do not apply "
            "(urgent readings and danger symptoms are still checked)",
            reason_zh="无高血压或2型糖尿病诊断：随访规则不适用（仍检查危急读数和危急症状）",
        )
    fup_input = _calculator_input(
        x,
        fu.FollowUpInput,
        "follow_up",
        {
            "conditions": (conditions, "conditions"),
            "type1_diabetes": (x.diabetes_type == "type1", ""),
            "ckd": (x.ckd or x.ckd_stage_3_4, "ckd"),
            "ascvd_high_risk_basis": (ascvd_high_risk_basis(par), ""),
        },
    )
    return fup_input if isinstance(fup_input, NotComputed) else fu.follow_up(fup_input)


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
    "emergency": {
        "en": "Emergency: call 120 / transfer to an emergency department now; give first aid "
        "while waiting; follow up the transfer within 2 weeks.",
        "zh": "急救：立即拨打120或立即转运至急诊，等待期间给予初步处理；2周内随访转诊情况。",
    },
    "urgent": {
        "en": "Urgent referral: arrange transfer to a higher-level hospital now and "
        "follow up within 2 weeks.",
        "zh": "紧急转诊：立即安排转上级医院，2周内主动随访转诊情况。",
    },
    "routine": {
        "en": "Routine referral: refer to a specialist; follow up within 2 weeks.",
        "zh": "建议转诊至上级医院专科，2周内随访。",
    },
    "cvd-high": {
        "en": "ASCVD risk high: lifestyle change and drug treatment of risk factors (BP, lipids, "
        "glucose) under a doctor; yearly check-up.",
        "zh": "心血管病风险高危：改善生活方式，并在医生指导下针对危险因素降压、调脂、降糖治疗，"
        "至少每年体检一次。",
    },
    "cvd-intermediate": {
        "en": "10-year ASCVD risk 5-9.9 % (intermediate): stop smoking, control weight, "
        "be active; consider treatment with a doctor.",
        "zh": "10年心血管病风险5%–9.9%（中危）：戒烟、控制体重、增加体力活动，必要时在医生指导下"
        "治疗。",
    },
    "cvd-established": {
        "en": "Established ASCVD: very high risk, secondary prevention: LDL-C target < 1.8 mmol/L "
        "(Lipid 2016), BP, glucose and lifestyle managed with the specialist.",
        "zh": "已确诊动脉粥样硬化性心血管病：极高危，二级预防：LDL-C目标<1.8毫摩尔/升（2016年血脂"
        "指南），与专科共同管理血压、血糖和生活方式。",
    },
    "cvd-low": {
        "en": "10-year ASCVD risk < 5 % (low): keep a healthy lifestyle.",
        "zh": "10年心血管病风险<5%（低危）：保持健康生活方式。",
    },
    "model": {
        "en": "Learned-model score (demo, not for clinical use): {p:.0%} probability of "
        "high diabetes progression.",
        "zh": "机器学习模型（演示，不用于临床）：糖尿病进展较快的概率{p:.0%}。",
    },
    "model-overridden": {
        "en": "A referral rule applies: the model score does not change the referral.",
        "zh": "已触发转诊规则：模型评分不改变转诊决定。",
    },
}


class _Decision:
    """Criteria collected from every rule, each with its level; the most severe one wins."""

    def __init__(self, lang: Language) -> None:
        self.lang = lang
        self.items: list[tuple[str, Reason]] = []

    def add(self, level: str, reason: Reason) -> None:
        if all((r.code, r.en) != (reason.code, reason.en) for _, r in self.items):
            self.items.append((level, reason))

    def level(self) -> Level:
        if not self.items:
            return "none"
        best = min(self.items, key=lambda item: LEVEL_ORDER[item[0]])[0]
        return best  # type: ignore[return-value]

    def referral(self) -> Referral:
        ordered = sorted(self.items, key=lambda item: LEVEL_ORDER[item[0]])
        return Referral(
            level=self.level(),
            reasons=[getattr(r, self.lang) for _, r in ordered],
            sources=list(dict.fromkeys(r.source for _, r in ordered if r.source)),
        )


#: RCP 2017 aggregate-score bands that set an action level: band -> (level, code, range en / zh).
NEWS2_BAND_ACTIONS: dict[str, tuple[str, str, str, str]] = {
    "score-7-plus": ("emergency", "news2-7", ">= 7", "≥7"),
    "score-5-6": ("urgent", "news2-5", "5-6", "5-6"),
}


def _news2_criteria(
    n2: nw.News2Result | nw.News2LowerBound, deteriorating: bool | None, d: _Decision
) -> None:
    """RCP 2017 responses mapped to primary-care action levels.

    A floor (``News2LowerBound``, some parameters not recorded) acts on the triggers it already
    crosses, since the missing parameters can only add points; its reasons say it is a floor.
    """
    floor = isinstance(n2, nw.News2LowerBound)
    score = n2.score_at_least if isinstance(n2, nw.News2LowerBound) else n2.score
    band = nw.response_band(score, n2.single_parameter_3)
    if isinstance(n2, nw.News2LowerBound):
        gaps_en = ", ".join(n2.missing)
        gaps_zh = "、".join(nw.PARAMETER_ZH.get(m, m) for m in n2.missing)
        score_en = f"NEWS2 at least {score} from the recorded parameters (not recorded: {gaps_en})"
        score_zh = f"NEWS2至少{score}分（按已记录参数，未记录：{gaps_zh}）"
    else:
        score_en, score_zh = f"NEWS2 {score}", f"NEWS2 {score}分"
    if band in NEWS2_BAND_ACTIONS:
        level, code, en_range, zh_range = NEWS2_BAND_ACTIONS[band]
        risk: nw.Risk = nw.RESPONSES[band]["risk"]  # type: ignore[assignment]
        d.add(
            level,
            Reason(
                code=code,
                en=f"{score_en} ({en_range}, {risk})" if not floor else f"{score_en}: {en_range}",
                zh=f"{score_zh}（{zh_range}，{NEWS2_RISK_ZH[risk]}）"
                if not floor
                else f"{score_zh}：{zh_range}",
                source=nw.NEWS2_SOURCE,
            ),
        )
    if n2.single_parameter_3:
        threes = [k for k, v in n2.parameters.items() if v == 3]
        level = "emergency" if deteriorating else "urgent"
        d.add(
            level,
            Reason(
                code="news2-single-3",
                en=f"a single NEWS2 parameter scores 3 ({', '.join(threes)})"
                + (" with deterioration" if deteriorating else ""),
                zh=f"NEWS2单项参数评分为3分（{'、'.join(nw.PARAMETER_ZH[k] for k in threes)}）"
                + ("且病情恶化" if deteriorating else ""),
                source=nw.NEWS2_SOURCE,
            ),
        )


def _qsofa_criteria(
    score: int, suspected_infection: bool | None, d: _Decision, at_least: bool = False
) -> None:
    """Sepsis-3: qSOFA >= 2 with suspected infection is an emergency; unknown infection urgent.

    ``at_least``: the score counts only the criteria recorded (two met already make it >= 2).
    """
    if score < 2 or suspected_infection is False:
        return
    infected = suspected_infection is True
    shown_en = (
        f"qSOFA at least {score} from the recorded criteria" if at_least else f"qSOFA {score}"
    )
    shown_zh = f"qSOFA至少{score}分（按已记录指标）" if at_least else f"qSOFA {score}分"
    d.add(
        "emergency" if infected else "urgent",
        Reason(
            code="qsofa",
            en=f"{shown_en} "
            + ("with suspected infection" if infected else "(ask whether infection is suspected)"),
            zh=shown_zh + ("且怀疑感染" if infected else "（请确认是否怀疑感染）"),
            source=nw.QSOFA_SOURCE,
        ),
    )


def _readings_criteria(x: AssessRequest, d: _Decision, child: bool) -> None:
    """The danger criteria for every patient, with or without a diagnosis
    (``followup.danger_criteria``), and a child's own limits for hypotension, SpO2 and
    responsiveness under 16, where no score runs."""
    found = fu.danger_criteria(
        x,
        hypertension="hypertension" in x.conditions,
        diabetes=bool(x.has_diabetes()),
        child=child,
    )
    if child and x.age is not None:
        found += ur.child_criteria(x.age, x.sbp_mmhg, x.spo2, x.consciousness)
    for criterion in found:
        d.add(criterion.level, criterion.reason)


def _cvd_guidance(par: cp.ChinaParResult, lang: Language) -> list[str]:
    lines: list[str] = []
    if par.route == "established-ascvd":
        lines.append(GUIDANCE["cvd-established"][lang])
    if par.route == "direct-high-risk":
        reasons = "; ".join(par.direct_high_risk_reasons)
        lines.append(
            f"High ASCVD risk without calculation (2019 guideline): {reasons}."
            if lang == "en"
            else "无需计算，直接列为心血管病高危（2019年指南）："
            + "；".join(DIRECT_ZH.get(r, r) for r in par.direct_high_risk_reasons)
            + "。"
        )
    if par.category:
        if par.risk_10y_percent is not None:
            lines.append(
                f"China-PAR 10-year ASCVD risk {par.risk_10y_percent:.1f} % ({par.category})."
                if lang == "en"
                else f"China-PAR 10年心血管病风险{par.risk_10y_percent:.1f}%（"
                f"{CATEGORY_ZH[par.category]}）。"
            )
        lines.append(GUIDANCE[f"cvd-{par.category}"][lang])
    lines += [getattr(c, lang) for c in par.cautions]
    if par.lifetime_risk_assessment is not None:
        lines.append(getattr(par.lifetime_risk_assessment, lang))
    return lines


DIRECT_ZH = {
    "diabetes at age >= 40": "糖尿病且年龄≥40岁",
    "LDL-C >= 4.9 mmol/L": "LDL-C≥4.9毫摩尔/升",
    "TC >= 7.2 mmol/L": "TC≥7.2毫摩尔/升",
    "grade 3 hypertension (>= 180 and/or >= 110 mmHg)": "3级高血压（≥180和/或≥110 mmHg）",
    "chronic kidney disease stage 3-4": "慢性肾脏病3-4期",
}


def assess(x: AssessRequest, predictor: TabularPredictor | None, lang: Language) -> AssessResult:
    """Run every score that the summary allows; the rules decide the referral level."""
    not_computed: list[NotComputed] = []
    child = x.age is not None and x.age < nw.NEWS2_MIN_AGE
    adult = x.age is None or x.age >= ADULT_MIN_AGE
    skipped = NotComputed(
        score="",
        reason=UNDER_16 if child else ADULT_ONLY,
        reason_zh=UNDER_16_ZH if child else ADULT_ONLY_ZH,
    )
    par_or = _china_par(x) if adult else skipped.model_copy(update={"score": "china_par"})
    n2_or = skipped.model_copy(update={"score": "news2"}) if child else _news2(x, lang)
    qs_or = _qsofa(x, lang) if adult else skipped.model_copy(update={"score": "qsofa"})
    par = par_or if isinstance(par_or, cp.ChinaParResult) else None
    fup_or = _follow_up(x, par) if adult else skipped.model_copy(update={"score": "follow_up"})
    n2 = n2_or if isinstance(n2_or, nw.News2Result) else None
    qs = qs_or if isinstance(qs_or, nw.QsofaResult) else None
    fup = fup_or if isinstance(fup_or, fu.FollowUpResult) else None
    not_computed += [v for v in (par_or, n2_or, qs_or, fup_or) if isinstance(v, NotComputed)]

    decision = _Decision(lang)
    guidance: list[str] = []
    fup_line: int | None = None  # where the follow-up's advice is, replaced if another rule refers
    if n2 is not None:
        _news2_criteria(n2, x.deteriorating, decision)
        monitoring = f"NEWS2 {n2.score}: {n2.monitoring}. {n2.clinical_response}"
        guidance.append(
            monitoring
            if lang == "en"
            else f"NEWS2 {n2.score}分：{n2.monitoring}。{n2.clinical_response}"
        )
    news2_floor: nw.News2LowerBound | None = None
    if n2 is None and not child:
        floor = nw.news2_lower_bound({k: getattr(x, k) for k in nw.News2Input.model_fields})
        if floor.parameters:
            news2_floor = floor
            _news2_criteria(floor, x.deteriorating, decision)
        if floor.score_at_least > 0:  # "at least 0" says nothing
            missing_zh = "、".join(nw.PARAMETER_ZH.get(m, m) for m in floor.missing)
            guidance.append(
                f"NEWS2 incomplete: at least {floor.score_at_least} from the recorded parameters; "
                f"record {', '.join(floor.missing)} to complete it."
                if lang == "en"
                else f"NEWS2不完整：按已记录参数至少{floor.score_at_least}分；请补充{missing_zh}。"
            )
    if qs is not None:
        _qsofa_criteria(qs.score, qs.suspected_infection, decision)
        if qs.positive:
            guidance.append(qs.interpretation)
    elif adult:
        known = nw.qsofa_criteria_known(x.respiratory_rate, x.sbp_mmhg, x.consciousness)
        _qsofa_criteria(sum(known.values()), x.suspected_infection, decision, at_least=True)
    _readings_criteria(x, decision, child)
    if fup is not None:
        for reason in fup.urgent_reasons:
            level = "emergency" if reason.code in EMERGENCY_CODES else "urgent"
            decision.add(level, reason)
        for reason in fup.routine_reasons:
            decision.add("routine", reason)
        fup_line = len(guidance)
        guidance.append(getattr(fup.advice, lang))
    ldl = ldl_target_check(x, par) if fup is None else None
    if par is not None:
        guidance += _cvd_guidance(par, lang)
        if ldl is not None:
            guidance.append(ldl_line(ldl, lang))
        if not par.applicable:
            not_computed.append(
                NotComputed(
                    score="china_par",
                    reason=par.reason or "not applicable",
                    reason_zh=CHINA_PAR_NOT_APPLICABLE_ZH.get(par.route),
                )
            )
    level = decision.level()
    if fup is not None and fup_line is not None and level != "none":
        # the follow-up now advises the referral, which the level's own first line says already
        fup = fu.after_referral(fup, level)
        del guidance[fup_line]
    learned: dict[str, Any] | None = None
    if not adult:
        not_computed.append(skipped.model_copy(update={"score": "learned_model"}))
    elif x.has_diabetes():
        values, missing = model_inputs(x)
        if predictor is None:
            not_computed.append(
                NotComputed(
                    score="learned_model",
                    reason="model bundle not available on this server",
                    reason_zh="服务器未安装模型",
                )
            )
        elif missing:
            not_computed.append(
                NotComputed(
                    score="learned_model",
                    reason="inputs missing",
                    missing=missing,
                    reason_zh="缺少输入",
                )
            )
        else:
            try:
                prediction = predictor.predict(values)
            except (BundleError, ValueError) as exc:
                not_computed.append(
                    NotComputed(score="learned_model", reason=str(exc), reason_zh="模型无法计算")
                )
            else:
                learned = prediction.model_dump()
                learned["overridden_by_urgent_rule"] = level in ("emergency", "urgent")
                guidance.append(GUIDANCE["model"][lang].format(p=prediction.probability))
                if level in ("emergency", "urgent"):  # as overridden_by_urgent_rule says
                    guidance.append(GUIDANCE["model-overridden"][lang])
    else:
        not_computed.append(
            NotComputed(
                score="learned_model",
                reason="applies only to patients with diabetes (its training population)",
                reason_zh="仅适用于糖尿病患者（模型的训练人群）",
            )
        )
    if child:
        guidance.insert(0, NOT_ASSESSED["detail"][lang])
    if level != "none":
        guidance.insert(0, GUIDANCE[level][lang])
    return AssessResult(
        language=lang,
        china_par=par,
        news2=n2,
        news2_at_least=news2_floor,
        qsofa=qs,
        follow_up=fup,
        ldl_target=ldl,
        learned_model=learned,
        referral=decision.referral(),
        guidance=guidance,
        not_computed=not_computed,
        disclaimer=NOT_FOR_CLINICAL[lang],
    )


#: Follow-up reasons that are emergencies (``urgent.bp_criteria`` / ``glucose_criteria``).
EMERGENCY_CODES = frozenset(
    {"hypertensive-emergency", "severe-hypoglycaemia"}
    | {f"symptom-{symptom}" for symptom in fu.STROKE_SYMPTOMS}
)


def news2_action(
    n2: nw.News2Result, deteriorating: bool | None, lang: Language
) -> tuple[Level, list[str]]:
    """The action level NEWS2 alone calls for, and why (for the stand-alone NEWS2 route)."""
    decision = _Decision(lang)
    _news2_criteria(n2, deteriorating, decision)
    referral = decision.referral()
    return referral.level, referral.reasons


def qsofa_action(qs: nw.QsofaResult, lang: Language) -> tuple[Level, list[str]]:
    """The action level qSOFA alone calls for, and why (for the stand-alone qSOFA route)."""
    decision = _Decision(lang)
    _qsofa_criteria(qs.score, qs.suspected_infection, decision)
    referral = decision.referral()
    return referral.level, referral.reasons


def china_par_guidance(par: cp.ChinaParResult, lang: Language) -> list[str]:
    """China-PAR guidance lines in one language (route, category, cautions, lifetime risk)."""
    return _cvd_guidance(par, lang)
