"""A referral as FHIR R4: a ServiceRequest (what is asked and why) and a Task (where it stands).

The pair follows the FHIR workflow pattern for a request that another organisation fulfils: the
ServiceRequest carries the reason, the urgency (``priority``) and the evidence (findings, scores,
the imaging study); the Task ``focus``-es it and moves ``requested → accepted → completed`` or
``rejected``; a completed Task's ``output`` holds the hospital's follow-up plan for the clinic
(下转). Both share the referral's id. Built with fhir.resources' R4B models (every element used
exists unchanged in R4 4.0.1), the same models as the AI results in ``fhir_resources``.

The patient is referenced the way the DiagnosticReports reference them (``fhir_resources.
patient_id``), so a client that searches by patient finds results and referrals together.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from medgate.delivery.fhir_resources import (
    SYSTEMS,
    patient_id,
    patient_identifier_system,
)
from medgate.delivery.study_header import StudyHeader
from medgate.store.referrals import Referral

REFERRAL_CODE = {"system": SYSTEMS["SCT"], "code": "3457005", "display": "Patient referral"}
FOLLOW_UP_PLAN = {"text": "follow-up plan for the referring site"}
IDENTIFIER_SYSTEM = "urn:medgate:referral"

#: referral status -> ServiceRequest.status (the request is live until the Task closes it)
REQUEST_STATUS = {
    "requested": "active",
    "accepted": "active",
    "completed": "completed",
    "rejected": "revoked",
    "cancelled": "revoked",
}


def subject(referral: Referral) -> dict[str, Any]:
    """``Patient/<hash>`` plus the site's patient identifier, as on the AI results."""
    header = StudyHeader(patient_id=referral.patient_id)
    return {
        "reference": f"Patient/{patient_id(header, referral.site)}",
        "identifier": {
            "system": patient_identifier_system(header, referral.site),
            "value": referral.patient_id,
        },
    }


def fhir_patient_id(referral: Referral) -> str:
    return patient_id(StudyHeader(patient_id=referral.patient_id), referral.site)


def _organization(name: str | None, fallback: str) -> dict[str, Any]:
    return {"display": name or fallback}


def service_request(referral: Referral) -> ServiceRequest:
    """The referral's request: reason, urgency, evidence as supporting information."""
    supporting: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for item in referral.evidence:
        text = f"{item.kind}: {item.display}" + (f" = {item.value}" if item.value else "")
        if item.kind == "study" and item.reference:
            supporting.append({"reference": f"DiagnosticReport/{item.reference}", "display": text})
        elif item.kind == "observation" and item.reference:
            supporting.append({"reference": item.reference, "display": text})
        else:
            notes.append({"text": text})
    if referral.study_instance_uid and not any(
        s["reference"].endswith(referral.study_instance_uid) for s in supporting
    ):
        supporting.append(
            {
                "reference": f"DiagnosticReport/{referral.study_instance_uid}",
                "display": "imaging result",
            }
        )
    data: dict[str, Any] = {
        "id": referral.id,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": referral.id}],
        "status": REQUEST_STATUS[referral.status],
        "intent": "order",
        "priority": referral.urgency,
        "category": [{"coding": [REFERRAL_CODE]}],
        "code": {"coding": [REFERRAL_CODE], "text": "Referral to a higher-level hospital"},
        "subject": subject(referral),
        "authoredOn": referral.created_at.isoformat(),
        "requester": _organization(referral.site, "referring site"),
        "reasonCode": [{"text": referral.reason}],
        "supportingInfo": supporting or None,
        "note": notes or None,
    }
    if referral.performer:
        data["performer"] = [{"display": referral.performer}]
    return ServiceRequest.model_validate(data)


def task(referral: Referral) -> Task:
    """Where the referral stands, with the rejection reason or the follow-up plan."""
    data: dict[str, Any] = {
        "id": referral.id,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": referral.id}],
        "basedOn": [{"reference": f"ServiceRequest/{referral.id}"}],
        "focus": {"reference": f"ServiceRequest/{referral.id}"},
        "status": referral.status,
        "intent": "order",
        "priority": referral.urgency,
        "code": {"coding": [REFERRAL_CODE]},
        "for": subject(referral),
        "authoredOn": referral.created_at.isoformat(),
        "lastModified": referral.updated_at.isoformat(),
        "requester": _organization(referral.site, "referring site"),
        "owner": _organization(referral.performer, "receiving hospital"),
    }
    if referral.status_reason:
        data["statusReason"] = {"text": referral.status_reason}
    if referral.follow_up_plan:
        data["output"] = [{"type": FOLLOW_UP_PLAN, "valueString": referral.follow_up_plan}]
    return Task.model_validate(data)
