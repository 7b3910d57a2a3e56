"""Hypertension / type 2 diabetes follow-up against the service specification and guidelines.

Spec 2017 = 国家基本公共卫生服务规范（第三版，2017）, 高血压 / 2型糖尿病患者健康管理服务规范
(危急情况, 分类干预). HTN 2020 = 国家基层高血压防治管理指南（2020版）. DM 2022 = 国家基层糖尿病
防治管理指南（2022）. Lipid 2016 = 中国成人血脂异常防治指南（2016年修订版）. CDS 2020 = 中国2型
糖尿病防治指南（2020年版）, 低血糖分级. HTN 2018 = 中国高血压防治指南（2018年修订版）, 高血压急症.
"""

from __future__ import annotations

import pytest

from medgate.clinical import followup as fu


def run(**fields: object) -> fu.FollowUpResult:
    fields.setdefault("conditions", ["hypertension", "type2_diabetes"])
    return fu.follow_up(fu.FollowUpInput(**fields))


# (fields, urgent, emergency, source)
URGENT = [
    ({"sbp_mmhg": 179, "dbp_mmhg": 109}, False, False, "Spec 2017: below 180/110"),
    ({"sbp_mmhg": 180, "dbp_mmhg": 90}, True, False, "Spec 2017: SBP >= 180"),
    ({"sbp_mmhg": 150, "dbp_mmhg": 110}, True, False, "Spec 2017: DBP >= 110"),
    (
        {"sbp_mmhg": 186, "dbp_mmhg": 112, "symptoms": ["chest_pain"]},
        True,
        True,
        "HTN 2018: BP crisis with organ-damage symptoms -> hypertensive emergency",
    ),
    ({"fasting_glucose_mmol_l": 16.6}, False, False, "Spec 2017: glucose < 16.7"),
    ({"fasting_glucose_mmol_l": 16.7}, True, False, "Spec 2017: glucose >= 16.7"),
    ({"fasting_glucose_mmol_l": 4.0}, False, False, "Spec 2017: glucose > 3.9"),
    ({"fasting_glucose_mmol_l": 3.9}, True, False, "Spec 2017: glucose <= 3.9"),
    ({"random_glucose_mmol_l": 3.0}, True, False, "CDS 2020: 3.0 is level 1 (3.0-<3.9)"),
    ({"random_glucose_mmol_l": 2.9}, True, True, "CDS 2020: < 3.0 is level 2 -> emergency"),
    (
        {"random_glucose_mmol_l": 3.5, "consciousness": "C"},
        True,
        True,
        "CDS 2020: hypoglycaemia with altered consciousness is level 3 -> emergency",
    ),
    ({"heart_rate": 100}, False, False, "Spec 2017 diabetes: HR > 100"),
    ({"heart_rate": 101}, True, False, "Spec 2017 diabetes: HR > 100 (持续性心动过速)"),
    ({"temperature_c": 39.0}, False, False, "Spec 2017 diabetes: temperature > 39"),
    ({"temperature_c": 39.1}, True, False, "Spec 2017 diabetes: temperature > 39"),
    ({"consciousness": "V"}, True, False, "Spec 2017: 意识改变"),
    (
        {"pregnant_or_lactating": True, "sbp_mmhg": 128, "dbp_mmhg": 80},
        False,
        False,
        "Spec 2017: pregnancy only 同时血压高于正常",
    ),
    (
        {"pregnant_or_lactating": True, "sbp_mmhg": 140, "dbp_mmhg": 80},
        True,
        False,
        "Spec 2017: pregnancy with BP above normal",
    ),
    (
        {"pregnant_or_lactating": True, "fasting_glucose_mmol_l": 6.1},
        True,
        False,
        "Spec 2017: pregnancy with glucose above normal (fasting >= 6.1, WHO 1999 range)",
    ),
    (
        {"pregnant_or_lactating": True, "fasting_glucose_mmol_l": 5.0},
        False,
        False,
        "Spec 2017: pregnancy with normal glucose",
    ),
]


@pytest.mark.parametrize(("fields", "urgent", "emergency", "source"), URGENT)
def test_urgent_and_emergency_criteria(
    fields: dict, urgent: bool, emergency: bool, source: str
) -> None:
    result = run(**fields)
    assert (result.urgent_referral, result.emergency) == (urgent, emergency), source


# (conditions, field, value, urgent, source)
DIAGNOSIS_SPECIFIC = [
    (["hypertension"], "heart_rate", 120, False, "Spec 2017: HR > 100 is a diabetes criterion"),
    (["type2_diabetes"], "heart_rate", 120, True, "Spec 2017: diabetes list"),
    (["hypertension"], "temperature_c", 39.5, False, "Spec 2017: fever is a diabetes criterion"),
    (["hypertension"], "fasting_glucose_mmol_l", 17.0, True, "issue 22: any diagnosis"),
    (["hypertension"], "random_glucose_mmol_l", 3.2, True, "issue 22: any diagnosis"),
]


@pytest.mark.parametrize(("conditions", "field", "value", "urgent", "source"), DIAGNOSIS_SPECIFIC)
def test_diagnosis_specific_criteria(
    conditions: list[str], field: str, value: float, urgent: bool, source: str
) -> None:
    assert run(conditions=conditions, **{field: value}).urgent_referral is urgent, source


# each 2017 list is urgent for its own patients; the universal ones (medgate's choice: chest
# pain and tightness, breathlessness lying flat, behaviour change, sudden loss of vision,
# ketoacidosis signs) for everyone. (symptom, urgent with hypertension, with diabetes, source)
SYMPTOMS = [
    ("severe_headache", True, False, "Spec 2017 hypertension: 剧烈头痛"),
    ("severe_dizziness", True, False, "Spec 2017 hypertension: 头晕"),
    ("nausea_vomiting", True, True, "Spec 2017 both: 恶心呕吐"),
    ("blurred_vision", True, False, "Spec 2017 hypertension: 视力模糊"),
    ("eye_pain", True, False, "Spec 2017 hypertension: 眼痛"),
    ("palpitations", True, True, "Spec 2017 both: 心悸"),
    ("chest_tightness", True, True, "Spec 2017 hypertension: 胸闷; universal"),
    ("dyspnoea", True, True, "Spec 2017 hypertension: 喘憋不能平卧; universal"),
    ("behaviour_change", True, True, "Spec 2017 diabetes: 意识或行为改变; universal"),
    ("fruity_breath", True, True, "Spec 2017 diabetes: 呼气有烂苹果样丙酮味; universal"),
    ("profuse_sweating", False, True, "Spec 2017 diabetes: 出汗"),
    ("loss_of_appetite", False, True, "Spec 2017 diabetes: 食欲减退"),
    ("polyuria_polydipsia", False, True, "Spec 2017 diabetes: 多饮、多尿"),
    ("abdominal_pain", False, True, "Spec 2017 diabetes: 腹痛"),
    ("deep_rapid_breathing", True, True, "Spec 2017 diabetes: 有深大呼吸; universal"),
    ("skin_flushing", False, True, "Spec 2017 diabetes: 皮肤潮红"),
    ("sudden_vision_loss", True, True, "Spec 2017 diabetes: 视力突然骤降; universal"),
    ("chest_pain", True, True, "medgate: conservative addition; universal"),
    (
        "one_sided_weakness",
        True,
        True,
        "Stroke 1-2-0 (Lancet Neurol 2017): arm weakness; universal",
    ),
    ("slurred_speech", True, True, "Stroke 1-2-0 (Lancet Neurol 2017): unclear speech; universal"),
    ("facial_droop", True, True, "Stroke 1-2-0 (Lancet Neurol 2017): face asymmetry; universal"),
]


@pytest.mark.parametrize(("symptom", "hypertension", "diabetes", "source"), SYMPTOMS)
def test_each_symptom_list_is_urgent_for_its_own_patients(
    symptom: str, hypertension: bool, diabetes: bool, source: str
) -> None:
    for conditions, urgent in ((["hypertension"], hypertension), (["type2_diabetes"], diabetes)):
        result = run(conditions=conditions, symptoms=[symptom])
        assert result.urgent_referral is urgent, (conditions, source)
        if urgent:
            assert result.next_follow_up_days == 14, source
            assert fu.SYMPTOM_TEXT[symptom][1] in [r.zh for r in result.urgent_reasons]


# (fields, office target, controlled, source)
BP_TARGETS = [
    ({"age": 60, "sbp_mmhg": 139, "dbp_mmhg": 89}, "140/90", True, "Spec 2017: < 140/90"),
    ({"age": 60, "sbp_mmhg": 140, "dbp_mmhg": 89}, "140/90", False, "Spec 2017: < 140/90"),
    ({"age": 64, "sbp_mmhg": 145, "dbp_mmhg": 80}, "140/90", False, "Spec 2017: under 65"),
    ({"age": 65, "sbp_mmhg": 149, "dbp_mmhg": 89}, "150/90", True, "Spec 2017: >= 65 < 150/90"),
    ({"age": 65, "sbp_mmhg": 150, "dbp_mmhg": 80}, "150/90", False, "Spec 2017: >= 65 < 150/90"),
    (
        {"age": 79, "sbp_mmhg": 145, "dbp_mmhg": 80, "elderly_target_age": 80},
        "140/90",
        False,
        "HTN 2020 (elderly age 80): 79 keeps < 140/90",
    ),
    (
        {"age": 80, "sbp_mmhg": 145, "dbp_mmhg": 80, "elderly_target_age": 80},
        "150/90",
        True,
        "HTN 2020: >= 80 < 150/90",
    ),
    (
        {"age": 60, "sbp_mmhg": 129, "dbp_mmhg": 79, "ckd": True},
        "130/80",
        True,
        "HTN 2020: CKD < 130/80",
    ),
    (
        {"age": 60, "sbp_mmhg": 130, "dbp_mmhg": 79, "ckd": True},
        "130/80",
        False,
        "HTN 2020: CKD < 130/80",
    ),
]


@pytest.mark.parametrize(("fields", "target", "controlled", "source"), BP_TARGETS)
def test_bp_targets(fields: dict, target: str, controlled: bool, source: str) -> None:
    result = run(conditions=["hypertension"], **fields)
    assert result.status[0].target == f"office BP < {target} mmHg", source
    assert result.status[0].controlled is controlled, source
    assert result.next_follow_up_days == (90 if controlled else 14), source


def test_diabetes_with_hypertension_targets_130_80() -> None:
    """DM 2022 / HTN 2020: < 130/80 with diabetes."""
    result = run(age=60, sbp_mmhg=135, dbp_mmhg=78, fasting_glucose_mmol_l=6.0)
    bp = next(s for s in result.status if s.condition == "hypertension")
    assert bp.target == "office BP < 130/80 mmHg" and bp.controlled is False


# (fields, controlled, source)
GLUCOSE_TARGETS = [
    ({"fasting_glucose_mmol_l": 6.9}, True, "Spec 2017: fasting < 7.0"),
    ({"fasting_glucose_mmol_l": 7.0}, False, "Spec 2017: fasting < 7.0"),
    ({"hba1c_percent": 6.9}, True, "DM 2022: HbA1c < 7.0 %"),
    ({"hba1c_percent": 7.0}, False, "DM 2022: HbA1c < 7.0 %"),
    (
        {"fasting_glucose_mmol_l": 6.5, "hba1c_percent": 7.5},
        False,
        "DM 2022: HbA1c used when given, not overridden by one fasting value",
    ),
    ({"random_glucose_mmol_l": 9.9}, True, "DM 2022: non-fasting < 10.0"),
    ({"random_glucose_mmol_l": 10.0}, False, "DM 2022: non-fasting < 10.0"),
]


@pytest.mark.parametrize(("fields", "controlled", "source"), GLUCOSE_TARGETS)
def test_glucose_targets(fields: dict, controlled: bool, source: str) -> None:
    result = run(conditions=["type2_diabetes"], **fields)
    assert result.status[0].controlled is controlled, source


# (fields, LDL-C target, source)
LDL_TARGETS = [
    ({"conditions": ["hypertension"]}, 3.4, "Lipid 2016: low / intermediate risk < 3.4"),
    ({"conditions": ["type2_diabetes"]}, 2.6, "Lipid 2016 / DM 2022: diabetes < 2.6"),
    ({"conditions": ["hypertension"], "ckd": True}, 2.6, "Lipid 2016: CKD high risk < 2.6"),
    ({"conditions": ["type2_diabetes"], "ascvd": True}, 1.8, "Lipid 2016 / DM 2022: ASCVD < 1.8"),
]


@pytest.mark.parametrize(("fields", "target", "source"), LDL_TARGETS)
def test_ldl_targets_by_risk(fields: dict, target: float, source: str) -> None:
    below = run(ldl_cholesterol_mmol_l=round(target - 0.1, 1), **fields)
    at = run(ldl_cholesterol_mmol_l=target, **fields)
    ldl = next(t for t in below.targets if t.measure == "ldl_cholesterol_mmol_l")
    assert ldl.target == f"< {target:g} mmol/L" and ldl.met is True, source
    assert [t.met for t in at.targets if t.measure == "ldl_cholesterol_mmol_l"] == [False]


@pytest.mark.parametrize(
    "fields",
    [
        {"sbp_mmhg": 128, "dbp_mmhg": 76, "fasting_glucose_mmol_l": 6.0},
        {"sbp_mmhg": 150, "dbp_mmhg": 95},
        {"sbp_mmhg": 128, "dbp_mmhg": 76},  # glucose missing: control unknown
        {"sbp_mmhg": 190, "dbp_mmhg": 100},
        {"medication_adverse_reaction": True, "sbp_mmhg": 120, "dbp_mmhg": 70},
    ],
)
def test_advice_text_never_disagrees_with_next_visit(fields: dict) -> None:
    """Issue 22: "3 months" was shown with next_follow_up_days 14."""
    result = run(**fields)
    days = result.next_follow_up_days
    assert f"{days} days" in result.advice.en and f"{days}天" in result.advice.zh
    assert "3 months" not in result.advice.en


def test_adverse_reaction_is_its_own_input() -> None:
    """Spec 2017: an adverse reaction -> adjust, 2 weeks; hard to control -> referral."""
    controlled = {"conditions": ["hypertension"], "sbp_mmhg": 120, "dbp_mmhg": 70}
    adr = run(**controlled, medication_adverse_reaction=True)
    assert not adr.routine_referral and adr.next_follow_up_days == 14
    hard = run(**controlled, adverse_reaction_hard_to_control=True)
    assert hard.routine_referral and [r.code for r in hard.routine_reasons] == ["adverse-reaction"]
    # no longer inferred from an uncontrolled previous visit
    inferred = run(**controlled, medication_adverse_reaction=True, previous_visit_uncontrolled=True)
    assert not inferred.routine_referral


def test_impossible_bp_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="not below systolic"):
        run(sbp_mmhg=80, dbp_mmhg=150)
