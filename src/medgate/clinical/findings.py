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
    #: ground-glass nodule, "mGGN" a mixed ground-glass nodule
    acronyms = {"nodule": ("ggn", "mggn")}
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


def _tokens(text: str) -> list[str]:
    """Lower-case words of ``text``: spaces, underscores, hyphens and other separators split."""
    return re.findall(r"[a-z0-9]+", text.lower())


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


#: Words (without separators, see ``_has_word``) in a finding's label or code meaning that give
#: the Fleischner 2017 nodule type, checked in this order: part-solid words before ground-glass
#: and solid ones ("mixed GGN", "ground-glass nodule with solid component" and "partially solid
#: nodule" are part-solid, never pure ground-glass or solid), so "non-solid" is never read as
#: "solid" either. Fleischner: "subsolid" = ground-glass (non-solid) or part-solid; "semisolid",
#: "mixed ground-glass" (mGGN) and "partially solid" are synonyms of part-solid. A ground-glass
#: nodule "without" / with "no" solid component is pure ground-glass. A bundle that does not type
#: its nodules gets None ("type not assessed").
_TYPE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground_glass", ("withoutsolidcomponent", "withoutasolidcomponent", "nosolidcomponent")),
    (
        "part_solid",
        (
            "partsolid",
            "partiallysolid",
            "semisolid",
            "mixedgroundglass",
            "mixedggn",
            "mggn",
            "solidcomponent",
        ),
    ),
    ("ground_glass", ("nonsolid", "groundglass", "ggn", "ggo")),
    # "subsolid" without more: the part-solid row (the more cautious of the two) is used
    ("part_solid", ("subsolid",)),
    ("solid", ("solid",)),
)


def nodule_type(finding: Finding) -> str | None:
    """'solid', 'ground_glass' or 'part_solid' from the label / code meaning, else None."""
    for kind, words in _TYPE_WORDS:
        if any(_has_word(finding, word) for word in words):
            return kind
    return None
