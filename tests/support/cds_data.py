"""Request bodies shared by the decision-support tests."""

from __future__ import annotations

# north, urban, diabetic, non-smoker, no family history, untreated SBP 130, TC 210, HDL 55, waist 80
REFERENCE = {
    "male": {40: 2.2, 50: 5.4, 60: 11.0, 70: 19.6},
    "female": {40: 2.4, 50: 5.4, 60: 10.1, 70: 17.1},
}


def profile(sex: str, age: float, **changes: object) -> dict[str, object]:
    body: dict[str, object] = dict(
        age=age,
        sex=sex,
        sbp_mmhg=130,
        on_bp_treatment=False,
        total_cholesterol_mg_dl=210,
        hdl_cholesterol_mg_dl=55,
        waist_cm=80,
        current_smoker=False,
        diabetes=True,
        region="north",
        residence="urban",
        family_history_ascvd=False,
    )
    body.update(changes)
    return body


#: One patient's inputs to the demo diabetes-progression model, in its training units.
DEMO_MODEL_INPUTS: dict[str, float] = {
    "age": 50,
    "bmi": 32,
    "mean_arterial_pressure_mmhg": 105,
    "total_cholesterol_mg_dl": 220,
    "ldl_cholesterol_mg_dl": 140,
    "hdl_cholesterol_mg_dl": 38,
    "tc_hdl_ratio": 5.8,
    "ln_triglycerides_mg_dl": 5.4,
    "glucose_mg_dl": 110,
}
