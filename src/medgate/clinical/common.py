"""Pieces every calculator shares: identification, coefficient hashing, unit conversion."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

# China-PAR (and its official calculator) convert lipids with mg/dL = mmol/L / 0.0259.
MG_DL_PER_MMOL_L_CHOLESTEROL = 1 / 0.0259
MG_DL_PER_MMOL_L_GLUCOSE = 18.016
MG_DL_PER_MMOL_L_TRIGLYCERIDES = 88.57


class CalculatorInfo(BaseModel):
    """Which equation produced an answer: a changed coefficient changes the hash."""

    name: str
    version: str
    coefficients_sha256: str
    source: str


def coefficients_sha256(coefficients: Any) -> str:
    """SHA-256 of the canonical JSON of a coefficient table (sorted keys, no spaces)."""
    text = json.dumps(coefficients, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def make_info(name: str, version: str, coefficients: Any, source: str) -> CalculatorInfo:
    return CalculatorInfo(
        name=name,
        version=version,
        coefficients_sha256=coefficients_sha256(coefficients),
        source=source,
    )


class Reason(BaseModel):
    """One criterion that fired, in both languages, with the rule's source."""

    code: str
    en: str
    zh: str
    source: str = ""


#: The 2019 Chinese guideline for cardiovascular risk assessment (China-PAR flow chart).
GUIDELINE_2019 = (
    "中国心血管病风险评估和管理指南编写联合委员会. 中国心血管病风险评估和管理指南. "
    "中华预防医学杂志 2019;53(1):13-35. doi:10.3760/cma.j.issn.0253-9624.2019.01.004"
)

#: Action levels, most severe first: ``emergency`` = call 120 / transfer now; ``urgent`` =
#: urgent referral (primary-care 紧急转诊); ``routine`` = referral to a specialist.
LEVEL_ORDER: dict[str, int] = {"emergency": 0, "urgent": 1, "routine": 2, "none": 3}


def check_bp_pair(sbp: float | None, dbp: float | None, where: str = "") -> None:
    """Refuse a physiologically impossible pair (diastolic not below systolic).

    Such a pair is almost always swapped fields or a typing error; reporting it as a crisis
    (SBP 80 / DBP 150 would meet "DBP >= 110") would send a patient to hospital on a typo.
    """
    if sbp is not None and dbp is not None and dbp >= sbp:
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}diastolic {dbp:g} mmHg is not below systolic {sbp:g} mmHg: an impossible "
            "pair (swapped fields or a typing error); check the reading"
        )


#: Carried by every decision-support answer (JSON and each CDS Hooks card).
DISCLAIMER: dict[str, str] = {
    "en": "Decision support only: the treating doctor decides.",
    "zh": "仅供辅助决策，由接诊医生判断。",
}
