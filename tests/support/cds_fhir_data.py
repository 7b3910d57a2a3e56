"""FHIR R4 resources and CDS Hooks request bodies for the decision-support tests.

A hook is answered with the values recent enough to use (``cds_fhir.MAX_AGE``): the resources
here are measured an hour ago unless a test says when (``ago``, or a fixed date for a value
that is meant to be old, or for a unit test of ``read_prefetch`` without ``now``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1966-03-01"}


def ago(**delta: float) -> str:
    """A FHIR dateTime this long before now, in UTC to the second: ``ago(hours=1)``."""
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(**delta)
    return at.isoformat().replace("+00:00", "Z")


def obs(
    code: str, value: float | None, unit: str, when: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An Observation; ``when`` defaults to an hour before now (computed at each call)."""
    when = when or ago(hours=1)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o-{code}-{when[:10]}",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    resource.update(extra)
    return resource


def bp(sbp: int, dbp: int, when: str | None = None) -> dict[str, Any]:
    """A BP panel (85354-9); ``when`` defaults to an hour before now."""
    return obs(
        "85354-9",
        None,
        "",
        when,
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": sbp, "unit": "mm[Hg]", "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": dbp, "unit": "mm[Hg]", "code": "mm[Hg]"},
            },
        ],
    )


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


OBSERVATIONS = searchset(
    [
        bp(150, 95, ago(days=30)),
        bp(184, 112),  # latest (an hour ago): a crisis
        obs("2093-3", 212, "mg/dL"),
        obs("2085-9", 1.3, "mmol/L"),
        obs("8867-4", 88, "/min"),
        obs("9279-1", 18, "/min"),
        obs("59408-5", 97, "%"),
        obs("8310-5", 36.8, "Cel"),
        obs("8280-0", 92, "cm"),
        obs("1558-6", 8.4, "mmol/L"),
        obs(
            "72166-2",
            None,
            "",
            valueCodeableConcept={
                "coding": [{"system": "http://snomed.info/sct", "code": "449868002"}]
            },
        ),
    ]
)
CONDITIONS = searchset(
    [
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        },
        {
            "resourceType": "Condition",
            "id": "c2",
            "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
        },
    ]
)


def hook(prefetch: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/doc", "patientId": "p1"},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def fhir_condition(
    code: str,
    system: str = "http://hl7.org/fhir/sid/icd-10",
    clinical_status: str | None = "active",
    verification_status: str | None = None,
) -> dict[str, Any]:
    """An R4 Condition; ``clinical_status=None`` leaves clinicalStatus out (allowed in R4)."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c-{code}-{clinical_status}-{verification_status}",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if clinical_status is not None:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical_status,
                }
            ]
        }
    if verification_status is not None:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification_status,
                }
            ]
        }
    return resource


def smoking_status(snomed: str, when: str | None = None) -> dict[str, Any]:
    """A smoking-status Observation (LOINC 72166-2) valued with a SNOMED CT code."""
    return obs(
        "72166-2",
        None,
        "",
        when,
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": snomed}]},
    )
