"""A result as the radiologist verified it: the AI's result JSON with the review's verdicts applied.

The verdicts mean what they mean in the verified SR (``reports.verified_sr``): ``confirmed``
keeps the AI's call, ``rejected`` turns it round (present becomes absent and vice versa),
``modified`` makes the finding present with its first measurement corrected to ``value``. The
final ORU^R01 and the final FHIR resources are built from this JSON, so the clinic gets what the
radiologist signed, not the AI's first call. Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any


def apply_verdicts(
    result: Mapping[str, Any], verdicts: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """A copy of ``result`` whose findings carry the verdicts (and a ``verdict`` key each)."""
    verified = copy.deepcopy(dict(result))
    by_label = {str(v["finding"]): v for v in verdicts}
    for finding in verified.get("findings", []):
        verdict = by_label.get(str(finding.get("label")))
        if verdict is None:
            continue
        kind = str(verdict["verdict"])
        finding["verdict"] = kind
        if kind == "rejected":
            finding["present"] = not bool(finding.get("present"))
        elif kind == "modified":
            finding["present"] = True
            value = verdict.get("value")
            measurements = finding.get("measurements") or []
            if value is not None and measurements:
                measurements[0]["value"] = float(value)
        elif kind != "confirmed":
            raise ValueError(f"unknown verdict {kind!r} for finding {finding.get('label')!r}")
    return verified
