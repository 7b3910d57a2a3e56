"""Golden tests of the guidance rules at every boundary, in Chinese and English."""

from __future__ import annotations

import pytest
from tests.support.reports_data import (
    CARDIOMEGALY,
    CTR,
    DIAMETER,
    EFFUSION,
    LUNG,
    MM,
    NODULE,
    ONE,
    PNEUMOTHORAX,
)

from medgate.clinical.context import StudyContext
from medgate.clinical.guidance import (
    AI_NOTE,
    RULESET_VERSION,
    fleischner_category,
    guidance_for,
    nodule_size_mm,
)
from medgate.models.findings import (
    Code,
    Finding,
    GuidanceStatement,
    Measurement,
    ModelResult,
    StudyResult,
)

LONG_AXIS = Code(value="103339001", scheme="SCT", meaning="Long axis")
SHORT_AXIS = Code(value="103340004", scheme="SCT", meaning="Short axis")


def _study(findings: list[Finding], measurements: list[Measurement] | None = None) -> StudyResult:
    result = ModelResult(
        bundle_name="test_bundle",
        bundle_version="1.0.0",
        task="classification",
        findings=findings,
        measurements=measurements or [],
    )
    return StudyResult(study_instance_uid="1.2.3", model_results=[result])


def _nodule(size: float | None, present: bool = True, label: str = "solid_nodule") -> Finding:
    measurements = [Measurement(name=DIAMETER, value=size, unit=MM)] if size is not None else []
    return Finding(
        label=label,
        finding_type=NODULE,
        finding_site=LUNG,
        probability=0.9 if present else 0.1,
        present=present,
        measurements=measurements,
    )


def _finding(code: Code, label: str, present: bool = True) -> Finding:
    return Finding(label=label, finding_type=code, probability=0.8, present=present)


def _only(statements: list[GuidanceStatement]) -> GuidanceStatement:
    assert len(statements) == 1, [s.rule_id for s in statements]
    return statements[0]


# ------------------------------------------------------------------------- Fleischner boundaries
# Corrected (issue 22): the band is chosen on the size rounded to a whole millimetre (Bankier
# 2017), so 5.9 mm is a 6-8 mm nodule and 8.1 mm still 6-8 mm; the old test put them in <6 / >8.
@pytest.mark.parametrize(
    ("size", "band"),
    [
        (5.4, "<6"),
        (5.5, "6-8"),
        (5.9, "6-8"),
        (6.0, "6-8"),
        (7.9, "6-8"),
        (8.0, "6-8"),
        (8.1, "6-8"),
        (8.4, "6-8"),
        (8.5, ">8"),
        (0.5, "<6"),
        (30, ">8"),
    ],
)
def test_fleischner_band_boundaries(size: float, band: str) -> None:
    assert fleischner_category(size) == band


# (size, risk) -> (urgency, English action, Chinese action); MacMahon 2017 Table 1 A, single solid
FLEISCHNER_GOLDEN = [
    (5.4, "low", "routine", "No routine follow-up CT is needed.", "无需常规CT随访。"),
    (
        5.4,
        "high",
        "routine",
        "Optional follow-up chest CT at 12 months.",
        "可选择在12个月时复查胸部CT。",
    ),
    (
        5.5,
        "low",
        "routine",
        "Follow-up chest CT at 6-12 months, then consider CT at 18-24 months.",
        "6-12个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    (
        5.5,
        "high",
        "routine",
        "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
        "6-12个月复查胸部CT，并在18-24个月再次复查。",
    ),
    (
        8.4,
        "low",
        "routine",
        "Follow-up chest CT at 6-12 months, then consider CT at 18-24 months.",
        "6-12个月复查胸部CT，之后考虑在18-24个月再次复查。",
    ),
    (
        8.5,
        "low",
        "soon",
        "consider CT at 3 months, PET/CT or tissue sampling.",
        "考虑3个月复查CT、PET/CT或组织活检。",
    ),
    (
        8.5,
        "high",
        "soon",
        "consider CT at 3 months, PET/CT or tissue sampling.",
        "考虑3个月复查CT、PET/CT或组织活检。",
    ),
]


@pytest.mark.parametrize(("size", "risk", "urgency", "en", "zh"), FLEISCHNER_GOLDEN)
def test_fleischner_golden(size: float, risk: str, urgency: str, en: str, zh: str) -> None:
    statement = _only(guidance_for(_study([_nodule(size)]), patient_age=60, risk=risk))
    assert statement.rule_id == "fleischner-2017-solid-nodule"
    assert statement.rule_version == f"{RULESET_VERSION}/2.1"
    assert statement.urgency == urgency
    assert "Fleischner Society 2017" in statement.guideline
    assert "Bankier" in statement.guideline
    assert en in statement.text["en"]
    assert zh in statement.text["zh"]
    rounded = int(size + 0.5)
    assert f"{size:.1f} mm (rounded to {rounded} mm)" in statement.text["en"]
    assert f"{size:.1f}毫米（取整为{rounded}毫米）" in statement.text["zh"]
    assert statement.text["en"].endswith(AI_NOTE["en"])
    assert statement.text["zh"].endswith(AI_NOTE["zh"])
    # a known risk is not flagged as assumed, and a typed nodule is not "not assessed"
    assert "not given" not in statement.text["en"]
    assert "not assessed" not in statement.text["en"]


def test_fleischner_exact_text_low_risk_5_4mm() -> None:
    """One statement spelled out in full: the doctor reads exactly this."""
    statement = _only(guidance_for(_study([_nodule(5.4)]), patient_age=60, risk="low"))
    assert statement.text["en"] == (
        "AI found a solid lung nodule of 5.4 mm (rounded to 5 mm) (Fleischner solid-nodule band "
        "< 6 mm, low-risk patient). No routine follow-up CT is needed. Not for lung cancer "
        "screening, known cancer or immunosuppressed patients. This is an AI result and must be "
        "confirmed by a radiologist."
    )
    assert statement.text["zh"] == (
        "AI发现肺部实性结节，大小5.4毫米（取整为5毫米）（Fleischner实性结节分级<6毫米，低风险患者）。"
        "无需常规CT随访。不适用于肺癌筛查、已知恶性肿瘤或免疫抑制患者。"
        "以上为AI辅助结果，须经放射科医生确认。"
    )


def test_unknown_risk_gets_high_risk_advice_and_says_so() -> None:
    """Corrected (issue 22): unknown risk used to get the low-risk advice."""
    unknown = _only(guidance_for(_study([_nodule(7.0)]), patient_age=60))
    low = _only(guidance_for(_study([_nodule(7.0)]), patient_age=60, risk="low"))
    assert "then CT at 18-24 months" in unknown.text["en"]
    assert "consider" not in unknown.text["en"]
    assert "high-risk patient" in unknown.text["en"]
    assert "Patient risk was not given, so the high-risk advice is shown" in unknown.text["en"]
    assert "未提供患者风险分层，按高风险给出建议" in unknown.text["zh"]
    assert "not given" not in low.text["en"]


def test_non_solid_nodule_exact_text() -> None:
    """Audit: "non_solid_nodule" fell through to solid (6-12 then 18-24 months). MacMahon 2017
    Table 1B, single ground glass >= 6 mm: 6-12 months, then every 2 years until 5 years."""
    statement = _only(
        guidance_for(_study([_nodule(7.0, label="non_solid_nodule")]), patient_age=60)
    )
    assert statement.rule_id == "fleischner-2017-subsolid-nodule"
    assert statement.text["en"] == (
        "AI found a pure ground-glass (subsolid) lung nodule of 7.0 mm (rounded to 7 mm) "
        "(Fleischner subsolid band >= 6 mm). Follow-up chest CT at 6-12 months to confirm "
        "persistence, then CT every 2 years until 5 years. Not for lung cancer screening, known "
        "cancer or immunosuppressed patients. This is an AI result and must be confirmed by a "
        "radiologist."
    )
    assert statement.text["zh"] == (
        "AI发现肺部纯磨玻璃（亚实性）结节，大小7.0毫米（取整为7毫米）（Fleischner亚实性结节分级"
        "≥6毫米）。6-12个月复查胸部CT确认是否持续存在，之后每2年复查一次CT，直至满5年。"
        "不适用于肺癌筛查、已知恶性肿瘤或免疫抑制患者。以上为AI辅助结果，须经放射科医生确认。"
    )


def test_untyped_nodule_says_type_not_assessed() -> None:
    statement = _only(guidance_for(_study([_nodule(7.0, label="nodule")]), patient_age=60))
    assert "Nodule type (solid / subsolid) not assessed" in statement.text["en"]
    assert "AI未判断结节类型" in statement.text["zh"]
    assert statement.rule_id == "fleischner-2017-solid-nodule"


def test_unknown_age_assumes_adult_and_young_patient_is_out_of_scope() -> None:
    no_age = _only(guidance_for(_study([_nodule(7.0)]), risk="low"))
    assert "Patient age was not given" in no_age.text["en"]
    assert "未提供患者年龄" in no_age.text["zh"]
    young = _only(guidance_for(_study([_nodule(7.0)]), patient_age=30, risk="low"))
    assert "applies from age 35" in young.text["en"]
    assert "适用于35岁及以上" in young.text["zh"]
    assert "6-12 months" not in young.text["en"]


def test_multiple_nodules_use_largest_and_multiple_table() -> None:
    statement = _only(
        guidance_for(_study([_nodule(6.5), _nodule(4.0)]), patient_age=60, risk="low")
    )
    assert "6.5 mm (rounded to 7 mm) (largest of 2)" in statement.text["en"]
    assert "3-6 months" in statement.text["en"]
    assert "共2个，取最大者" in statement.text["zh"]


def test_nodule_size_mean_of_axes_and_unmeasured() -> None:
    finding = Finding(
        label="nodule",
        finding_type=NODULE,
        probability=0.9,
        present=True,
        measurements=[
            Measurement(name=LONG_AXIS, value=9.0, unit=MM),
            Measurement(name=SHORT_AXIS, value=7.0, unit=MM),
        ],
    )
    size = nodule_size_mm(finding)
    assert size == 8.0  # mean 8.0 -> still the 6-8 mm band
    assert fleischner_category(size) == "6-8"
    statement = _only(guidance_for(_study([_nodule(None)]), patient_age=60))
    assert "could not measure it" in statement.text["en"]
    assert "未能测量大小" in statement.text["zh"]


def test_absent_nodule_gives_no_nodule_advice() -> None:
    statement = _only(guidance_for(_study([_nodule(12.0, present=False)]), patient_age=60))
    assert statement.rule_id == "no-finding"
    assert statement.urgency == "none"
    assert "AI未发现其可识别的异常" in statement.text["zh"]


# ------------------------------------------------------------------------- cardiothoracic ratio
@pytest.mark.parametrize(
    ("ctr", "enlarged", "shown"),
    [(0.49, False, ""), (0.5, False, ""), (0.5004, True, "0.5004"), (0.51, True, "0.51")],
)
def test_ctr_boundary(ctr: float, enlarged: bool, shown: str) -> None:
    study = _study([], [Measurement(name=CTR, value=ctr, unit=ONE)])
    statements = guidance_for(study)
    rule_ids = [s.rule_id for s in statements]
    if enlarged:
        statement = _only(statements)
        assert rule_ids == ["ctr-enlarged-heart"]
        assert statement.urgency == "soon"
        assert f"cardiothoracic ratio {shown} > 0.5" in statement.text["en"]
        assert "arrange echocardiography" in statement.text["en"]
        assert f"心胸比{shown}，大于0.5" in statement.text["zh"]
        assert "超声心动图" in statement.text["zh"]
        assert "ESC Heart Failure" in statement.guideline
    else:
        assert rule_ids == ["no-finding"]


def test_cardiomegaly_finding_without_ctr_still_advises_echo() -> None:
    statement = _only(guidance_for(_study([_finding(CARDIOMEGALY, "cardiomegaly")])))
    assert statement.rule_id == "ctr-enlarged-heart"
    assert statement.urgency == "soon"
    assert "Possible enlarged heart (AI finding" in statement.text["en"]
    assert "the AI flagged cardiomegaly" in statement.text["en"]
    assert "AI提示心脏增大" in statement.text["zh"] and "超声心动图" in statement.text["zh"]


def test_cardiomegaly_with_low_ratio_on_pa_exact_text() -> None:
    """Audit: cardiomegaly present with CTR 0.48 on a PA film got "AI found no abnormality"."""
    study = _study(
        [_finding(CARDIOMEGALY, "cardiomegaly")], [Measurement(name=CTR, value=0.48, unit=ONE)]
    )
    statement = _only(guidance_for(study, context=StudyContext(projection="PA")))
    assert statement.rule_id == "ctr-enlarged-heart"
    assert statement.urgency == "routine"
    assert statement.text["en"] == (
        "The AI flagged an enlarged heart (cardiomegaly), but the measured cardiothoracic ratio "
        "0.48 is not above 0.5: the two disagree, so review the image and act on the "
        "radiologist's report. If heart failure is suspected clinically, arrange "
        "echocardiography. This is an AI result and must be confirmed by a radiologist."
    )
    assert statement.text["zh"] == (
        "AI提示心脏增大，但测得的心胸比0.48未超过0.5：两者不一致，请复核影像，并以放射科医生报告"
        "为准。如临床怀疑心力衰竭，请行超声心动图检查。以上为AI辅助结果，须经放射科医生确认。"
    )


def test_cardiomegaly_on_ap_film_says_not_judged_and_names_the_finding() -> None:
    """Audit: cardiomegaly present with CTR 0.45 on an AP film got "AI found no abnormality"."""
    study = _study(
        [_finding(CARDIOMEGALY, "cardiomegaly")], [Measurement(name=CTR, value=0.45, unit=ONE)]
    )
    statement = _only(guidance_for(study, context=StudyContext(projection="AP")))
    assert statement.urgency == "routine"
    assert statement.text["en"].startswith(
        "The AI flagged an enlarged heart (cardiomegaly), but heart size cannot be judged on "
        "this AP radiograph (cardiothoracic ratio 0.45)"
    )
    assert "arrange a PA chest radiograph or echocardiography" in statement.text["en"]
    assert statement.text["zh"].startswith(
        "AI提示心脏增大，但该胸片为前后位（AP）摄片（心胸比0.45），无法判断心脏大小"
    )


@pytest.mark.parametrize("ctr", [55.0, 1.2])
def test_implausible_ctr_exact_text(ctr: float) -> None:
    """Audit: CTR 55 (a percentage) was read as "ratio 55 > 0.5"."""
    study = _study([], [Measurement(name=CTR, value=ctr, unit=ONE)])
    statement = _only(guidance_for(study, context=StudyContext(projection="PA")))
    assert statement.urgency == "routine"
    assert statement.text["en"] == (
        f"The reported cardiothoracic ratio value {ctr:g} is implausible (a ratio lies between "
        "0 and 1) and cannot be used: heart size is not judged from it; act on the "
        "radiologist's report. This is an AI result and must be confirmed by a radiologist."
    )
    assert statement.text["zh"] == (
        f"报告的心胸比数值{ctr:g}不合理（比值应在0与1之间），无法使用，不据此判断心脏大小；"
        "请以放射科医生报告为准。以上为AI辅助结果，须经放射科医生确认。"
    )


# ------------------------------------------------------------------------- pleura
def test_pneumothorax_is_emergency_and_first() -> None:
    study = _study(
        [_finding(EFFUSION, "effusion"), _finding(PNEUMOTHORAX, "pneumothorax"), _nodule(5.0)]
    )
    statements = guidance_for(study, patient_age=50, risk="low")
    assert [s.rule_id for s in statements] == [
        "pneumothorax-referral",
        "effusion-workup",
        "fleischner-2017-solid-nodule",
    ]
    first = statements[0]
    assert first.urgency == "emergency"
    assert "transfer to an emergency department immediately" in first.text["en"]
    assert "立即呼叫急救并转送急诊" in first.text["zh"]
    assert "BTS Guideline for Pleural Disease 2023" in first.guideline


def test_effusion_further_workup() -> None:
    statement = _only(guidance_for(_study([_finding(EFFUSION, "pleural_effusion")])))
    assert statement.rule_id == "effusion-workup"
    assert statement.urgency == "soon"
    assert "further work-up" in statement.text["en"]
    assert "进一步检查" in statement.text["zh"]


def test_absent_pneumothorax_is_not_reported() -> None:
    statement = _only(guidance_for(_study([_finding(PNEUMOTHORAX, "pneumothorax", False)])))
    assert statement.rule_id == "no-finding"


def test_unknown_finding_goes_to_radiologist_and_bad_input_is_refused() -> None:
    other = Code(value="233604007", scheme="SCT", meaning="Pneumonia")
    statement = _only(guidance_for(_study([_finding(other, "consolidation")])))
    assert statement.rule_id == "other-finding"
    assert "consolidation" in statement.text["en"]
    with pytest.raises(ValueError, match="risk"):
        guidance_for(_study([]), risk="medium")
    with pytest.raises(ValueError, match="patient_age"):
        guidance_for(_study([]), patient_age=-1)


def test_every_statement_is_bilingual_and_says_it_is_ai() -> None:
    study = _study(
        [_finding(PNEUMOTHORAX, "pneumothorax"), _finding(EFFUSION, "effusion"), _nodule(9)],
        [Measurement(name=CTR, value=0.6, unit=ONE)],
    )
    statements = guidance_for(study)
    assert len(statements) == 4
    for statement in statements:
        assert set(statement.text) == {"zh", "en"}
        assert "radiologist" in statement.text["en"]
        assert "放射科医生确认" in statement.text["zh"]
        assert statement.guideline
