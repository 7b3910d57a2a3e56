"""Imaging guidance against its publications: every Fleischner cell at the rounding boundaries,
the subsolid table, the nodule type words, and the cardiothoracic ratio only on PA films.

MacMahon 2017 = MacMahon H, et al. Radiology 2017;284(1):228-243, Table 1 (A solid, B subsolid).
Bankier 2017 = Bankier AA, et al. Radiology 2017;285(2):584-600 (average of long and short axes,
rounded to the nearest millimetre). CTR: Danzer 1919; PA projection (AP and supine magnify).
DICOM PS3.3 C.7.3.1.1.2 = Patient Position (0018,5100) defined terms HFP, HFS, HFDR, HFDL, FFDR,
FFDL, FFP, FFS; PS3.3 C.8.11.5.1.2 = View Position (0018,5101): AP, PA, LL, RL, RLD, LLD, RLO, LLO.
"""

from __future__ import annotations

import re

import pytest
from pydicom.dataset import Dataset

from medgate.clinical.context import (
    StudyContext,
    age_from_dicom,
    decubitus_from_dicom,
    study_context,
    supine_from_dicom,
)
from medgate.clinical.findings import nodule_type
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
CARDIOMEGALY = Code(value="287272002", scheme="SCT", meaning="Cardiomegaly")
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


#: Latin letters allowed in Chinese guidance text: imaging acronyms; the echocardiography advice
#: names its lab test as BNP/NT-proBNP (as in tests/cds/test_safety.py).
ALLOWED_LATIN = {"CT", "PA", "AP", "AI"}


def latin_words(zh: str) -> set[str]:
    zh = zh.replace("BNP/NT-proBNP", "")
    return {word for word in re.findall(r"[A-Za-z]+", zh) if word not in ALLOWED_LATIN}


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


# (label, code meaning, Fleischner type, source): separators (space, underscore, hyphen) and case
# do not matter; an unknown or missing type word is "not assessed", never solid.
GG = "ground_glass"
PS = "part_solid"
FLEISCHNER_1B = "MacMahon H, et al. Radiology 2017;284:228-243 (Table 1B)"
#: terms 实性结节 (solid), 部分实性结节 (part-solid, also 混杂密度结节), 纯磨玻璃结节 (pure GGN)
CHINA_2018 = "肺结节诊治中国专家共识（2018年版）"
NODULE_TYPES = [
    ("non_solid_nodule", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass (nonsolid)"),
    ("nonsolid nodule", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass (nonsolid)"),
    ("non-solid", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass (nonsolid)"),
    ("Non Solid Nodule", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass (nonsolid)"),
    ("ground_glass", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass"),
    ("ground-glass nodule", "Nodule", GG, "MacMahon 2017 Table 1B: ground glass"),
    ("GGN", "Nodule", GG, "ground-glass nodule (abbreviation)"),
    ("GGO", "Nodule", GG, "ground-glass opacity (abbreviation)"),
    ("lesion", "Ground glass nodule", GG, "type from the code meaning of a coded finding"),
    ("semi-solid nodule", "Nodule", PS, "MacMahon 2017 Table 1B: part solid (semisolid)"),
    ("semisolid", "Nodule", PS, "MacMahon 2017 Table 1B: part solid (semisolid)"),
    ("part_solid", "Nodule", PS, "MacMahon 2017 Table 1B: part solid"),
    ("Part-Solid nodule", "Nodule", PS, "MacMahon 2017 Table 1B: part solid"),
    ("mixed ground-glass nodule", "Nodule", PS, "mixed = part solid"),
    # audit: a 7 mm nodule under these words got the pure ground-glass or the solid row
    ("mixed GGN", "Nodule", PS, "MacMahon 2017 Table 1B: mixed ground-glass nodule = part solid"),
    ("mGGN", "Nodule", PS, "MacMahon 2017 Table 1B: mGGN (mixed GGN) = part solid"),
    (
        "ground-glass nodule with solid component",
        "Nodule",
        PS,
        "MacMahon 2017 Table 1B: ground glass with a solid component = part solid",
    ),
    (
        "partially solid nodule",
        "Nodule",
        PS,
        "MacMahon 2017 Table 1B: partially solid = part solid",
    ),
    ("lesion", "Partially solid nodule", PS, "MacMahon 2017 Table 1B: from the code meaning"),
    (
        "ground-glass nodule without solid component",
        "Nodule",
        GG,
        "MacMahon 2017 Table 1B: no solid component = ground glass (nonsolid)",
    ),
    ("subsolid_nodule", "Nodule", PS, "subsolid without more: the more cautious part-solid row"),
    ("solid_nodule", "Nodule", "solid", "MacMahon 2017 Table 1A"),
    ("nodule", "Nodule", None, "no type word: not assessed"),
    ("calcified_nodule", "Nodule", None, "unknown type word: not assessed"),
    ("nodule_near_consolidation", "Nodule", None, "'consolidation' is not the word 'solid'"),
    # audit 2: a 7 mm part-solid nodule under these words got the 6-12 month row (or no type)
    ("partly solid nodule", "Nodule", PS, f"{FLEISCHNER_1B}: partly solid = part solid"),
    ("partly-solid nodule", "Nodule", PS, f"{FLEISCHNER_1B}: partly solid = part solid"),
    (
        "ground-glass nodule with solid components",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: ground glass with solid components = part solid",
    ),
    ("GGN with solid portion", "Nodule", PS, f"{FLEISCHNER_1B}: GGN + solid portion = part solid"),
    (
        "ground glass nodule, solid part 3 mm",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: ground glass with a solid part = part solid",
    ),
    (
        "ground glass nodule with a solid core",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: ground glass with a solid core = part solid",
    ),
    (
        "nodule with solid and ground-glass components",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: solid and ground-glass components = part solid",
    ),
    ("mixed GGO", "Nodule", PS, f"{FLEISCHNER_1B}: mixed ground glass = part solid"),
    ("mGGO", "Nodule", PS, f"{FLEISCHNER_1B}: mGGO (mixed GGO) = part solid"),
    ("pGGN", "Nodule", GG, f"{FLEISCHNER_1B}: pGGN (pure GGN) = ground glass (nonsolid)"),
    (
        "ground-glass opacity without any solid component",
        "Nodule",
        GG,
        f"{FLEISCHNER_1B}: no solid component = ground glass (nonsolid)",
    ),
    ("nodule, not solid", "Nodule", GG, f"{FLEISCHNER_1B}: not solid = nonsolid"),
    (
        "solid nodule without ground-glass component",
        "Nodule",
        "solid",
        "MacMahon H, et al. Radiology 2017;284:228-243 (Table 1A): solid",
    ),
    ("磨玻璃结节", "Nodule", GG, f"{CHINA_2018}: 磨玻璃结节 = ground glass ({FLEISCHNER_1B})"),
    ("纯磨玻璃结节", "Nodule", GG, f"{CHINA_2018}: 纯磨玻璃结节 = pure ground glass"),
    ("非实性结节", "Nodule", GG, f"{CHINA_2018}: 非实性 = nonsolid ({FLEISCHNER_1B})"),
    ("磨玻璃结节，无实性成分", "Nodule", GG, f"{CHINA_2018}: no solid component = pure GGN"),
    ("部分实性结节", "Nodule", PS, f"{CHINA_2018}: 部分实性结节 = part solid"),
    ("混合磨玻璃结节", "Nodule", PS, f"{CHINA_2018}: 混合磨玻璃结节 (mGGN) = 部分实性结节"),
    ("混杂密度结节", "Nodule", PS, f"{CHINA_2018}: 混杂密度结节 = 部分实性结节"),
    ("磨玻璃结节伴实性成分", "Nodule", PS, f"{CHINA_2018}: ground glass + solid = 部分实性结节"),
    ("亚实性结节", "Nodule", PS, f"{CHINA_2018}: 亚实性 = subsolid, the more cautious row"),
    ("实性结节", "Nodule", "solid", f"{CHINA_2018}: 实性结节 = solid (MacMahon 2017 Table 1A)"),
    # audit 3: semi-solid / mixed-density Chinese terms, ground glass with consolidation, negated
    # solid components and a ground-glass halo were misread
    (
        "半实性结节",
        "Nodule",
        PS,
        f"{CHINA_2018}: 半实性 = semisolid = part solid ({FLEISCHNER_1B})",
    ),
    ("混合密度结节", "Nodule", PS, f"{CHINA_2018}: 混合密度 = 混杂密度 = part solid"),
    (
        "ground-glass nodule with consolidative component",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: ground glass with a consolidative (solid) component = part solid",
    ),
    (
        "GGO with central consolidation",
        "Nodule",
        PS,
        f"{FLEISCHNER_1B}: ground glass with central consolidation = part solid",
    ),
    ("磨玻璃结节伴实变", "Nodule", PS, f"{CHINA_2018}: ground glass + 实变 = 部分实性结节"),
    ("磨玻璃结节，未见实性成分", "Nodule", GG, f"{CHINA_2018}: no solid component = pure GGN"),
    ("磨玻璃结节，不含实性成分", "Nodule", GG, f"{CHINA_2018}: no solid component = pure GGN"),
    ("磨玻璃结节，无明显实性成分", "Nodule", GG, f"{CHINA_2018}: no solid component = pure GGN"),
    (
        "ground-glass nodule, no definite solid component",
        "Nodule",
        GG,
        f"{FLEISCHNER_1B}: no solid component = ground glass (nonsolid)",
    ),
    (
        "GGN, no measurable solid part",
        "Nodule",
        GG,
        f"{FLEISCHNER_1B}: no solid component = ground glass (nonsolid)",
    ),
    (
        "GGN (solid component absent)",
        "Nodule",
        GG,
        f"{FLEISCHNER_1B}: solid component absent = ground glass (nonsolid)",
    ),
    (
        "ground-glass nodule, solid component not seen",
        "Nodule",
        GG,
        f"{FLEISCHNER_1B}: solid component not seen = ground glass (nonsolid)",
    ),
    (
        "solid nodule with ground-glass halo",
        "Nodule",
        "solid",
        "MacMahon H, et al. Radiology 2017;284:228-243 (Table 1A): a halo is not a subsolid "
        "component",
    ),
    ("consolidation", "Nodule", None, "consolidation without ground glass: not assessed"),
]
ACTION = {
    GG: "Follow-up chest CT at 6-12 months to confirm persistence, then CT every 2 years until "
    "5 years.",
    PS: "Follow-up chest CT at 3-6 months to confirm persistence; if unchanged and the solid "
    "component remains < 6 mm, annual CT for 5 years.",
    "solid": "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
    None: "Follow-up chest CT at 6-12 months, then CT at 18-24 months.",
}


@pytest.mark.parametrize(("label", "meaning", "kind", "source"), NODULE_TYPES)
def test_nodule_type_words(label: str, meaning: str, kind: str | None, source: str) -> None:
    """Audit: "non_solid_nodule", "semisolid" ... were read as solid; a 7 mm ground-glass nodule
    then got "CT at 6-12 months, then 18-24 months" and surveillance stopped 3 years early."""
    code = NODULE if meaning == "Nodule" else Code(value="GGN", scheme="99LOCAL", meaning=meaning)
    finding = Finding(
        label=label,
        finding_type=code,
        probability=0.9,
        present=True,
        measurements=[Measurement(name=DIAMETER, value=7.0, unit=MM)],
    )
    assert nodule_type(finding) == kind, source
    statement = only(guidance_for(study([finding]), patient_age=60))
    assert ACTION[kind] in statement.text["en"], (source, statement.text["en"])
    subsolid = kind in (GG, PS)
    assert statement.rule_id == (
        "fleischner-2017-subsolid-nodule" if subsolid else "fleischner-2017-solid-nodule"
    ), source
    if kind == GG:
        assert "纯磨玻璃（亚实性）结节" in statement.text["zh"]
    if kind == PS:
        assert "部分实性（亚实性）结节" in statement.text["zh"]
    assert ("not assessed" in statement.text["en"]) is (kind is None), source
    assert ("AI未判断结节类型" in statement.text["zh"]) is (kind is None), source
    assert ("solid lung nodule" in statement.text["en"]) is (kind == "solid"), source


@pytest.mark.parametrize(
    "label",
    [
        "GGN",
        "mGGN",
        "pGGN",
        "磨玻璃结节",
        "纯磨玻璃结节",
        "部分实性结节",
        "混合磨玻璃结节",
        "混杂密度结节",
    ],
)
def test_ggn_label_alone_is_a_nodule(label: str) -> None:
    """A bundle label "GGN" (ground-glass nodule), "mGGN" (mixed ground-glass nodule), "pGGN"
    (pure GGN) or a Chinese nodule term (结节 = nodule, 肺结节诊治中国专家共识（2018年版）) under a
    local code is still a nodule."""
    code = Code(value="1", scheme="99LOCAL", meaning=label)
    finding = Finding(
        label=label,
        finding_type=code,
        probability=0.9,
        present=True,
        measurements=[Measurement(name=DIAMETER, value=7.0, unit=MM)],
    )
    statement = only(guidance_for(study([finding]), patient_age=60))
    assert statement.rule_id == "fleischner-2017-subsolid-nodule"
    if label in ("mGGN", "部分实性结节", "混合磨玻璃结节", "混杂密度结节"):
        assert "部分实性（亚实性）结节" in statement.text["zh"]
    else:
        assert "纯磨玻璃（亚实性）结节" in statement.text["zh"]


def test_chinese_solid_nodule_label_alone_is_a_solid_nodule() -> None:
    """ "实性结节" (solid nodule, 肺结节诊治中国专家共识（2018年版）) under a local code: a nodule,
    and the solid table (MacMahon 2017 Table 1A), not "type not assessed"."""
    code = Code(value="1", scheme="99LOCAL", meaning="实性结节")
    finding = Finding(
        label="实性结节",
        finding_type=code,
        probability=0.9,
        present=True,
        measurements=[Measurement(name=DIAMETER, value=7.0, unit=MM)],
    )
    statement = only(guidance_for(study([finding]), patient_age=60))
    assert statement.rule_id == "fleischner-2017-solid-nodule"
    assert "solid lung nodule" in statement.text["en"]
    assert "not assessed" not in statement.text["en"]


def _header(**attributes: str) -> Dataset:
    ds = Dataset()
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


# (header, context, source)
CONTEXTS = [
    ({"ViewPosition": "PA", "PatientAge": "052Y"}, StudyContext(52, "PA", None), "DICOM 0018,5101"),
    ({"ViewPosition": "AP"}, StudyContext(None, "AP", None), "DICOM 0018,5101"),
    (
        {"ViewPosition": "AP", "PatientPosition": "HFS"},
        StudyContext(None, "AP", True, False),
        "0018,5100 HFS: supine",
    ),
    (
        {"ViewPosition": "PA", "PatientPosition": "HFDR"},
        StudyContext(None, "PA", False, True),
        "0018,5100 HFDR: decubitus",
    ),
    ({"ViewPosition": "LLD"}, StudyContext(None, "other", None, True), "0018,5101 LLD: decubitus"),
    ({"ViewPosition": "LL"}, StudyContext(None, "lateral", None, None), "0018,5101 LL: lateral"),
    ({"PatientPosition": "FFP"}, StudyContext(None, "unknown", False, False), "0018,5100 prone"),
    ({}, StudyContext(None, "unknown", None), "no header attributes"),
]


# (PatientPosition, supine, decubitus): DICOM PS3.3 C.7.3.1.1.2 defined terms
POSITIONS = [
    ("HFS", True, False),
    ("FFS", True, False),
    ("HFP", False, False),
    ("FFP", False, False),
    ("HFDR", False, True),
    ("HFDL", False, True),
    ("FFDR", False, True),
    ("FFDL", False, True),
    ("", None, None),
]


@pytest.mark.parametrize(("position", "supine", "decubitus"), POSITIONS)
def test_patient_position(position: str, supine: bool | None, decubitus: bool | None) -> None:
    assert supine_from_dicom(position) is supine
    assert decubitus_from_dicom(position) is decubitus


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
    (
        StudyContext(projection="lateral"),
        0.60,
        True,
        "routine",
        "cannot be judged",
        "CTR is defined on the PA film only: not on a lateral film",
    ),
    (
        StudyContext(projection="PA", decubitus=True),
        0.60,
        True,
        "routine",
        "cannot be judged",
        "CTR is defined on the PA film only: not on a decubitus film",
    ),
    (StudyContext(projection="lateral"), 0.45, False, None, None, "nothing abnormal to say"),
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


@pytest.mark.parametrize(
    ("attributes", "view"),
    [
        ({"ViewPosition": "PA", "PatientPosition": "HFDL"}, "decubitus"),
        ({"ViewPosition": "RLD"}, "decubitus"),
        ({"ViewPosition": "RL"}, "lateral"),
        ({"ViewPosition": "PA", "PatientPosition": "FFS"}, "supine"),
    ],
)
def test_ctr_not_judged_from_header(attributes: dict, view: str) -> None:
    """End to end from the DICOM header: CTR 0.6 on a non-PA film is not called enlarged."""
    ratio = [Measurement(name=CTR, value=0.6, unit=ONE)]
    context = study_context([_header(**attributes)])
    statement = only(guidance_for(study([], ratio), context=context))
    assert f"cannot be judged on this {view} radiograph" in statement.text["en"]
    assert statement.urgency == "routine"
    assert "Possible enlarged heart" not in statement.text["en"]
    assert "无法判断心脏大小" in statement.text["zh"]
    assert not latin_words(statement.text["zh"])


# A present cardiomegaly finding is never answered with "no abnormality".
# (context, CTR or None, urgency, English words, Chinese words, source)
CARDIOMEGALY_ROWS = [
    (
        StudyContext(projection="PA"),
        0.48,
        "routine",
        "The AI flagged an enlarged heart (cardiomegaly), but the measured cardiothoracic ratio "
        "0.48 is not above 0.5: the two disagree, so review the image",
        "AI提示心脏增大，但测得的心胸比0.48未超过0.5：两者不一致，请复核影像",
        "PA, CTR <= 0.5: the AI finding and the ratio disagree (Danzer 1919)",
    ),
    (
        StudyContext(projection="PA"),
        0.50,
        "routine",
        "but the measured cardiothoracic ratio 0.5 is not above 0.5",
        "心胸比0.5未超过0.5",
        "PA, CTR 0.5: > 0.5 strictly",
    ),
    (
        StudyContext(projection="AP"),
        0.45,
        "routine",
        "The AI flagged an enlarged heart (cardiomegaly), but heart size cannot be judged on this "
        "AP radiograph (cardiothoracic ratio 0.45)",
        "AI提示心脏增大，但该胸片为前后位（AP）摄片（心胸比0.45），无法判断心脏大小",
        "AP magnifies the heart",
    ),
    (
        StudyContext(projection="AP", supine=True),
        0.45,
        "routine",
        "but heart size cannot be judged on this supine radiograph",
        "AI提示心脏增大，但该胸片为仰卧位摄片",
        "supine magnifies the heart",
    ),
    (
        StudyContext(projection="AP"),
        None,
        "routine",
        "The AI flagged an enlarged heart (cardiomegaly), but heart size cannot be judged on this "
        "AP radiograph: ",
        "AI提示心脏增大，但该胸片为前后位（AP）摄片，无法判断心脏大小",
        "AP, no ratio",
    ),
    (
        StudyContext(projection="PA"),
        None,
        "soon",
        "the AI flagged cardiomegaly; no usable cardiothoracic ratio was measured). Within 2 "
        "weeks, arrange echocardiography",
        "胸片AI提示心脏增大，未获得可用的心胸比测量值）。请在2周内安排超声心动图检查",
        "no ratio: the finding's own advice (ESC HF 2021 echocardiography)",
    ),
    (
        StudyContext(projection="PA"),
        0.55,
        "soon",
        "Possible enlarged heart (cardiothoracic ratio 0.55 > 0.5",
        "心胸比0.55，大于0.5",
        "PA, CTR > 0.5 and the finding agree",
    ),
]


@pytest.mark.parametrize(("context", "ratio", "urgency", "en", "zh", "source"), CARDIOMEGALY_ROWS)
def test_cardiomegaly_finding_is_never_contradicted(
    context: StudyContext, ratio: float | None, urgency: str, en: str, zh: str, source: str
) -> None:
    """Audit: cardiomegaly present with CTR 0.48 (PA) or 0.45 (AP) got "AI found no abnormality
    it was trained to detect"."""
    finding = Finding(
        label="cardiomegaly", finding_type=CARDIOMEGALY, probability=0.8, present=True
    )
    measurements = [] if ratio is None else [Measurement(name=CTR, value=ratio, unit=ONE)]
    statement = only(guidance_for(study([finding], measurements), context=context))
    assert statement.rule_id == "ctr-enlarged-heart", source
    assert statement.urgency == urgency, source
    assert en in statement.text["en"], (source, statement.text["en"])
    assert zh in statement.text["zh"], (source, statement.text["zh"])
    assert "no abnormality" not in statement.text["en"]
    assert "未发现" not in statement.text["zh"]
    assert not latin_words(statement.text["zh"]), statement.text["zh"]


# (ratio, shown): a ratio above 0.5 never prints as "0.5", one below never as "0.5" either
CTR_SHOWN = [
    (0.5004, "0.5004"),
    (0.50049, "0.5005"),
    (0.5000001, "0.5000001"),
    (0.504, "0.504"),
    (0.55, "0.55"),
    (0.5123, "0.512"),  # three significant digits where they already say "above 0.5"
]


@pytest.mark.parametrize(("ratio", "shown"), CTR_SHOWN)
def test_ctr_above_the_limit_is_never_shown_as_the_limit(ratio: float, shown: str) -> None:
    """Audit: 0.5004 on a PA film read "cardiothoracic ratio 0.5 > 0.5" / "心胸比0.5，大于0.5"."""
    ctr = [Measurement(name=CTR, value=ratio, unit=ONE)]
    statement = only(guidance_for(study([], ctr), context=StudyContext(projection="PA")))
    assert statement.rule_id == "ctr-enlarged-heart" and statement.urgency == "soon"
    assert f"cardiothoracic ratio {shown} > 0.5 on the chest radiograph" in statement.text["en"]
    assert f"胸片心胸比{shown}，大于0.5" in statement.text["zh"], statement.text["zh"]
    assert "ratio 0.5 >" not in statement.text["en"] and "心胸比0.5，" not in statement.text["zh"]


def test_ctr_just_below_the_limit_is_not_shown_as_the_limit() -> None:
    """With cardiomegaly flagged, 0.49996 "is not above 0.5": shown as 0.49996, not 0.5."""
    finding = Finding(
        label="cardiomegaly", finding_type=CARDIOMEGALY, probability=0.8, present=True
    )
    ctr = [Measurement(name=CTR, value=0.49996, unit=ONE)]
    statement = only(guidance_for(study([finding], ctr), context=StudyContext(projection="PA")))
    assert "measured cardiothoracic ratio 0.49996 is not above 0.5" in statement.text["en"]
    assert "测得的心胸比0.49996未超过0.5" in statement.text["zh"]


# (values, cardiomegaly present, urgency, source): a ratio outside (0, 1) is not a ratio
IMPLAUSIBLE = [
    ([55.0], False, "routine", "55: a percentage, not a ratio"),
    ([1.2], False, "routine", "1.2: the heart cannot be wider than the chest"),
    ([0.0], False, "routine", "0: no heart"),
    ([55.0], True, "soon", "55 with cardiomegaly present: the finding's own advice"),
]


@pytest.mark.parametrize(("values", "flagged", "urgency", "source"), IMPLAUSIBLE)
def test_implausible_ctr_is_not_judged(
    values: list[float], flagged: bool, urgency: str, source: str
) -> None:
    """Audit: CTR 55 was read as "ratio 55 > 0.5"."""
    findings = (
        [Finding(label="cardiomegaly", finding_type=CARDIOMEGALY, probability=0.8, present=True)]
        if flagged
        else []
    )
    ratios = [Measurement(name=CTR, value=value, unit=ONE) for value in values]
    statement = only(guidance_for(study(findings, ratios), context=StudyContext(projection="PA")))
    shown = f"{values[0]:g}"
    assert statement.rule_id == "ctr-enlarged-heart", source
    assert statement.urgency == urgency, source
    assert f"cardiothoracic ratio value {shown} is implausible" in statement.text["en"], source
    assert "cannot be used" in statement.text["en"]
    assert f"心胸比数值{shown}不合理" in statement.text["zh"] and "无法使用" in statement.text["zh"]
    assert "> 0.5" not in statement.text["en"] and "大于0.5" not in statement.text["zh"]
    assert ("Possible enlarged heart" in statement.text["en"]) is flagged, source
    assert not latin_words(statement.text["zh"]), statement.text["zh"]


def test_implausible_ctr_beside_a_plausible_one() -> None:
    """The plausible ratio is judged; the implausible one is named as unusable."""
    ratios = [Measurement(name=CTR, value=v, unit=ONE) for v in (1.2, 0.55)]
    statement = only(guidance_for(study([], ratios), context=StudyContext(projection="PA")))
    assert "cardiothoracic ratio 0.55 > 0.5" in statement.text["en"]
    assert "value 1.2 is implausible" in statement.text["en"]
    assert "1.2 > 0.5" not in statement.text["en"]
