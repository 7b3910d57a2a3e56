"""FHIR R4 prefetch -> ``AssessRequest`` (``medgate.api.cds_fhir``): R4 models, Condition
verification status, smoking-status codes, blood pressure taken from one reading, molar units,
pregnancy and ASCVD Conditions, values too old to use, dates without a time of day, resources
that are not valid FHIR R4."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.support.cds_fhir_data import (
    PATIENT,
    ago,
    bp,
    fhir_condition,
    hook,
    obs,
    searchset,
    smoking_status,
)

from medgate.api import cds_fhir, cds_trace
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
        "observations": searchset([bp(210, 130)]),
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
                obs("8480-6", 120, "mm[Hg]", ago(hours=1)),
                obs("8462-4", 115, "mm[Hg]", ago(days=2)),
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
                bp(130, 100, ago(days=2)),
                obs("8480-6", 95, "mm[Hg]", ago(hours=1)),  # systolic recorded alone
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
                bp(150, 95, ago(days=2)),
                obs("8480-6", 186, "mm[Hg]", ago(hours=1)),
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
                obs("8480-6", 150, "mm[Hg]", ago(minutes=61)),
                obs("8462-4", 120, "mm[Hg]", ago(minutes=60)),
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
                bp(130, 80, ago(days=2)),
                obs("8462-4", 125, "mm[Hg]", ago(hours=1)),
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
    instant = ago(hours=1)
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [bp(128, 78, "2019-01-01T09:00:00Z"), _timed(bp(200, 120), effectiveInstant=instant)]
        ),
    }
    summary, sources = read_prefetch(prefetch)
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (200, 120)
    assert {s["effective"] for s in sources} == {instant}
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


# 7. Audit: pregnancy and established ASCVD from Conditions; BP after a crisis; values too old
# to use; dates without a time of day; one invalid resource no longer hides every card

ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
WOMAN = {**PATIENT, "gender": "female", "birthDate": "1994-06-01"}


@pytest.mark.parametrize(
    ("code", "system"),
    [
        ("O14.1", ICD10),  # severe pre-eclampsia: chapter O
        ("O24.4", ICD10),  # diabetes arising in pregnancy
        ("O99.4", ICD10),
        ("O9A.1", ICD10),  # ICD-10-CM's O9A
        ("Z33", ICD10),
        ("Z34.0", ICD10),  # a subcode of Z34
        ("Z39.1", ICD10),  # lactating mother
        ("77386006", SNOMED),
    ],
)
def test_pregnancy_and_lactation_conditions(code: str, system: str) -> None:
    summary = summary_from_prefetch({"conditions": searchset([fhir_condition(code, system)])})
    assert summary["pregnant_or_lactating"] is True
    assert "ascvd" not in summary


@pytest.mark.parametrize("code", ["Z39.2", "Z30", "OTHER", "0141"])
def test_codes_that_are_not_pregnancy(code: str) -> None:
    summary = summary_from_prefetch({"conditions": searchset([fhir_condition(code)])})
    assert "pregnant_or_lactating" not in summary


@pytest.mark.parametrize(
    ("code", "system"),
    [
        *((c, ICD10) for c in ["I20.0", "I21", "I22.9", "I23", "I24.1", "I25.2", "I63.9"]),
        *((c, ICD10) for c in ["G45.9", "I70.2", "Z95.1", "Z95.5"]),
        *(
            (c, SNOMED)
            for c in [
                "22298006",
                "399211009",
                "414545008",
                "53741008",
                "194828000",
                "432504007",
                "266257000",
            ]
        ),
    ],
)
def test_established_ascvd_conditions(code: str, system: str) -> None:
    summary = summary_from_prefetch({"conditions": searchset([fhir_condition(code, system)])})
    assert summary["ascvd"] is True
    assert "pregnant_or_lactating" not in summary


@pytest.mark.parametrize("code", ["Z95.0", "I26", "I64", "G46"])
def test_codes_that_are_not_ascvd(code: str) -> None:
    """Z95.0 (pacemaker) is a sibling of Z95.1 / Z95.5, not a subcode."""
    assert "ascvd" not in summary_from_prefetch({"conditions": searchset([fhir_condition(code)])})


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [("resolved", None), ("inactive", None), ("active", "refuted"), ("active", "entered-in-error")],
)
def test_pregnancy_and_ascvd_follow_the_condition_status_rules(
    clinical: str, verification: str | None
) -> None:
    conditions = searchset(
        [
            fhir_condition("O14.1", clinical_status=clinical, verification_status=verification),
            fhir_condition("I25.2", clinical_status=clinical, verification_status=verification),
        ]
    )
    summary = summary_from_prefetch({"conditions": conditions})
    assert "pregnant_or_lactating" not in summary and "ascvd" not in summary


def test_a_pregnant_woman_with_bp_146_94_is_referred_as_over_assess(client: TestClient) -> None:
    """Audit: /assess with pregnant_or_lactating true was urgent; the hook gave no referral."""
    assessed = client.post(
        "/api/v1/cds/assess",
        json={"age": 32, "sex": "female", "sbp_mmhg": 146, "dbp_mmhg": 94,
              "pregnant_or_lactating": True},
        headers=EN,
    ).json()  # fmt: skip
    assert assessed["referral"]["level"] == "urgent"
    prefetch = {
        "patient": WOMAN,
        "observations": searchset([bp(146, 94)]),
        "conditions": searchset([fhir_condition("Z34.0")]),
    }
    assert summary_from_prefetch(prefetch)["pregnant_or_lactating"] is True
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical"
    assert found[0]["summary"] == "Urgent referral: " + assessed["referral"]["reasons"][0]


def test_an_old_myocardial_infarction_sets_the_ldl_target_of_secondary_prevention(
    client: TestClient,
) -> None:
    """Audit: with I25.2 (old MI) LDL-C 2.5 was judged against < 3.4, "at target"."""
    prefetch = {
        "patient": PATIENT,
        "observations": searchset([bp(130, 80), obs("22748-8", 2.5, "mmol/L")]),
        "conditions": searchset([fhir_condition("I10"), fhir_condition("I25.2")]),
    }
    found = cards(client, prefetch)
    follow_up = next(c for c in found if c["summary"].startswith("Follow-up"))
    assert "LDL-C 2.5 mmol/L: not at target (< 1.8 mmol/L)" in follow_up["detail"]
    assert any(c["summary"].startswith("Established ASCVD") for c in found)


def test_a_condition_is_used_only_when_it_counts_and_maps_to_an_input() -> None:
    """Audit: I25.2 and O14.1 showed used: true in the trace although nothing read them; an
    active asthma Condition (mapped to nothing) is not used either."""
    conditions = searchset(
        [
            fhir_condition("I25.2"),
            fhir_condition("O14.1"),
            fhir_condition("J45"),
            fhir_condition("E11", verification_status="refuted"),
            fhir_condition("I10"),
        ]
    )
    _, sources = read_prefetch({"conditions": conditions})
    used = {s["code"].split("|")[1]: s["used"] for s in sources if s["input"] == "condition"}
    assert used == {"I25.2": True, "O14.1": True, "J45": False, "E11": False, "I10": True}


def test_a_crisis_minutes_ago_is_not_hidden_by_a_diastolic_alone(client: TestClient) -> None:
    """Audit: panel 196/118 at 09:00, then a diastolic 82 alone at 09:02, gave "-/82"."""
    observations_ = [bp(196, 118, ago(minutes=62)), obs("8462-4", 82, "mm[Hg]", ago(minutes=60))]
    summary, sources = read_prefetch({"observations": searchset(observations_)})
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (196, 118)
    assert {s["source"] for s in sources} == {f"Observation/{observations_[0]['id']}"}
    found = cards(client, {"patient": PATIENT, "observations": searchset(observations_)})
    assert found[0]["indicator"] == "critical" and "196/118" in found[0]["summary"]


def test_a_standalone_systolic_crisis_is_not_hidden_by_a_later_diastolic() -> None:
    """Audit: SBP 182 at 09:00, DBP 70 at 08:57 and DBP 100 at 09:04 gave "-/100"."""
    summary = observations(
        obs("8480-6", 182, "mm[Hg]", "2024-05-01T09:00:00Z"),
        obs("8462-4", 70, "mm[Hg]", "2024-05-01T08:57:00Z"),
        obs("8462-4", 100, "mm[Hg]", "2024-05-01T09:04:00Z"),
    )
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (182, 70)


def test_a_complete_latest_reading_wins_after_a_crisis() -> None:
    """Re-measuring after a high reading is the standard practice: the re-measured BP is used."""
    assert observations(
        bp(196, 118, "2024-05-01T09:00:00Z"), bp(150, 92, "2024-05-01T09:05:00Z")
    ) == {"sbp_mmhg": 150, "dbp_mmhg": 92}
    settled = observations(
        bp(196, 118, "2024-05-01T09:00:00Z"),
        bp(150, 92, "2024-05-01T09:05:00Z"),  # re-measured: the crisis is settled
        obs("8462-4", 82, "mm[Hg]", "2024-05-01T09:10:00Z"),
    )
    assert settled == {"dbp_mmhg": 82}


def test_a_crisis_more_than_an_hour_before_a_partial_reading_is_not_used() -> None:
    assert observations(
        bp(196, 118, "2024-05-01T07:59:00Z"), obs("8462-4", 82, "mm[Hg]", "2024-05-01T09:00:00Z")
    ) == {"dbp_mmhg": 82}
    within = observations(
        bp(196, 118, "2024-05-01T08:00:00Z"), obs("8462-4", 82, "mm[Hg]", "2024-05-01T09:00:00Z")
    )
    assert within == {"sbp_mmhg": 196, "dbp_mmhg": 118}


def test_the_latest_of_several_crises_within_the_hour_is_used() -> None:
    summary = observations(
        bp(210, 125, "2024-05-01T08:30:00Z"),
        obs("8480-6", 184, "mm[Hg]", "2024-05-01T08:50:00Z"),  # a crisis, alone
        obs("8462-4", 80, "mm[Hg]", "2024-05-01T09:00:00Z"),
    )
    assert summary == {"sbp_mmhg": 184}


NOW = dt.datetime(2026, 3, 15, 9, 0, tzinfo=dt.UTC)


def hook_cards(
    client: TestClient, service: str, prefetch: dict[str, Any], lang: str = "en"
) -> list[dict[str, Any]]:
    name = "patient-view" if service == "medgate-primary-care" else "order-select"
    body = hook(prefetch, hook=name)
    if name == "order-select":
        body["context"].update(selections=["MedicationRequest/m1"], draftOrders=searchset([]))
    response = client.post(f"/cds-services/{service}", json=body, headers={"Accept-Language": lang})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["cards"]
    return found


@pytest.mark.parametrize("service", ["medgate-primary-care", "medgate-order-safety"])
def test_a_bp_crisis_from_2021_is_not_a_transfer_now_card_in_2026(
    client: TestClient, service: str
) -> None:
    """Audit: 186/112 measured in 2021 gave an urgent "transfer now" card on both hooks."""
    prefetch = {"patient": PATIENT, "observations": searchset([bp(186, 112, "2021-03-01")])}
    for lang, line in [
        ("en", "older than 7 days, not used: `sbp_mmhg` (2021-03-01), `dbp_mmhg` (2021-03-01)"),
        ("zh", "超过7天，未使用：`sbp_mmhg`（2021-03-01）、`dbp_mmhg`（2021-03-01）"),
    ]:
        found = hook_cards(client, service, prefetch, lang)
        assert all(c["indicator"] == "info" for c in found), found
        assert not any(c.get("suggestions") for c in found)
        assert line in found[-1]["detail"]
        assert found[-1]["summary"] == (
            "部分数据无法使用" if lang == "zh" else "Data could not all be used"
        )


def test_an_old_respiratory_rate_beside_todays_vitals_is_not_used(client: TestClient) -> None:
    """Audit: RR 30 from 2022 beside today's normal vitals: "a single NEWS2 parameter scores 3"."""
    prefetch = {
        "patient": PATIENT,
        "observations": searchset(
            [
                bp(128, 78),
                obs("8867-4", 76, "/min"),
                obs("59408-5", 97, "%"),
                obs("8310-5", 36.8, "Cel"),
                obs("9279-1", 30, "/min", "2022-06-01T09:00:00Z"),
            ]
        ),
    }
    found = hook_cards(client, "medgate-primary-care", prefetch)
    assert not any("NEWS2 parameter scores 3" in c["summary"] for c in found)
    assert all(c["indicator"] != "critical" for c in found)
    assert "`respiratory_rate` (2022-06-01)" in found[-1]["detail"]


@pytest.mark.parametrize(
    ("code", "value", "unit", "field", "days", "used"),
    [
        ("8480-6", 150, "mm[Hg]", "sbp_mmhg", 6.9, True),
        ("8480-6", 150, "mm[Hg]", "sbp_mmhg", 7.1, False),
        ("8867-4", 80, "/min", "heart_rate", 7.1, False),
        ("9279-1", 18, "/min", "respiratory_rate", 7.1, False),
        ("59408-5", 97, "%", "spo2", 7.1, False),
        ("8310-5", 36.8, "Cel", "temperature_c", 7.1, False),
        ("1558-6", 7.0, "mmol/L", "fasting_glucose_mmol_l", 6.9, True),
        ("2345-7", 7.0, "mmol/L", "random_glucose_mmol_l", 7.1, False),
        ("4548-4", 7.2, "%", "hba1c_percent", 364, True),
        ("4548-4", 7.2, "%", "hba1c_percent", 366, False),
        ("2093-3", 5.2, "mmol/L", "total_cholesterol_mmol_l", 366, False),
        ("2085-9", 1.2, "mmol/L", "hdl_cholesterol_mmol_l", 366, False),
        ("22748-8", 3.0, "mmol/L", "ldl_cholesterol_mmol_l", 364, True),
        ("8280-0", 92, "cm", "waist_cm", 366, False),
        ("39156-5", 27.0, "kg/m2", "bmi", 364, True),
    ],
)
def test_values_older_than_their_window_are_not_used(
    code: str, value: float, unit: str, field: str, days: float, used: bool
) -> None:
    when = (NOW - dt.timedelta(days=days)).isoformat().replace("+00:00", "Z")
    prefetch = {"observations": searchset([obs(code, value, unit, when)])}
    summary, sources = read_prefetch(prefetch, now=NOW)
    assert (field in summary) is used
    assert sources[0]["input"] == field and sources[0]["used"] is used
    assert field in summary_from_prefetch(prefetch)  # no ``now``: no limit
    if not used:
        assert sources[0]["unused"] == "stale" and sources[0]["value"] == pytest.approx(value)


def test_smoking_status_is_used_whatever_its_age() -> None:
    prefetch = {"observations": searchset([smoking_status("449868002", "2012-01-01")])}
    assert summary_from_prefetch(prefetch, now=NOW)["current_smoker"] is True


def test_the_latest_value_within_its_window_is_used_and_a_date_counts_to_its_end() -> None:
    summary, sources = read_prefetch(
        {
            "observations": searchset(
                [
                    obs("8867-4", 120, "/min", "2026-03-08"),  # to 2026-03-09T00:00Z: 7d 9h ago
                    obs("8867-4", 90, "/min", "2026-03-09"),  # the whole day is within 7 days
                ]
            )
        },
        now=NOW,
    )
    assert summary["heart_rate"] == 90
    assert [s["effective"] for s in sources] == ["2026-03-09"]
    older = read_prefetch({"observations": searchset([obs("8867-4", 120, "/min", "2026-03-08")])})
    assert older[0] == {"heart_rate": 120}


def test_an_undated_value_is_not_used_when_the_time_is_known() -> None:
    undated = obs("8867-4", 130, "/min")
    del undated["effectiveDateTime"]
    summary, sources = read_prefetch({"observations": searchset([undated])}, now=NOW)
    assert "heart_rate" not in summary and sources[0]["unused"] == "undated"
    assert cds_fhir.not_used(sources, "en") == ["no time measured, not used: `heart_rate`"]
    assert cds_fhir.not_used(sources, "zh") == ["无测量时间，未使用：`heart_rate`"]


def test_a_value_too_old_is_in_the_provenance_as_not_used() -> None:
    prefetch = {
        "observations": searchset(
            [{**bp(186, 112, "2021-03-01T09:00:00Z"), "id": "bp-2021"}, obs("8867-4", 80, "/min")]
        )
    }
    summary, sources = read_prefetch(prefetch, now=dt.datetime.now(dt.UTC))
    inputs = {i["input"]: i for i in cds_trace.provenance(sources, summary, [])}
    assert inputs["sbp_mmhg"]["used"] is False and inputs["sbp_mmhg"]["value"] == 186
    assert inputs["sbp_mmhg"]["source"] == "Observation/bp-2021"
    assert inputs["dbp_mmhg"]["effective"] == "2021-03-01T09:00:00Z"
    assert inputs["heart_rate"]["used"] is True and inputs["heart_rate"]["value"] == 80
    assert cds_fhir.MAX_AGE.keys() == {
        cds_fhir.CODES[code] for code in cds_fhir.CODES if code != "72166-2"
    }  # every value but smoking has a window


def test_a_date_never_beats_a_timed_value_of_the_same_day() -> None:
    """Audit: "2026-12-05" was read as 00:00Z, later than 07:30 that morning in Beijing."""
    morning = obs("8867-4", 132, "/min", "2026-12-05T07:30:00+08:00")  # 2026-12-04T23:30Z
    day = obs("8867-4", 70, "/min", "2026-12-05")
    assert observations(day, morning)["heart_rate"] == 132
    assert observations(morning, day)["heart_rate"] == 132
    assert observations(day, obs("8867-4", 132, "/min", "2026-12-05T00:00:00Z")) == {
        "heart_rate": 132
    }
    # still at the start of its day: after the day before, before the day after
    assert observations(day, obs("8867-4", 132, "/min", "2026-12-04T20:00:00+08:00")) == {
        "heart_rate": 70
    }
    assert observations(day, obs("8867-4", 132, "/min", "2026-12-06T01:00:00+08:00")) == {
        "heart_rate": 132
    }
    panel = observations(bp(118, 76, "2026-12-05"), bp(182, 96, "2026-12-05T06:00:00+08:00"))
    assert (panel["sbp_mmhg"], panel["dbp_mmhg"]) == (182, 96)


def test_one_invalid_observation_does_not_hide_the_crisis(client: TestClient) -> None:
    """Audit: one naive dateTime (invalid in FHIR) made the whole hook a 400, hiding a crisis."""
    naive = {**obs("8867-4", 80, "/min"), "id": "abc", "effectiveDateTime": "2026-12-05T09:00:00"}
    prefetch = {
        "patient": PATIENT,
        "observations": searchset([naive, bp(196, 118)]),
        "conditions": searchset([{**fhir_condition("I10"), "onsetDateTime": "2020-01-01T08:00"}]),
    }
    summary, sources = read_prefetch(prefetch)
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (196, 118)
    assert "heart_rate" not in summary and "conditions" not in summary
    invalid = [s for s in sources if s.get("unused") == "invalid"]
    assert [s["source"] for s in invalid] == ["Observation/abc", "Condition/c-I10-active-None"]
    assert all(s["used"] is False for s in invalid)
    found = cards(client, prefetch)
    assert found[0]["indicator"] == "critical" and "196/118" in found[0]["summary"]
    assert (
        "Observation/abc is not valid FHIR R4: effectiveDateTime: Value error, DateTime value "
        "string does not match spec regex." in found[-1]["detail"]
    )
    assert "Condition/c-I10-active-None is not valid FHIR R4: onsetDateTime" in found[-1]["detail"]
    zh = client.post("/cds-services/medgate-primary-care", json=hook(prefetch)).json()["cards"]
    assert "`Observation/abc`不是有效的FHIR R4资源，未使用：effectiveDateTime" in zh[-1]["detail"]


def test_an_invalid_patient_is_left_out_and_said() -> None:
    patient = {**PATIENT, "birthDate": "1 March 1966"}
    summary, sources = read_prefetch({"patient": patient, "observations": searchset([bp(120, 80)])})
    assert summary == {"sbp_mmhg": 120, "dbp_mmhg": 80}
    assert sources[0]["source"] == "Patient/p1" and sources[0]["unused"] == "invalid"


@pytest.mark.parametrize(
    "observations_",
    [
        [1, 2],
        "Observation?patient=p1",
        {"resourceType": "Bundle", "type": "searchset", "entry": "none"},
        {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": "x"}]},
        {"resourceType": "Bundle", "entry": []},  # a Bundle needs its type
    ],
)
def test_a_prefetch_that_is_not_a_resource_or_bundle_is_a_400(
    client: TestClient, observations_: Any
) -> None:
    response = client.post(
        "/cds-services/medgate-primary-care",
        json=hook({"patient": PATIENT, "observations": observations_}),
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("prefetch is not valid FHIR R4")


def test_a_shock_reading_is_not_hidden_by_a_later_diastolic_alone(client: TestClient) -> None:
    """Audit: a panel 60/40 20 minutes ago, then a diastolic 35 alone: the shock disappeared.
    A low systolic (<= 90, NEWS2's 3 points) is kept like a high one."""
    observations_ = [bp(60, 40, ago(minutes=20)), obs("8462-4", 35, "mm[Hg]", ago(minutes=5))]
    summary = summary_from_prefetch({"observations": searchset(observations_)})
    assert (summary["sbp_mmhg"], summary["dbp_mmhg"]) == (60, 40)
    found = cards(client, {"patient": PATIENT, "observations": searchset(observations_)})
    assert found[0]["indicator"] == "critical"


@pytest.mark.parametrize(
    ("recorded", "birth", "pregnant"),
    [
        ("2019-03-01", "1965-01-01", None),  # an obstetric Condition left open for years
        (None, "1965-01-01", None),  # undated, but the patient is 61
        ("recent", "1994-01-01", True),
        (None, "1994-01-01", True),  # undated, the patient is 32: it counts
    ],
)
def test_only_a_current_pregnancy_counts(
    recorded: str | None, birth: str, pregnant: bool | None
) -> None:
    condition = fhir_condition("O24.4")
    if recorded is not None:
        when = ago(days=30)[:10] if recorded == "recent" else recorded
        condition["recordedDate"] = when
    prefetch = {
        "patient": {**PATIENT, "gender": "female", "birthDate": birth},
        "conditions": searchset([condition]),
    }
    summary, sources = read_prefetch(prefetch, now=dt.datetime.now(dt.UTC))
    assert summary.get("pregnant_or_lactating") is pregnant
    used = next(s["used"] for s in sources if s["input"] == "condition")
    assert used is bool(pregnant)


@pytest.mark.parametrize(
    ("code", "fields"),
    [
        ("N18.3", {"ckd": True, "ckd_stage_3_4": True}),  # ICD-10: CKD stage 3
        ("N18.4", {"ckd": True, "ckd_stage_3_4": True}),  # ICD-10: CKD stage 4
        ("N18.9", {"ckd": True}),  # ICD-10: CKD, unspecified
        ("I69.3", {"ascvd": True}),  # ICD-10: sequelae of cerebral infarction
    ],
)
def test_ckd_and_stroke_sequelae_conditions(code: str, fields: dict[str, bool]) -> None:
    summary = summary_from_prefetch({"conditions": searchset([fhir_condition(code)])})
    assert {k: summary[k] for k in ("ckd", "ckd_stage_3_4", "ascvd") if k in summary} == fields


def test_ckd_stage_3_sets_the_targets_on_cds_hooks(client: TestClient) -> None:
    """Audit: I10 + N18.3 with BP 136/84 read 'controlled (< 140/90), 90 days'."""
    prefetch = {
        "patient": {**PATIENT, "gender": "female", "birthDate": "1965-01-01"},
        "observations": searchset([bp(136, 84)]),
        "conditions": searchset([fhir_condition("I10"), fhir_condition("N18.3")]),
    }
    follow_up = next(c for c in cards(client, prefetch) if c["summary"].startswith("Follow-up"))
    assert "not controlled (office BP < 130/80 mmHg" in follow_up["detail"]
    assert follow_up["summary"] == "Follow-up: next visit within 14 days"


# An earlier hypoglycaemia in the record (the follow-up's "not hidden by a later normal value")


def _diabetic_with_glucose(*glucose: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient": PATIENT,
        "observations": searchset(list(glucose)),
        "conditions": searchset([fhir_condition("E11")]),
    }


def test_an_earlier_lab_hypoglycaemia_is_not_hidden_by_a_later_normal_value(
    client: TestClient,
) -> None:
    """DM 2022: hypoglycaemia means reviewing the treatment. A record with glucose 2.8 two days
    ago and 6.1 this morning was read as 6.1 alone: 'controlled, next visit in 90 days'."""
    prefetch = _diabetic_with_glucose(
        {**obs("14749-6", 2.8, "mmol/L", ago(days=2)), "id": "glu-low"},
        {**obs("14749-6", 6.1, "mmol/L", ago(hours=2)), "id": "glu-now"},
    )
    summary, sources = read_prefetch(prefetch, now=dt.datetime.now(dt.UTC))
    assert summary["random_glucose_mmol_l"] == pytest.approx(6.1)
    (earlier,) = summary["earlier_glucose"]
    assert earlier["glucose_mmol_l"] == pytest.approx(2.8) and earlier["fasting"] is False
    inputs = cds_trace.provenance(sources, summary, [])
    (low,) = [i for i in inputs if i["input"] == "earlier_glucose"]
    assert (low["source"], low["value"], low["used"]) == ("Observation/glu-low", 2.8, True)
    follow_up = assess(AssessRequest(**summary), None, "en").follow_up
    assert follow_up is not None and follow_up.next_follow_up_days == 14
    assert follow_up.status[0].controlled is False
    assert (follow_up.status[0].reason or "").startswith("hypoglycaemia: glucose 2.8 mmol/L")
    text = str(cards(client, prefetch))
    assert "hypoglycaemia: glucose 2.8 mmol/L" in text


@pytest.mark.parametrize(
    ("earlier", "why"),
    [
        (obs("1558-6", 72, "mg/dL", ago(days=8)), "older than the 7-day window"),
        (obs("1558-6", 90, "mg/dL", ago(days=2)), "not low (5.0 mmol/L)"),
    ],
)
def test_an_earlier_glucose_is_sent_only_when_low_and_recent(
    earlier: dict[str, Any], why: str
) -> None:
    prefetch = _diabetic_with_glucose(earlier, obs("1558-6", 110, "mg/dL", ago(hours=2)))
    summary, _ = read_prefetch(prefetch, now=dt.datetime.now(dt.UTC))
    assert summary["fasting_glucose_mmol_l"] == pytest.approx(6.1, abs=0.05)
    assert "earlier_glucose" not in summary, why


def test_without_a_request_time_the_window_counts_from_the_value_used() -> None:
    prefetch = _diabetic_with_glucose(
        obs("1558-6", 60, "mg/dL", "2026-01-01T08:00:00Z"),  # 3.3 mmol/L, 10 days before
        obs("1558-6", 65, "mg/dL", "2026-01-09T08:00:00Z"),  # 3.6 mmol/L, 2 days before
        obs("1558-6", 110, "mg/dL", "2026-01-11T08:00:00Z"),
    )
    earlier = summary_from_prefetch(prefetch)["earlier_glucose"]
    assert [round(r["glucose_mmol_l"], 1) for r in earlier] == [3.6]
