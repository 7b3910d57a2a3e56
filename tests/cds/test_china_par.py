"""China-PAR against the paper's published reference points (Table 2 profile)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.support.cds_data import REFERENCE, profile

from medgate.clinical import china_par as cp


@pytest.mark.parametrize("sex", ["male", "female"])
@pytest.mark.parametrize("age", [40, 50, 60, 70])
def test_reference_points_of_the_equation(sex: str, age: int) -> None:
    """The equation itself on the paper's (diabetic) profile: within 0.1 point of Table 2."""
    risk = cp.risk_percent(cp.ChinaParInput(**profile(sex, age)))
    assert abs(risk - REFERENCE[sex][age]) <= 0.1


@pytest.mark.parametrize("sex", ["male", "female"])
@pytest.mark.parametrize("age", [40, 50, 60, 70])
def test_reference_profile_over_http_is_direct_high_risk(
    client: TestClient, sex: str, age: int
) -> None:
    """The profile is diabetic and >= 40: the 2019 guideline makes it high risk without the
    equation (the old test expected the equation's number here)."""
    response = client.post("/api/v1/cds/china-par", json=profile(sex, age))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["route"] == "direct-high-risk" and body["category"] == "high"
    assert body["risk_10y_percent"] is None
    assert body["direct_high_risk_reasons"] == ["diabetes at age >= 40"]
    assert body["calculator"]["name"] == cp.NAME
    assert body["calculator"]["coefficients_sha256"] == cp.INFO.coefficients_sha256
    assert body["disclaimer"]


def test_printed_two_decimal_coefficients_miss_the_reference_points() -> None:
    """Why the restored coefficients are used: the printed ones do not reproduce Table 2."""
    worst = {}
    for sex, points in REFERENCE.items():
        errors = [
            abs(cp.risk_percent(cp.ChinaParInput(**profile(sex, age)), cp.PRINTED) - ref)
            for age, ref in points.items()
        ]
        worst[sex] = max(errors)
    assert worst["male"] > 0.5  # 20.7 % instead of 19.6 % at 70
    assert worst["female"] > 5.0  # printed S10 0.99: 11.8 % instead of 17.1 % at 70


def test_units_are_equivalent(client: TestClient) -> None:
    mg = client.post("/api/v1/cds/china-par", json=profile("male", 55, diabetes=False)).json()
    assert mg["route"] == "equation" and mg["risk_10y_percent"] is not None
    mmol = profile("male", 55, diabetes=False)
    del mmol["total_cholesterol_mg_dl"], mmol["hdl_cholesterol_mg_dl"]
    mmol.update(total_cholesterol_mmol_l=210 * 0.0259, hdl_cholesterol_mmol_l=55 * 0.0259)
    assert (
        client.post("/api/v1/cds/china-par", json=mmol).json()["risk_10y_percent"]
        == (mg["risk_10y_percent"])
    )


@pytest.mark.parametrize("age", [34, 75, 90])
def test_age_outside_derivation_range_is_not_applicable(client: TestClient, age: int) -> None:
    body = client.post("/api/v1/cds/china-par", json=profile("female", age, diabetes=False)).json()
    assert body["applicable"] is False
    assert body["risk_10y_percent"] is None and body["category"] is None
    assert "35-74" in body["reason"]


def test_risk_factors_move_risk_the_right_way() -> None:
    base = cp.risk_percent(cp.ChinaParInput(**profile("male", 55)))
    for change in (
        {"current_smoker": True},
        {"family_history_ascvd": True},
        {"sbp_mmhg": 150},
        {"on_bp_treatment": True},
        {"total_cholesterol_mg_dl": 260},
    ):
        assert cp.risk_percent(cp.ChinaParInput(**profile("male", 55, **change))) > base, change
    assert cp.risk_percent(cp.ChinaParInput(**profile("male", 55, diabetes=False))) < base
    assert cp.risk_percent(cp.ChinaParInput(**profile("male", 55, region="south"))) < base


@pytest.mark.parametrize(
    ("risk", "category"),
    [(4.9, "low"), (5.0, "intermediate"), (9.9, "intermediate"), (10.0, "high")],
)
def test_category_boundaries(risk: float, category: str) -> None:
    assert cp.category_for(risk) == category
