"""The verdicts applied to a result JSON, as the verified SR applies them."""

from __future__ import annotations

import pytest
from tests.support.delivery_studies import result_json

from medgate.delivery.verified_result import apply_verdicts


def test_verdicts_turn_confirm_and_correct_the_findings() -> None:
    result = result_json("1.2.3", "1.2.4")
    nodule, effusion = result["findings"]
    assert nodule["present"] and not effusion["present"]
    verified = apply_verdicts(
        result,
        [
            {"finding": "nodule", "verdict": "modified", "value": 7.0},
            {"finding": "effusion", "verdict": "rejected"},
        ],
    )
    v_nodule, v_effusion = verified["findings"]
    assert v_nodule["present"] and v_nodule["measurements"][0]["value"] == 7.0
    assert v_nodule["verdict"] == "modified"
    assert v_effusion["present"] and v_effusion["verdict"] == "rejected"
    assert result["findings"][0]["measurements"][0]["value"] == 9.5  # the AI's JSON untouched
    confirmed = apply_verdicts(result, [{"finding": "nodule", "verdict": "confirmed"}])
    assert confirmed["findings"][0]["present"] and "verdict" not in confirmed["findings"][1]
    with pytest.raises(ValueError, match="unknown verdict"):
        apply_verdicts(result, [{"finding": "nodule", "verdict": "maybe"}])
