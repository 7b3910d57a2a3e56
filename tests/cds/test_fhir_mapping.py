"""FHIR R4 prefetch -> ``AssessRequest`` (``medgate.api.cds_fhir``): R4 models, Condition
verification status, smoking-status codes, blood pressure taken from one reading, molar units."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.support.cds_fhir_data import (
    PATIENT,
    bp,
    fhir_condition,
    hook,
    obs,
    searchset,
    smoking_status,
)

from medgate.api import cds_fhir
from medgate.api.cds_fhir import (
    PREFETCH_TEMPLATES,
    FhirFetchError,
    fetch_missing,
    read_prefetch,
    summary_from_prefetch,
)
from medgate.clinical.assess import assess
from medgate.clinical.schemas import AssessRequest

EN = {"Accept-Language": "en"}


def cards(client: TestClient, prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/cds-services/medgate-primary-care", json=hook(prefetch), headers=EN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["cards"]
    return found


def observations(*resources: dict[str, Any]) -> dict[str, Any]:
    return summary_from_prefetch({"observations": searchset(list(resources))})


# 1. FHIR R4 models: clinicalStatus is optional in R4 (1..1 only in R5)


def test_r4_condition_without_clinical_status_is_read_as_active() -> None:
    conditions = searchset([fhir_condition("I10", clinical_status=None)])
    assert summary_from_prefetch({"conditions": conditions})["conditions"] == ["hypertension"]


def test_r4_condition_without_clinical_status_does_not_hide_a_crisis(client: TestClient) -> None:
    prefetch = {
        "patient": PATIENT,
        "observations": searchset([bp(210, 130, "2024-05-01T09:00:00Z")]),
        "conditions": searchset([fhir_condition("E11", clinical_status=None)]),
    }
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical" and "210/130" in found[0]["summary"]


# 2. Condition.verificationStatus


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_refuted_or_erroneous_condition_is_not_a_diagnosis(verification: str) -> None:
    conditions = searchset(
        [
            fhir_condition("E11", verification_status=verification),
            fhir_condition("38341003", "http://snomed.info/sct", verification_status=verification),
        ]
    )
    summary = summary_from_prefetch({"conditions": conditions})
    assert "diabetes" not in summary and "conditions" not in summary


@pytest.mark.parametrize(
    "verification", ["confirmed", "unconfirmed", "provisional", "differential", None]
)
def test_suspected_or_confirmed_condition_counts(verification: str | None) -> None:
    conditions = searchset(
        [
            fhir_condition("E11", verification_status=verification),
            fhir_condition("I10", verification_status=verification),
        ]
    )
    summary = summary_from_prefetch({"conditions": conditions})
    assert summary["diabetes"] is True
    assert summary["conditions"] == ["hypertension", "type2_diabetes"]


def test_refuted_condition_leaves_other_diagnoses() -> None:
    conditions = searchset(
        [fhir_condition("E10", verification_status="refuted"), fhir_condition("E11")]
    )
    assert summary_from_prefetch({"conditions": conditions})["diabetes_type"] == "type2"


# 3. Smoking status (US Core / HL7 smoking-status value set)


@pytest.mark.parametrize(
    ("snomed", "current"),
    [
        ("449868002", True),  # current every day smoker
        ("428041000124106", True),  # current some day smoker
        ("428071000124103", True),  # current heavy tobacco smoker
        ("428061000124105", True),  # current light tobacco smoker
        ("8517006", False),  # ex-smoker
        ("266919005", False),  # never smoker
        ("77176002", None),  # smoker, current status unknown
        ("266927001", None),  # unknown if ever smoked
    ],
)
def test_smoking_status_codes(snomed: str, current: bool | None) -> None:
    assert observations(smoking_status(snomed)).get("current_smoker") is current


# 4. Blood pressure: systolic and diastolic from the same reading


def test_older_diastolic_is_not_paired_with_a_newer_systolic(client: TestClient) -> None:
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                obs("8480-6", 120, "mm[Hg]", "2025-05-01T09:00:00Z"),
                obs("8462-4", 115, "mm[Hg]", "2024-01-01T09:00:00Z"),
            ]
        ),
    }
    summary = summary_from_prefetch(prefetch)
    assert summary["sbp_mmhg"] == 120 and "dbp_mmhg" not in summary
    found = cards(client, prefetch)
    assert all(c["indicator"] != "critical" for c in found)
    assert not any("120/115" in c["summary"] for c in found)


def test_older_diastolic_does_not_make_the_reading_look_impossible(client: TestClient) -> None:
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(130, 100, "2024-01-01T09:00:00Z"),
                obs("8480-6", 95, "mm[Hg]", "2025-05-01T09:00:00Z"),  # systolic recorded alone
            ]
        ),
    }
    summary = summary_from_prefetch(prefetch)
    assert summary["sbp_mmhg"] == 95 and "dbp_mmhg" not in summary
    found = cards(client, prefetch)
    assert not any("sbp_mmhg" in c["detail"] and "ignored" in c["detail"] for c in found)


def test_standalone_pair_with_the_same_time_is_one_reading() -> None:
    summary = observations(
        bp(150, 95, "2024-01-01T09:00:00Z"),
        obs("8480-6", 142, "mm[Hg]", "2025-05-01T09:00:00Z"),
        obs("8462-4", 88, "mm[Hg]", "2025-05-01T17:00:00+08:00"),  # the same instant
        obs("8462-4", 70, "mm[Hg]", "2025-04-01T09:00:00Z"),
    )
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (142, 88)


def test_latest_panel_wins_over_an_older_standalone_pair() -> None:
    summary = observations(
        obs("8480-6", 182, "mm[Hg]", "2024-01-01T09:00:00Z"),
        obs("8462-4", 112, "mm[Hg]", "2024-01-01T09:00:00Z"),
        bp(128, 82, "2025-05-01T09:00:00Z"),
    )
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (128, 82)


def test_newer_diastolic_alone_does_not_pair_with_an_older_systolic() -> None:
    """The latest reading wins whatever it holds: here a diastolic alone (never 100/105)."""
    summary = observations(
        obs("8480-6", 100, "mm[Hg]", "2024-01-01T09:00:00Z"),
        obs("8462-4", 105, "mm[Hg]", "2025-05-01T09:00:00Z"),
    )
    assert summary["dbp_mmhg"] == 105 and "sbp_mmhg" not in summary


def test_systolic_crisis_alone_is_still_a_crisis(client: TestClient) -> None:
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(150, 95, "2024-01-01T09:00:00Z"),
                obs("8480-6", 186, "mm[Hg]", "2025-05-01T09:00:00Z"),
            ]
        ),
    }
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical" and "186" in found[0]["summary"]
    assert "186/95" not in found[0]["summary"]


# 5. Molar-concentration LOINC codes and LDL cholesterol


def test_new_codes_are_in_the_observation_query() -> None:
    query = PREFETCH_TEMPLATES["observations"]
    for code in [
        "14749-6",
        "15074-8",
        "14771-0",
        "14647-2",
        "14646-4",
        "13457-7",
        "18262-6",
        "22748-8",
        "2089-1",
        "39469-2",
        "55284-4",
    ]:
        assert f"http://loinc.org|{code}," in query + ","


@pytest.mark.parametrize(
    ("code", "value", "unit", "field", "expected"),
    [
        ("14749-6", 6.1, "mmol/L", "random_glucose_mmol_l", 6.1),
        ("15074-8", 7.2, "mmol/L", "random_glucose_mmol_l", 7.2),
        ("14771-0", 5.4, "mmol/L", "fasting_glucose_mmol_l", 5.4),
        ("14647-2", 5.6, "mmol/L", "total_cholesterol_mmol_l", 5.6),
        ("14646-4", 1.1, "mmol/L", "hdl_cholesterol_mmol_l", 1.1),
        ("22748-8", 3.4, "mmol/L", "ldl_cholesterol_mmol_l", 3.4),
        ("13457-7", 131.3, "mg/dL", "ldl_cholesterol_mmol_l", 3.4),
        ("18262-6", 3.4, "mmol/L", "ldl_cholesterol_mmol_l", 3.4),  # the unit decides
        ("2089-1", 131.3, "mg/dL", "ldl_cholesterol_mmol_l", 3.4),
        ("39469-2", 2.9, "mmol/L", "ldl_cholesterol_mmol_l", 2.9),
        ("2093-3", 5.6, "mmol/L", "total_cholesterol_mmol_l", 5.6),
        ("2345-7", 110, "mg/dL", "random_glucose_mmol_l", 6.1),
    ],
)
def test_lab_codes_and_units(
    code: str, value: float, unit: str, field: str, expected: float
) -> None:
    assert observations(obs(code, value, unit))[field] == pytest.approx(expected, abs=0.01)


def test_molar_glucose_hypoglycaemia_is_an_emergency() -> None:
    summary = observations(obs("14749-6", 2.5, "mmol/L"))
    assert summary["random_glucose_mmol_l"] == pytest.approx(2.5)
    result = assess(AssessRequest(**summary), None, "en")
    assert result.referral.level == "emergency"


def test_molar_ldl_reaches_china_par_direct_high_risk() -> None:
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(132, 84, "2024-05-01T09:00:00Z"),
                obs("14647-2", 6.4, "mmol/L"),
                obs("14646-4", 1.1, "mmol/L"),
                obs("22748-8", 5.5, "mmol/L"),
                obs("8280-0", 88, "cm"),
                smoking_status("266919005"),
            ]
        ),
        "conditions": searchset([]),
    }
    summary = summary_from_prefetch(prefetch)
    assert summary["ldl_cholesterol_mmol_l"] == pytest.approx(5.5)
    request = AssessRequest(
        **summary,
        diabetes=False,
        region="north",
        residence="urban",
        family_history_ascvd=False,
        on_bp_treatment=False,
    )
    par = assess(request, None, "en").china_par
    assert par is not None and par.route == "direct-high-risk"
    assert any("LDL" in reason for reason in par.direct_high_risk_reasons)


def test_untimed_standalone_readings_are_not_paired() -> None:
    untimed = [obs("8480-6", 128, "mm[Hg]"), obs("8462-4", 84, "mm[Hg]")]
    for resource in untimed:
        del resource["effectiveDateTime"]
    summary = observations(*untimed)
    assert summary["sbp_mmhg"] == 128 and "dbp_mmhg" not in summary


# Also fixed: partial birth dates, recurrence / relapse in the Condition query


@pytest.mark.parametrize(
    ("born", "age"), [("1966-03-01", 60), ("1966-03", 59), ("1966-02", 60), ("1966", 59)]
)
def test_partial_birth_date_gives_the_youngest_possible_age(born: str, age: int) -> None:
    patient = {**PATIENT, "birthDate": born}
    summary = summary_from_prefetch({"patient": patient}, today=dt.date(2026, 3, 15))
    assert summary["age"] == age


def test_condition_query_asks_for_every_status_that_counts() -> None:
    assert PREFETCH_TEMPLATES["conditions"].endswith("clinical-status=active,recurrence,relapse")
    relapse = searchset([fhir_condition("I10", clinical_status="relapse")])
    assert summary_from_prefetch({"conditions": relapse})["conditions"] == ["hypertension"]
    resolved = searchset([fhir_condition("I10", clinical_status="resolved")])
    assert "conditions" not in summary_from_prefetch({"conditions": resolved})


def test_the_older_bp_panel_code_is_read() -> None:
    panel = bp(182, 96, "2024-05-01T09:00:00Z")
    panel["code"]["coding"][0]["code"] = "55284-4"  # Blood pressure systolic and diastolic
    assert (observations(panel)["sbp_mmhg"], observations(panel)["dbp_mmhg"]) == (182, 96)


def test_provenance_names_the_resources_behind_each_value() -> None:
    """The audit trace's sources come from the pass that chose the values: the systolic and the
    diastolic of one reading, and each Condition with whether it counted."""
    prefetch = {
        "observations": searchset(
            [
                {**obs("8480-6", 142, "mm[Hg]", "2025-05-01T09:00:00Z"), "id": "sbp-new"},
                {**obs("8462-4", 88, "mm[Hg]", "2025-05-01T09:00:00Z"), "id": "dbp-new"},
                {**obs("8462-4", 115, "mm[Hg]", "2025-04-01T09:00:00Z"), "id": "dbp-older"},
            ]
        ),
        "conditions": searchset(
            [
                fhir_condition("I10"),
                fhir_condition("E11", verification_status="refuted"),
            ]
        ),
    }
    summary, sources = read_prefetch(prefetch)
    by_input = {s["input"]: s for s in sources if s["input"] != "condition"}
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (142, 88)
    assert by_input["sbp_mmhg"]["source"] == "Observation/sbp-new"
    assert by_input["dbp_mmhg"]["source"] == "Observation/dbp-new"
    assert by_input["dbp_mmhg"]["effective"] == "2025-05-01T09:00:00Z"
    conditions = {s["code"].split("|")[1]: s["used"] for s in sources if s["input"] == "condition"}
    assert conditions == {"I10": True, "E11": False}
    assert summary["conditions"] == ["hypertension"]


# 6. Audit: a diastolic crisis recorded on its own; timestamps in other valid forms; Chinese
# FHIR fetch errors


def test_standalone_systolic_and_diastolic_minutes_apart_are_one_reading(
    client: TestClient,
) -> None:
    """Audit: SBP 150 at 09:00 and DBP 120 at 09:01 gave {sbp 150}; the DBP crisis was dropped."""
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                obs("8480-6", 150, "mm[Hg]", "2024-05-01T09:00:00Z"),
                obs("8462-4", 120, "mm[Hg]", "2024-05-01T09:01:00Z"),
            ]
        ),
    }
    summary = summary_from_prefetch(prefetch)
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (150, 120)
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical" and "150/120" in found[0]["summary"]


def test_the_nearest_standalone_values_within_5_minutes_pair() -> None:
    summary = observations(
        obs("8480-6", 150, "mm[Hg]", "2024-05-01T09:00:00Z"),
        obs("8480-6", 160, "mm[Hg]", "2024-05-01T09:03:00Z"),
        obs("8462-4", 100, "mm[Hg]", "2024-05-01T09:04:00Z"),
    )
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (160, 100)
    exactly_5 = observations(
        obs("8480-6", 150, "mm[Hg]", "2024-05-01T09:00:00Z"),
        obs("8462-4", 96, "mm[Hg]", "2024-05-01T09:05:00Z"),
    )
    assert (exactly_5["sbp_mmhg"], exactly_5["dbp_mmhg"]) == (150, 96)
    apart = observations(
        obs("8480-6", 150, "mm[Hg]", "2024-05-01T09:00:00Z"),
        obs("8462-4", 96, "mm[Hg]", "2024-05-01T09:05:01Z"),
    )
    assert apart == {"dbp_mmhg": 96}  # more than 5 minutes: two readings, the later wins


def test_newer_diastolic_crisis_alone_beats_an_older_panel(client: TestClient) -> None:
    """Audit: panel 130/80, then DBP 125 alone: 130/80 was used and no crisis card appeared."""
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(130, 80, "2024-01-01T09:00:00Z"),
                obs("8462-4", 125, "mm[Hg]", "2025-05-01T09:00:00Z"),
            ]
        ),
    }
    summary = summary_from_prefetch(prefetch)
    assert summary["dbp_mmhg"] == 125 and "sbp_mmhg" not in summary
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical" and "125" in found[0]["summary"]
    assert not any("130/125" in c["summary"] or "130/80" in c["summary"] for c in found)


def _timed(resource: dict[str, Any], **timing: Any) -> dict[str, Any]:
    """``resource`` with its effectiveDateTime replaced by ``timing``."""
    del resource["effectiveDateTime"]
    return {**resource, **timing}


def test_a_panel_timed_by_effective_instant_beats_an_older_one(client: TestClient) -> None:
    """Audit: effectiveInstant was not read, so 128/78 from 2019 hid a 200/120 crisis."""
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(128, 78, "2019-01-01T09:00:00Z"),
                _timed(bp(200, 120, "2024-05-01"), effectiveInstant="2024-05-01T09:00:00Z"),
            ]
        ),
    }
    summary, sources = read_prefetch(prefetch)
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (200, 120)
    assert {s["effective"] for s in sources} == {"2024-05-01T09:00:00Z"}
    body = hook(prefetch, hook="order-select")
    body["context"].update(selections=["MedicationRequest/m1"], draftOrders=searchset([]))
    response = client.post("/cds-services/medgate-order-safety", json=body, headers=EN)
    found = response.json()["cards"]
    assert [c["indicator"] for c in found] == ["critical"] and "200/120" in found[0]["summary"]


@pytest.mark.parametrize("partial", ["2024-05", "2024"])
def test_a_partial_date_orders_at_the_start_of_its_span(partial: str) -> None:
    """Audit: "2024-05" was the oldest time, so 100 mg/dL from 2023 hid a glucose of 400."""
    summary, sources = read_prefetch(
        {
            "observations": searchset(
                [
                    obs("2345-7", 400, "mg/dL", partial),
                    obs("2345-7", 100, "mg/dL", "2023-01-01T09:00:00Z"),
                ]
            )
        }
    )
    assert summary["random_glucose_mmol_l"] == pytest.approx(400 / 18.0, abs=0.1)
    assert sources[0]["effective"] == partial
    older = observations(
        obs("2345-7", 400, "mg/dL", partial), obs("2345-7", 100, "mg/dL", "2025-01-01T09:00:00Z")
    )
    assert older["random_glucose_mmol_l"] == pytest.approx(100 / 18.0, abs=0.1)


def test_effective_period_end_then_start_then_issued() -> None:
    """Audit: a heart rate whose effectivePeriod has only an end was the oldest."""
    only_end = _timed(obs("8867-4", 132, "/min"), effectivePeriod={"end": "2024-05-01T09:00:00Z"})
    assert observations(obs("8867-4", 70, "/min", "2024-01-01T09:00:00Z"), only_end) == {
        "heart_rate": 132
    }
    period = {"start": "2024-01-01T09:00:00Z", "end": "2024-06-01T09:00:00Z"}
    ended = _timed(obs("8867-4", 132, "/min"), effectivePeriod=period)
    assert observations(obs("8867-4", 70, "/min", "2024-03-01T09:00:00Z"), ended) == {
        "heart_rate": 132
    }
    issued = _timed(obs("8867-4", 132, "/min"), issued="2024-05-01T09:00:00+08:00")
    assert observations(obs("8867-4", 70, "/min", "2024-01-01T09:00:00Z"), issued) == {
        "heart_rate": 132
    }


@pytest.mark.parametrize("day", ["2024-05", "2024", "2024-05-01"])
def test_values_without_a_time_of_day_are_never_paired(day: str) -> None:
    summary = observations(obs("8480-6", 150, "mm[Hg]", day), obs("8462-4", 96, "mm[Hg]", day))
    assert len(summary) == 1


@pytest.mark.parametrize(
    ("failure", "en", "zh"),
    [
        (
            httpx.ConnectError("refused"),
            "FHIR server unreachable: ConnectError",
            "无法连接FHIR服务器（ConnectError）",
        ),
        (500, "FHIR server answered 500 for patient", "FHIR服务器对patient返回500"),
    ],
    ids=["unreachable", "http-500"],
)
def test_fhir_fetch_errors_say_what_happened_in_both_languages(
    monkeypatch: pytest.MonkeyPatch, failure: Exception | int, en: str, zh: str
) -> None:
    """Audit: the Chinese card "部分数据无法使用" showed the English fetch error."""

    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return httpx.Response(failure, json={"resourceType": "OperationOutcome"})

    real = httpx.Client
    monkeypatch.setattr(
        cds_fhir.httpx,
        "Client",
        lambda **kwargs: real(transport=httpx.MockTransport(answer), **kwargs),
    )
    with pytest.raises(FhirFetchError) as caught:
        fetch_missing({}, "p1", "http://fhir.invalid/fhir", "token")
    assert str(caught.value) == caught.value.en == en
    assert caught.value.zh == zh
