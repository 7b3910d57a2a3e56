"""The transparent triage rule used when no triage bundle is installed.

A clinical rule, not a model: pneumothorax is critical (an emergency: BTS Guideline for Pleural
Disease 2023); the other findings the guidance acts on (nodule, effusion, cardiomegaly) and a
cardiothoracic ratio above 0.5 are urgent, so that they reach a radiologist ahead of the routine
list. A finding counts when its probability is at least 0.5. The learned triage model lives in
``medgate.models.triage``.
"""

from __future__ import annotations

from collections.abc import Sequence

from medgate.models.findings import ModelResult, Priority, TriageResult
from medgate.models.triage import finding_features

CRITICAL_FINDINGS = frozenset({"pneumothorax"})
URGENT_FINDINGS = frozenset({"nodule", "effusion", "cardiomegaly"})
PROBABILITY_AT_LEAST = 0.5
CTR_ABOVE = 0.5


def rule_priority(values: dict[str, float], ctr_limit: float = CTR_ABOVE) -> Priority:
    """Pneumothorax -> critical; nodule, effusion, cardiomegaly or CTR > limit -> urgent."""
    if any(values.get(f"p_{name}", 0.0) >= PROBABILITY_AT_LEAST for name in CRITICAL_FINDINGS):
        return "critical"
    if any(values.get(f"p_{name}", 0.0) >= PROBABILITY_AT_LEAST for name in URGENT_FINDINGS):
        return "urgent"
    if values.get("m_ctr", 0.0) > ctr_limit:
        return "urgent"
    return "routine"


def rule_triage(model_results: Sequence[ModelResult]) -> TriageResult:
    """Priority and reasons for one study by ``rule_priority`` (no triage bundle installed)."""
    values, reasons = finding_features(model_results)
    ctr = values.get("m_ctr")
    if ctr is not None and ctr > CTR_ABOVE:
        reasons.append(f"cardiothoracic ratio {ctr:.2f} > 0.50")
    return TriageResult(
        priority=rule_priority(values),
        reasons=reasons or ["no finding above threshold"],
        scores={k: round(v, 4) for k, v in values.items()},
    )
