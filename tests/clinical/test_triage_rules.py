"""The fallback triage rule (no triage bundle installed) against its stated policy.

Policy (``medgate.clinical.triage_rules``): pneumothorax is critical (an emergency: BTS Guideline
for Pleural Disease 2023); nodule, effusion and cardiomegaly with probability >= 0.5, or a
cardiothoracic ratio > 0.5 (Danzer 1919), are urgent; everything else routine.
"""

from __future__ import annotations

import pytest

from medgate.clinical.triage_rules import rule_priority

# (feature values, priority, source)
ROWS = [
    ({}, "routine", "policy: nothing found"),
    ({"p_pneumothorax": 0.5}, "critical", "BTS 2023: pneumothorax is an emergency; p >= 0.5"),
    ({"p_pneumothorax": 0.49}, "routine", "policy: p < 0.5 is not a finding"),
    ({"p_nodule": 0.5}, "urgent", "policy: nodule -> urgent read"),
    ({"p_effusion": 0.7}, "urgent", "policy: effusion -> urgent read"),
    ({"p_cardiomegaly": 0.5}, "urgent", "policy: cardiomegaly -> urgent read"),
    ({"m_ctr": 0.5}, "routine", "Danzer 1919: CTR > 0.5 strictly"),
    ({"m_ctr": 0.51}, "urgent", "Danzer 1919: CTR > 0.5"),
    ({"p_pneumothorax": 0.9, "p_nodule": 0.9}, "critical", "policy: the most severe wins"),
]


@pytest.mark.parametrize(("values", "priority", "source"), ROWS)
def test_rule_priority(values: dict[str, float], priority: str, source: str) -> None:
    assert rule_priority(values) == priority, source
