"""Which findings and measurements the clinical rules act on, recognised from their codes.

Models name findings with codes from their bundle metadata. Recognition goes by code *and* by
label/meaning, so a bundle that uses RadLex instead of SNOMED CT for a nodule still gets its
follow-up advice.
"""

from __future__ import annotations

import re

from medgate.models.findings import Code, Finding, Measurement

NODULE_CODES = {("SCT", "27925004"), ("SCT", "786838002"), ("SCT", "427359005")}
PNEUMOTHORAX_CODES = {("SCT", "36118008")}
EFFUSION_CODES = {("SCT", "60046008")}
CARDIOMEGALY_CODES = {("SCT", "287272002"), ("SCT", "8186001")}
CTR_CODES = {("LN", "59076-0"), ("99MEDGATE", "CTR")}
#: Measurement names that give a nodule's size (Fleischner: mean of long and short axis).
DIAMETER_CODES = {("SCT", "81827009")}
LONG_AXIS_CODES = {("SCT", "103339001")}
SHORT_AXIS_CODES = {("SCT", "103340004")}


def _key(code: Code | None) -> tuple[str, str] | None:
    return None if code is None else (code.scheme.upper(), code.value)


def finding_is(finding: Finding, kind: str) -> bool:
    """Whether ``finding`` is a nodule / pneumothorax / effusion / cardiomegaly."""
    sets = {
        "nodule": NODULE_CODES,
        "pneumothorax": PNEUMOTHORAX_CODES,
        "effusion": EFFUSION_CODES,
        "cardiomegaly": CARDIOMEGALY_CODES,
    }
    words = {
        "nodule": ("nodule",),
        "pneumothorax": ("pneumothorax",),
        "effusion": ("effusion",),
        "cardiomegaly": ("cardiomegaly", "enlarged heart"),
    }
    #: whole words (separators ignored) that name the finding on their own: "GGN" is a
    #: ground-glass nodule, "mGGN" a mixed and "pGGN" a pure ground-glass nodule; Chinese "结节"
    #: (nodule) is read as "nodule" (see ``_tokens``)
    acronyms = {"nodule": ("ggn", "mggn", "pggn")}
    if _key(finding.finding_type) in sets[kind]:
        return True
    texts = [" ".join(_tokens(text)) for text in _texts(finding)]
    if any(word in text for text in texts for word in words[kind]):
        return True
    return any(_has_word(finding, word) for word in acronyms.get(kind, ()))


def measurement_is_ctr(measurement: Measurement) -> bool:
    """Whether ``measurement`` is a cardiothoracic ratio."""
    if _key(measurement.name) in CTR_CODES:
        return True
    meaning = measurement.name.meaning.lower()
    return "cardiothoracic" in meaning or measurement.name.value.lower() == "ctr"


def axis_kind(measurement: Measurement) -> str | None:
    """'diameter', 'long' or 'short' for a size measurement in mm, else None."""
    if measurement.unit.value != "mm":
        return None
    key = _key(measurement.name)
    meaning = measurement.name.meaning.lower()
    if key in LONG_AXIS_CODES or "long axis" in meaning:
        return "long"
    if key in SHORT_AXIS_CODES or "short axis" in meaning:
        return "short"
    if key in DIAMETER_CODES or "diameter" in meaning:
        return "diameter"
    return None


def _texts(finding: Finding) -> tuple[str, str]:
    """The words that can name a finding: the bundle's label and its code's meaning."""
    return finding.label, finding.finding_type.meaning


#: Chinese nodule terms (肺结节诊治中国专家共识（2018年版）: 实性结节, 部分实性结节 = 混杂密度结节,
#: 纯磨玻璃结节) and the English words they are read as. Chinese is written without spaces, so a
#: term is found anywhere in the text, the longest term first: "部分实性" / "半实性" is part-solid,
#: never "实性" (solid); "亚实性" (subsolid) and "非实性" (non-solid) are not "实性" either. The
#: negations 未见 / 不含 / 无 (无明显 = 无 + 明显) read as "no", so "未见实性成分" is "no solid
#: component"; 实变 is consolidation and 晕 a halo ("磨玻璃晕" = ground-glass halo).
_CHINESE_WORDS = {
    "部分实性": " part solid ",
    "半实性": " semi solid ",
    "混杂密度": " part solid ",
    "混合密度": " part solid ",
    "混合性磨玻璃": " mixed ground glass ",
    "混合磨玻璃": " mixed ground glass ",
    "纯磨玻璃": " pure ground glass ",
    "磨玻璃": " ground glass ",
    "亚实性": " subsolid ",
    "非实性": " nonsolid ",
    "实性成分": " solid component ",
    "实性": " solid ",
    "实变": " consolidation ",
    "结节": " nodule ",
    "未见": " no ",
    "不含": " no ",
    "没有": " no ",
    "无": " no ",
    "明显": " obvious ",
    "明确": " definite ",
    "晕征": " halo sign ",
    "晕": " halo ",
}
_CHINESE = re.compile("|".join(sorted(_CHINESE_WORDS, key=len, reverse=True)))


def _tokens(text: str) -> list[str]:
    """Lower-case words of ``text``: spaces, underscores, hyphens and other separators split;
    the Chinese terms of ``_CHINESE_WORDS`` are read as their English words."""
    english = _CHINESE.sub(lambda term: _CHINESE_WORDS[term.group()], text.lower())
    return re.findall(r"[a-z0-9]+", english)


def _has_word(finding: Finding, word: str) -> bool:
    """Whether the label or code meaning holds ``word`` (written without separators) as one
    whole word or as consecutive words run together: "non_solid", "non-solid", "non solid" and
    "nonsolid" all hold "nonsolid"; "consolidation" does not hold "solid"."""
    for text in _texts(finding):
        tokens = _tokens(text)
        for start in range(len(tokens)):
            joined = ""
            for token in tokens[start:]:
                joined += token
                if joined == word:
                    return True
                if not word.startswith(joined):
                    break
    return False


# The Fleischner 2017 nodule type (MacMahon 2017, Table 1B) is read from the words of the label
# and the code meaning together (``_tokens``: lower case, one space between words), whole words
# only; in the patterns " ?" lets two words also be written as one ("groundglass", "partsolid").
_COMPONENT = r"(?:components?|parts?|portions?|cores?|areas?)"
_GROUND_GLASS_WORD = r"(?:ground ?glass|no[nt] ?solid|(?:p ?)?gg[no])"
_CONSOLIDATION_WORD = r"consolidat(?:ion|ions|ive|ed)"
#: a qualifier between "no" and what is absent: "no definite solid component"
_QUALIFIER = r"(?:definite|obvious|measurable|discernible|discernable|evident|visible|appreciable)"
#: what can be said to be absent: a solid or ground-glass component, consolidation
_ABSENT_THING = (
    rf"(?:solid {_COMPONENT}|{_GROUND_GLASS_WORD} {_COMPONENT}|{_CONSOLIDATION_WORD}"
    rf"(?: {_COMPONENT})?)"
)
#: a component said to be absent: "without (a|any) solid component", "no definite solid part",
#: "without ground-glass component", "solid component absent / not seen"; group "pre" or "post"
#: is what is absent
_ABSENT = re.compile(
    rf"\b(?:without|no)(?: (?:any|a|an))?(?: {_QUALIFIER})? (?P<pre>{_ABSENT_THING})\b"
    rf"|\b(?P<post>{_ABSENT_THING}) (?:is |are )?"
    r"(?:absent|not seen|not present|not identified|not visible)\b"
)
#: a ground-glass halo around a nodule ("solid nodule with ground-glass halo", "halo of ground
#: glass", 磨玻璃晕) is not a subsolid component of it
_HALO = re.compile(
    rf"\b{_GROUND_GLASS_WORD} (?:halo|rim)s?\b"
    rf"|\bhalos?(?: sign)?(?: of)?(?: surrounding)? {_GROUND_GLASS_WORD}\b"
)
#: words that say part-solid on their own: part / partly / partially / semi solid, mGGN / mGGO,
#: a solid component / part / portion / core / area
_PART_SOLID = re.compile(
    rf"\b(?:(?:part|partly|partially|semi) ?solid|m ?gg[no]|solid {_COMPONENT})\b"
)
#: ground glass, non-solid ("not solid"), GGN / GGO, pGGN (pure GGN)
_GROUND_GLASS = re.compile(rf"\b{_GROUND_GLASS_WORD}\b")
#: consolidation, consolidative, consolidated (实变): a solid component only beside ground glass
_CONSOLIDATION = re.compile(rf"\b{_CONSOLIDATION_WORD}\b")
#: "solid" as a word of its own: not "non(-)solid", "sub(-)solid" nor "consolidation"
_SOLID = re.compile(r"(?<!non )(?<!not )(?<!sub )\bsolid\b")
_MIXED = re.compile(r"\bmixed\b")
_SUBSOLID = re.compile(r"\bsub ?solid\b")


def nodule_type(finding: Finding) -> str | None:
    """'solid', 'ground_glass' or 'part_solid' from the label / code meaning, else None.

    Rules, in this order (a part-solid nodule read as anything else gets its 3-6 month CT late):

    1. a component said to be absent ("without any solid component", "no definite solid part",
       "solid component absent", "未见实性成分", "no consolidation") and a ground-glass halo
       ("solid nodule with ground-glass halo") are set aside, and say nothing of their own kind;
    2. a part-solid word ("part solid", "semisolid", 半实性, 混合密度) -> part-solid;
    3. a ground-glass word -> part-solid with any solid word ("solid and ground-glass
       components"), "mixed" ("mixed GGO") or a consolidation word ("GGO with central
       consolidation", 磨玻璃结节伴实变), else ground-glass;
    4. an absent solid component ("nodule without solid component") -> ground-glass;
    5. "subsolid" without more -> part-solid (the more cautious of the two subsolid rows);
    6. "solid" -> solid.

    Any other words (none, "calcified", "consolidation" without ground glass) -> None ("type not
    assessed").
    """
    text = " ; ".join(" ".join(_tokens(text)) for text in _texts(finding))
    no_solid = False
    for absent in _ABSENT.finditer(text):
        thing = absent.group("pre") or absent.group("post")
        no_solid = no_solid or thing.startswith("solid")
    text = _HALO.sub(" ; ", _ABSENT.sub(" ; ", text))
    if _PART_SOLID.search(text):
        return "part_solid"
    if _GROUND_GLASS.search(text):
        beside = _SOLID.search(text) or _MIXED.search(text) or _CONSOLIDATION.search(text)
        return "part_solid" if beside else "ground_glass"
    if no_solid:
        return "ground_glass"
    if _SUBSOLID.search(text):
        return "part_solid"
    if _SOLID.search(text):
        return "solid"
    return None
