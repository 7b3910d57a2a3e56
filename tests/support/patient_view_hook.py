"""A CDS Hooks patient-view request with a FHIR prefetch: two blood pressures (the latest a
crisis), a heart rate and an active hypertension Condition, for the traced-answer tests."""

from __future__ import annotations

from typing import Any

PATIENT_ID = "PAT-98765-ZH"


def observation(oid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": unit, "code": unit},
    }


def blood_pressure(oid: str, sbp: int, dbp: int, when: str) -> dict[str, Any]:
    component = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mm[Hg]", "code": "mm[Hg]"},
        }
        for code, value in (("8480-6", sbp), ("8462-4", dbp))
    ]
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": component,
    }


def hook(hook_instance: str) -> dict[str, Any]:
    entries = [
        blood_pressure("bp-old", 150, 95, "2026-11-01T09:00:00Z"),
        blood_pressure("bp-new", 186, 114, "2026-12-05T08:30:00Z"),  # a crisis: urgent referral
        observation("hr-1", "8867-4", 84, "/min", "2026-12-05T08:31:00Z"),
    ]
    return {
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "context": {"patientId": PATIENT_ID, "userId": "Practitioner/dr-li"},
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": PATIENT_ID,
                "gender": "male",
                "birthDate": "1961-02-03",
            },
            "observations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in entries],
            },
            "conditions": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "Condition",
                            "id": "htn-1",
                            "clinicalStatus": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/"
                                        "condition-clinical",
                                        "code": "active",
                                    }
                                ]
                            },
                            "subject": {"reference": f"Patient/{PATIENT_ID}"},
                            "code": {
                                "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]
                            },
                            "recordedDate": "2019-06-01",
                        }
                    }
                ],
            },
        },
    }
