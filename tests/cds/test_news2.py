"""NEWS2: every band boundary of every parameter, the risk bands, and qSOFA."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medgate.clinical import news2 as nw

NORMAL = dict(
    respiratory_rate=16,
    spo2=97,
    spo2_scale=1,
    on_oxygen=False,
    sbp_mmhg=120,
    heart_rate=70,
    consciousness="A",
    temperature_c=37.0,
)

# (field, extra fields, [(value, points)]) with each band's first and last value (RCP chart)
EDGES: list[tuple[str, dict[str, object], list[tuple[float, int]]]] = [
    (
        "respiratory_rate",
        {},
        [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)],
    ),
    ("spo2", {}, [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]),
    (
        "spo2",
        {"spo2_scale": 2},
        [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 0), (100, 0)],
    ),
    (
        "spo2",
        {"spo2_scale": 2, "on_oxygen": True},
        [
            (83, 3),
            (84, 2),
            (85, 2),
            (86, 1),
            (87, 1),
            (88, 0),
            (92, 0),
            (93, 1),
            (94, 1),
            (95, 2),
            (96, 2),
            (97, 3),
            (100, 3),
        ],
    ),
    (
        "sbp_mmhg",
        {},
        [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
    ),
    (
        "heart_rate",
        {},
        [
            (40, 3),
            (41, 1),
            (50, 1),
            (51, 0),
            (90, 0),
            (91, 1),
            (110, 1),
            (111, 2),
            (130, 2),
            (131, 3),
        ],
    ),
    (
        "temperature_c",
        {},
        [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)],
    ),
]
CASES = [(field, extra, value, points) for field, extra, pairs in EDGES for value, points in pairs]


@pytest.mark.parametrize(("field", "extra", "value", "points"), CASES)
def test_every_band_boundary(field: str, extra: dict, value: float, points: int) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, **extra, field: value}))
    assert result.parameters["spo2" if field == "spo2" else field] == points


@pytest.mark.parametrize(("level", "points"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(level: str, points: int) -> None:
    assert (
        nw.news2(nw.News2Input(**{**NORMAL, "consciousness": level})).parameters["consciousness"]
        == points
    )


def test_oxygen_adds_two() -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, "on_oxygen": True}))
    assert result.parameters["air_or_oxygen"] == 2 and result.score == 2


@pytest.mark.parametrize(
    ("changes", "score", "risk"),
    [
        ({}, 0, "low"),
        ({"heart_rate": 111, "temperature_c": 38.5, "respiratory_rate": 9}, 4, "low"),
        ({"respiratory_rate": 8}, 3, "low-medium"),  # a single parameter scoring 3
        ({"respiratory_rate": 21, "heart_rate": 111, "temperature_c": 38.5}, 5, "medium"),
        ({"respiratory_rate": 21, "heart_rate": 111, "temperature_c": 39.1}, 6, "medium"),
        ({"respiratory_rate": 25, "heart_rate": 111, "temperature_c": 39.1}, 7, "high"),
    ],
)
def test_risk_bands(changes: dict, score: int, risk: str) -> None:
    result = nw.news2(nw.News2Input(**{**NORMAL, **changes}))
    assert (result.score, result.risk) == (score, risk)


def test_news2_over_http(client: TestClient) -> None:
    body = {**NORMAL, "respiratory_rate": 25, "heart_rate": 131, "consciousness": "V"}
    response = client.post("/api/v1/cds/news2", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["score"] == 9 and data["risk"] == "high"
    assert set(data["parameters"]) == {
        "respiratory_rate",
        "spo2",
        "air_or_oxygen",
        "sbp_mmhg",
        "heart_rate",
        "consciousness",
        "temperature_c",
    }
    assert data["calculator"]["name"] == "news2"


@pytest.mark.parametrize(
    ("rr", "sbp", "avpu", "score"),
    [(21, 101, "A", 0), (22, 101, "A", 1), (22, 100, "A", 2), (22, 100, "C", 3), (16, 120, "U", 1)],
)
def test_qsofa_boundaries(client: TestClient, rr: int, sbp: int, avpu: str, score: int) -> None:
    body = {"respiratory_rate": rr, "sbp_mmhg": sbp, "consciousness": avpu}
    data = client.post("/api/v1/cds/qsofa", json=body).json()
    assert data["score"] == score and data["positive"] is (score >= 2)
