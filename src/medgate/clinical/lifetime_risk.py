"""Remaining-lifetime ASCVD risk (余生危险) by the Chinese lipid guidelines' five-factor rule.

Source: 中国成人血脂异常防治指南（2016年修订版）, 图1 ASCVD危险评估流程图, kept unchanged in
中国血脂管理指南（2023年）: "ASCVD 10年发病危险为中危且年龄<55岁者，应进行余生危险评估。具有以下
任意2项及以上危险因素者，定义为高危：① 收缩压≥160 mmHg 或舒张压≥100 mmHg；② 非HDL-C≥5.2 mmol/L
(200 mg/dL)；③ HDL-C<1.0 mmol/L (40 mg/dL)；④ 体重指数≥28 kg/m²；⑤ 吸烟。"

Why a rule and not the China-PAR lifetime model: the lifetime equations (Liu FC et al., Sci Bull
2018;63:779-787, high if >= 32.8 %) print their coefficients only in a supplement that is not
available offline, so medgate does not compute them. The guideline rule applies only where the
guideline applies it (10-year risk 5.0-9.9 % and age < 55). Elsewhere in 20-59 with a 10-year
risk < 10 % the answer says that the lifetime model is not computed and lists the five factors
for information, never as a lifetime-risk result.

Lipids are compared in mmol/L (the guideline's unit) after rounding to two decimals (laboratory
precision), so a value typed as 5.20 mmol/L is not lost to unit conversion; 200 mg/dL is
5.18 mmol/L and so falls just below the non-HDL-C threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from medgate.clinical import followup as fu
from medgate.clinical.common import GUIDELINE_2019, Reason

LIPID_2016 = (
    "中国成人血脂异常防治指南修订联合委员会. 中国成人血脂异常防治指南（2016年修订版）. "
    "中国循环杂志 2016;31(10):937-953, 图1 ASCVD危险评估流程图（余生危险）"
)
LIPID_2023 = (
    "中国血脂管理指南修订联合专家委员会. 中国血脂管理指南（2023年）. "
    "中国循环杂志 2023;38(3):237-271"
)
SOURCE = f"{LIPID_2016}; {LIPID_2023}"

#: Where the lifetime question is asked at all (GUIDELINE_2019): ages 20-59, 10-year risk < 10 %.
LIFETIME_AGE_RANGE = (20, 59)
#: China-PAR lifetime model threshold (not computed here; quoted in the answer).
LIFETIME_HIGH_PERCENT = 32.8
#: LIPID_2016 / LIPID_2023: the five-factor rule applies to 10-year intermediate risk below 55.
RULE_MAX_AGE_EXCLUSIVE = 55
INTERMEDIATE_RANGE = (5.0, 10.0)
FACTORS_FOR_HIGH = 2
#: LIPID_2016 / LIPID_2023 thresholds of the five factors.
THRESHOLDS = {
    "sbp_mmhg": 160.0,
    "dbp_mmhg": 100.0,
    "non_hdl_mmol_l": 5.2,
    "hdl_mmol_l_below": 1.0,
    "bmi": 28.0,
}
#: The high-risk LDL-C target that a lifetime-high person is managed to (LIPID_2016 高危).
HIGH_RISK_LDL_TARGET_MMOL_L = fu.THRESHOLDS["ldl_target_high"]

Status = Literal["high", "not-high", "undetermined", "not-computed"]


class RiskFactorInput(BaseModel):
    """The five factors' inputs; lipids in mmol/L. ``None`` means not given."""

    age: float
    sbp_mmhg: float
    dbp_mmhg: float | None = None
    non_hdl_mmol_l: float
    hdl_mmol_l: float
    bmi: float | None = None
    current_smoker: bool


@dataclass(frozen=True)
class Factor:
    """One of the guideline's five factors: its names and whether it is present (None: unknown)."""

    code: str
    en: str
    zh: str
    missing_input: str
    present: Callable[[RiskFactorInput], bool | None]


def _blood_pressure(x: RiskFactorInput) -> bool | None:
    if x.sbp_mmhg >= THRESHOLDS["sbp_mmhg"]:
        return True
    if x.dbp_mmhg is None:
        return None
    return x.dbp_mmhg >= THRESHOLDS["dbp_mmhg"]


FACTORS: tuple[Factor, ...] = (
    Factor(
        "blood-pressure",
        "SBP >= 160 or DBP >= 100 mmHg",
        "收缩压≥160 mmHg或舒张压≥100 mmHg",
        "dbp_mmhg",
        _blood_pressure,
    ),
    Factor(
        "non-hdl-c",
        "non-HDL-C >= 5.2 mmol/L",
        "非高密度脂蛋白胆固醇≥5.2毫摩尔/升",
        "",
        lambda x: round(x.non_hdl_mmol_l, 2) >= THRESHOLDS["non_hdl_mmol_l"],
    ),
    Factor(
        "low-hdl-c",
        "HDL-C < 1.0 mmol/L",
        "高密度脂蛋白胆固醇<1.0毫摩尔/升",
        "",
        lambda x: round(x.hdl_mmol_l, 2) < THRESHOLDS["hdl_mmol_l_below"],
    ),
    Factor(
        "obesity",
        "BMI >= 28 kg/m2",
        "体重指数≥28千克/平方米",
        "bmi",
        lambda x: None if x.bmi is None else x.bmi >= THRESHOLDS["bmi"],
    ),
    Factor("smoking", "current smoking", "吸烟", "", lambda x: x.current_smoker),
)


class LifetimeRisk(BaseModel):
    """The lifetime-risk answer: the factor count behind it, and its text.

    The text (``reason``) is left out of the serialised form: answers carry it once, as the
    China-PAR result's ``lifetime_risk_assessment``.
    """

    status: Status
    guideline_rule_applies: bool
    factors_present: list[str]
    factors_unknown: list[str]
    missing_inputs: list[str]
    reason: Reason = Field(exclude=True)


def _listing(factors: list[Factor], lang: Literal["en", "zh"]) -> str:
    if lang == "en":
        return "; ".join(f.en for f in factors) or "none"
    return "；".join(f.zh for f in factors) or "无"


def _rule_applies(age: float, risk_10y: float | None) -> bool:
    low, high = INTERMEDIATE_RANGE
    return risk_10y is not None and low <= risk_10y < high and age < RULE_MAX_AGE_EXCLUSIVE


def _rule_text(status: Status, present: list[Factor], unknown: list[Factor]) -> tuple[str, str]:
    n = len(present)
    en_list, zh_list = _listing(present, "en"), _listing(present, "zh")
    if status == "high":
        return (
            f"Remaining-lifetime risk HIGH (lipid guideline 2016/2023: 10-year risk intermediate, "
            f"age < 55, {n} of 5 risk factors: {en_list}): manage as high ASCVD risk, LDL-C "
            f"target < {HIGH_RISK_LDL_TARGET_MMOL_L:g} mmol/L.",
            f"余生危险高危（血脂指南2016/2023：10年风险中危、年龄<55岁，具有5项危险因素中的{n}项："
            f"{zh_list}）：按心血管病高危管理，低密度脂蛋白胆固醇目标<{HIGH_RISK_LDL_TARGET_MMOL_L:g}毫摩尔/升。",
        )
    if status == "not-high":
        return (
            f"Remaining-lifetime risk not high by the 2016/2023 lipid-guideline rule (10-year risk "
            f"intermediate, age < 55: {n} of 5 risk factors ({en_list}); high needs 2 or more).",
            f"按2016/2023年血脂指南规则，余生危险非高危（10年风险中危且年龄<55岁：5项危险因素中"
            f"具有{n}项（{zh_list}）；≥2项为高危）。",
        )
    missing = ", ".join(f.missing_input for f in unknown)
    return (
        f"Remaining-lifetime risk cannot be judged yet (lipid guideline 2016/2023: 10-year risk "
        f"intermediate, age < 55, high with 2 or more of 5 factors): {n} known ({en_list}), a "
        f"lower bound; not known: {_listing(unknown, 'en')} (give {missing}). Do not take "
        "lifetime risk as not high until these are given.",
        f"余生危险暂无法判断（血脂指南2016/2023：10年风险中危且年龄<55岁，5项危险因素中≥2项为"
        f"高危）：已知具有{n}项（{zh_list}），仅为下限；未知：{_listing(unknown, 'zh')}。"
        "补充后再判断，不能据此认为余生危险非高危。",
    )


def _not_computed_text(present: list[Factor], unknown: list[Factor]) -> tuple[str, str]:
    unknown_en = f"; not known: {_listing(unknown, 'en')}" if unknown else ""
    unknown_zh = f"；未知：{_listing(unknown, 'zh')}" if unknown else ""
    return (
        "Ages 20-59 with a 10-year risk below 10 %: assess lifetime risk (China-PAR lifetime "
        f"model, high if >= {LIFETIME_HIGH_PERCENT} %). medgate does not compute it: use the "
        "official calculator. For information only, not a lifetime-risk result: lipid-guideline "
        f"risk factors present: {_listing(present, 'en')}{unknown_en}.",
        "20-59岁且10年风险<10%：应评估心血管病终生风险（China-PAR终生风险模型，"
        f"≥{LIFETIME_HIGH_PERCENT}%为高危）。本系统不计算终生风险，请使用官方计算器。"
        f"以下仅供参考，不是终生风险结果：具有的血脂指南危险因素：{_listing(present, 'zh')}"
        f"{unknown_zh}。",
    )


def lifetime_risk(x: RiskFactorInput, risk_10y: float | None) -> LifetimeRisk | None:
    """The lifetime answer for ages 20-59 with 10-year risk < 10 % (None: the step does not apply).

    ``risk_10y`` is the rounded China-PAR 10-year risk, None where the equation does not apply
    (ages 20-34).
    """
    low, high = LIFETIME_AGE_RANGE
    if not low <= x.age <= high or (risk_10y is not None and risk_10y >= INTERMEDIATE_RANGE[1]):
        return None
    found = {f.code: f.present(x) for f in FACTORS}
    present = [f for f in FACTORS if found[f.code] is True]
    unknown = [f for f in FACTORS if found[f.code] is None]
    applies = _rule_applies(x.age, risk_10y)
    status: Status
    if not applies:
        status = "not-computed"
        en, zh = _not_computed_text(present, unknown)
    else:
        if len(present) >= FACTORS_FOR_HIGH:
            status = "high"
        elif len(present) + len(unknown) >= FACTORS_FOR_HIGH:
            status = "undetermined"
        else:
            status = "not-high"
        en, zh = _rule_text(status, present, unknown)
    return LifetimeRisk(
        status=status,
        guideline_rule_applies=applies,
        factors_present=[f.code for f in present],
        factors_unknown=[f.code for f in unknown],
        missing_inputs=[f.missing_input for f in unknown],
        reason=Reason(
            code=f"lifetime-risk-{status}",
            en=en,
            zh=zh,
            source=SOURCE if applies else GUIDELINE_2019,
        ),
    )
