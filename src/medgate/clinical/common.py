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
