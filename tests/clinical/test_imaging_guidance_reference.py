"""Imaging guidance against its publications: every Fleischner cell at the rounding boundaries,
the subsolid table, and the cardiothoracic ratio only on PA films.

MacMahon 2017 = MacMahon H, et al. Radiology 2017;284(1):228-243, Table 1 (A solid, B subsolid).
Bankier 2017 = Bankier AA, et al. Radiology 2017;285(2):584-600 (average of long and short axes,
rounded to the nearest millimetre). CTR: Danzer 1919; PA projection (AP and supine magnify).
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from medgate.clinical.context import StudyContext, age_from_dicom, study_context
from medgate.clinical.guidance import fleischner_size_mm, guidance_for
from medgate.models.findings import (
    Code,
    Finding,
    GuidanceStatement,
    Measurement,
    ModelResult,
    StudyResult,
)

NODULE = Code(value="27925004", scheme="SCT", meaning="Nodule")
LONG = Code(value="103339001", scheme="SCT", meaning="Long axis")
SHORT = Code(value="103340004", scheme="SCT", meaning="Short axis")
DIAMETER = Code(value="81827009", scheme="SCT", meaning="Diameter")
CTR = Code(value="59076-0", scheme="LN", meaning="Cardiothoracic Area Ratio")
MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
ONE = Code(value="1", scheme="UCUM", meaning="no units")


def nodule(size: float, label: str = "solid_nodule") -> Finding:
    return Finding(
        label=label,
        finding_type=NODULE,
        probability=0.9,
        present=True,
        measurements=[Measurement(name=DIAMETER, value=size, unit=MM)],
    )


def study(findings: list[Finding], measurements: list[Measurement] | None = None) -> StudyResult:
    result = ModelResult(
        bundle_name="t",
        bundle_version="1",
        task="classification",
        findings=findings,
        measurements=measurements or [],
    )
    return StudyResult(study_instance_uid="1.2.3", model_results=[result])


def only(statements: list[GuidanceStatement]) -> GuidanceStatement:
    assert len(statements) == 1, [s.rule_id for s in statements]
    return statements[0]


# (measured mm, rounded mm, source)
ROUNDING = [
    (5.4, 5, "Bankier 2017: nearest whole mm"),
    (5.5, 6, "Bankier 2017: .5 rounds up"),
    (7.9, 8, "Bankier 2017"),
    (8.4, 8, "Bankier 2017"),
    (8.5, 9, "Bankier 2017: .5 rounds up"),
]


@pytest.mark.parametrize(("size", "rounded", "source"), ROUNDING)
def test_rounding(size: float, rounded: int, source: str) -> None:
    assert fleischner_size_mm(size) == rounded, source


SINGLE = {
    "low": {
        "<6": "No routine follow-up CT is needed.",
        "6-8": "Follow-up chest CT at 6-12 months, then consider CT at 18-24 months.",
        ">8": "consider CT at 3 months, PET/CT or tissue sampling.",
    },
    "high": {
        "<6": "Optional follow-up chest CT at 12 months.",
        "6-8": "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
        ">8": "consider CT at 3 months, PET/CT or tissue sampling.",
    },
}
MULTIPLE = {
    "low": {
        "<6": "No routine follow-up CT is needed.",
        "6-8": "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months.",
        ">8": "Follow-up chest CT at 3-6 months, then consider CT at 18-24 months",
    },
    "high": {
        "<6": "Optional follow-up chest CT at 12 months.",
        "6-8": "Follow-up chest CT at 3-6 months, then CT at 18-24 months.",
        ">8": "Follow-up chest CT at 3-6 months, then CT at 18-24 months",
    },
}
BAND = {5.4: "<6", 5.5: "6-8", 7.9: "6-8", 8.4: "6-8", 8.5: ">8"}

# every cell of MacMahon 2017 Table 1 A at each rounding boundary, risk low / high / unknown
CELLS = [
    (
        size,
        multiple,
        risk,
        f"MacMahon 2017 Table 1A {'multiple' if multiple else 'single'} "
        f"solid {BAND[size]} mm, {risk or 'unknown (-> high)'} risk",
    )
    for size in BAND
    for multiple in (False, True)
    for risk in ("low", "high", None)
]


@pytest.mark.parametrize(("size", "multiple", "risk", "source"), CELLS)
def test_every_solid_cell_at_the_rounding_boundaries(
    size: float, multiple: bool, risk: str | None, source: str
) -> None:
    findings = [nodule(size), nodule(3.0)] if multiple else [nodule(size)]
    statement = only(guidance_for(study(findings), patient_age=60, risk=risk))
    table = MULTIPLE if multiple else SINGLE
    expected = table[risk or "high"][BAND[size]]
    assert expected in statement.text["en"], (source, statement.text["en"])
    # only low-risk advice may say "consider" for the 18-24 month CT (high / unknown: "then")
    later_ct = BAND[size] == "6-8" or (multiple and BAND[size] == ">8")
    assert ("consider CT at 18" in statement.text["en"]) is (risk == "low" and later_ct)
    assert statement.urgency == ("soon" if BAND[size] == ">8" else "routine"), source
    assert f"rounded to {fleischner_size_mm(size)} mm" in statement.text["en"]
    if risk is None:
        assert "high-risk advice is shown" in statement.text["en"]
        assert "按高风险给出建议" in statement.text["zh"]


def test_mean_of_long_and_short_axes_is_rounded_before_the_row() -> None:
    """Bankier 2017: (9 + 7.9) / 2 = 8.45 -> 8 mm -> 6-8 mm row, not > 8."""
    finding = Finding(
        label="solid_nodule",
        finding_type=NODULE,
        probability=0.9,
        present=True,
        measurements=[
            Measurement(name=LONG, value=9.0, unit=MM),
            Measurement(name=SHORT, value=7.9, unit=MM),
        ],
    )
    statement = only(guidance_for(study([finding]), patient_age=60, risk="high"))
    assert "(rounded to 8 mm)" in statement.text["en"]
    assert "6-12 months, then CT at 18-24 months" in statement.text["en"]


# (label, size, multiple, expected action, source)
SUBSOLID = [
    ("ground_glass_nodule", 5.4, False, "No routine follow-up", "MacMahon 2017 1B GGN < 6"),
    (
        "ground_glass_nodule",
        5.5,
        False,
        "6-12 months to confirm persistence, then CT every 2 years until 5 years",
        "MacMahon 2017 1B GGN >= 6",
    ),
    ("part_solid_nodule", 5.4, False, "No routine follow-up", "MacMahon 2017 1B part solid < 6"),
    (
        "part_solid_nodule",
        5.5,
        False,
        "3-6 months to confirm persistence; if unchanged and the solid component remains < 6 mm, "
        "annual CT for 5 years",
        "MacMahon 2017 1B part solid >= 6",
    ),
    (
        "ground_glass_nodule",
        5.4,
        True,
        "3-6 months; if stable, consider CT at 2 and 4 years",
        "MacMahon 2017 1B multiple subsolid < 6",
    ),
    (
        "part_solid_nodule",
        8.5,
        True,
        "3-6 months; further management by the most suspicious nodule",
        "MacMahon 2017 1B multiple subsolid >= 6",
    ),
]


@pytest.mark.parametrize(("label", "size", "multiple", "action", "source"), SUBSOLID)
def test_subsolid_table(label: str, size: float, multiple: bool, action: str, source: str) -> None:
    findings = [nodule(size, label), nodule(3.0, label)] if multiple else [nodule(size, label)]
    statement = only(guidance_for(study(findings), patient_age=60))
    assert statement.rule_id == "fleischner-2017-subsolid-nodule", source
    assert action in statement.text["en"], (source, statement.text["en"])
    assert "subsolid" in statement.text["en"] and "亚实性" in statement.text["zh"]


def test_nodule_type_is_stated_or_said_not_assessed() -> None:
    solid = only(guidance_for(study([nodule(7.0)]), patient_age=60, risk="low"))
    assert "solid lung nodule" in solid.text["en"] and "实性结节" in solid.text["zh"]
    untyped = only(guidance_for(study([nodule(7.0, "nodule")]), patient_age=60, risk="low"))
    assert "Nodule type (solid / subsolid) not assessed" in untyped.text["en"]


def _header(**attributes: str) -> Dataset:
    ds = Dataset()
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


# (header, context, source)
CONTEXTS = [
    ({"ViewPosition": "PA", "PatientAge": "052Y"}, StudyContext(52, "PA", None), "DICOM 0018,5101"),
    ({"ViewPosition": "AP"}, StudyContext(None, "AP", None), "DICOM 0018,5101"),
    ({"ViewPosition": "AP", "PatientPosition": "HFS"}, StudyContext(None, "AP", True), "0018,5100"),
    ({}, StudyContext(None, "unknown", None), "no header attributes"),
]


@pytest.mark.parametrize(("attributes", "context", "source"), CONTEXTS)
def test_study_context_from_header(attributes: dict, context: StudyContext, source: str) -> None:
    assert study_context([_header(**attributes)]) == context, source


@pytest.mark.parametrize(
    ("value", "years"), [("052Y", 52), ("006M", 0), ("018M", 1), ("104W", 1), ("", None)]
)
def test_age_from_dicom(value: str, years: int | None) -> None:
    assert age_from_dicom(value) == years


# (context, ratio, rule fires, urgency, words, source)
CTR_ROWS = [
    (StudyContext(projection="PA"), 0.50, False, None, None, "CTR > 0.5 strictly (Danzer 1919)"),
    (StudyContext(projection="PA"), 0.51, True, "soon", "arrange echocardiography", "PA film"),
    (StudyContext(projection="AP"), 0.60, True, "routine", "cannot be judged", "AP magnifies"),
    (
        StudyContext(projection="PA", supine=True),
        0.60,
        True,
        "routine",
        "cannot be judged",
        "supine magnifies",
    ),
    (
        StudyContext(),
        0.60,
        True,
        "soon",
        "not recorded as PA",
        "unknown projection: advice with the PA condition stated",
    ),
]


@pytest.mark.parametrize(("context", "ratio", "fires", "urgency", "words", "source"), CTR_ROWS)
def test_ctr_only_on_pa_films(
    context: StudyContext,
    ratio: float,
    fires: bool,
    urgency: str | None,
    words: str | None,
    source: str,
) -> None:
    statement = only(
        guidance_for(study([], [Measurement(name=CTR, value=ratio, unit=ONE)]), context=context)
    )
    if not fires:
        assert statement.rule_id == "no-finding", source
        return
    assert statement.rule_id == "ctr-enlarged-heart", source
    assert statement.urgency == urgency, source
    assert words is not None and words in statement.text["en"], source
    if words == "cannot be judged":
        assert "无法判断心脏大小" in statement.text["zh"]
        assert "arrange echocardiography" not in statement.text["en"]


def test_chinese_guidance_names_no_english_label() -> None:
    """Issue 22: "AI提示：consolidation" had English inside the Chinese text."""
    other = Code(value="233604007", scheme="SCT", meaning="Pneumonia")
    findings = [
        Finding(label="consolidation", finding_type=other, probability=0.8, present=True),
        Finding(label="weird_thing", finding_type=other, probability=0.8, present=True),
    ]
    statement = only(guidance_for(study(findings)))
    assert "实变" in statement.text["zh"] and "其他1项异常" in statement.text["zh"]
    assert "consolidation" not in statement.text["zh"] and "weird" not in statement.text["zh"]
