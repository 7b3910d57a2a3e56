"""Referrals on the FHIR endpoints: ``/fhir/ServiceRequest`` and ``/fhir/Task`` from real rows.

Search by ``patient`` / ``subject`` (``Patient/<id>`` as on the AI results), ``subject:identifier``
(``system|value``) and ``status`` (the resource's own status); read by id. A site-scoped token
finds only its site's referrals and reads another site's as ``ReferralHidden`` (403).

``PUT /fhir/Task/{id}`` is how a hospital's system moves a referral on in FHIR terms: the Task's
``status`` (accepted, rejected, completed, cancelled), ``statusReason.text`` (the reason),
``output[].valueString`` (the follow-up plan) and ``owner.display`` (the receiving department)
are taken; the rest of the Task is medgate's and not changed. The same state machine and access
rules as ``PATCH /api/v1/referrals/{id}`` apply; errors come back as an OperationOutcome.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.task import Task
from pydantic import ValidationError

from medgate.api.routes_referrals import (
    ReferralPatch,
    change_referral,
    referral_store,
    token_site,
    visible,
)
from medgate.delivery.referral_fhir import fhir_patient_id, service_request, subject, task
from medgate.store.referrals import Referral


class ReferralHidden(Exception):
    """The referral belongs to another site than the token's."""


def _resource(kind: str, referral: Referral) -> Resource:
    return service_request(referral) if kind == "ServiceRequest" else task(referral)


def _matches(kind: str, referral: Referral, resource: Resource, request: Request) -> bool:
    params = request.query_params
    for name in ("patient", "subject"):
        for value in params.getlist(name):
            wanted = value.split("/", 1)[1] if value.startswith("Patient/") else value
            if wanted != fhir_patient_id(referral):
                return False
    for value in params.getlist("subject:identifier"):
        system, bar, code = value.rpartition("|")
        identifier = subject(referral)["identifier"]
        if code != identifier["value"] or (bar and system and system != identifier["system"]):
            return False
    for value in params.getlist("status"):
        if str(getattr(resource, "status", "")) not in {s.strip() for s in value.split(",")}:
            return False
    return True


def search_referrals(kind: str, request: Request) -> list[Resource]:
    """ServiceRequests or Tasks of the referrals this token may see that match the search."""
    found: list[Resource] = []
    for referral in referral_store(request).find(site=token_site(request)):
        resource = _resource(kind, referral)
        if _matches(kind, referral, resource, request):
            found.append(resource)
    return found


def read_referral(kind: str, resource_id: str, request: Request) -> Resource | None:
    """One ServiceRequest or Task by id; None when there is none."""
    referral = referral_store(request).get(resource_id)
    if referral is None:
        return None
    if not visible(request, referral):
        raise ReferralHidden(resource_id)
    return _resource(kind, referral)


class FhirError(Exception):
    """A FHIR request that is refused: HTTP status, FHIR issue code and a message, sent back
    as an OperationOutcome (``routes_fhir``)."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text


FHIR_CODES = {403: "forbidden", 404: "not-found", 409: "conflict", 422: "invariant"}


def update_task(resource_id: str, body: Any, request: Request) -> Resource:
    """Apply a PUT Task: its status (with reason / plan) moves the referral; returns the Task."""
    if not isinstance(body, dict) or body.get("resourceType") != "Task":
        raise FhirError(400, "invalid", "the body must be a FHIR Task")
    if body.get("id") not in (None, resource_id):
        raise FhirError(400, "invalid", "the Task's id does not match the URL")
    try:
        sent = Task.model_validate(body)
    except ValidationError as exc:
        raise FhirError(400, "invalid", f"not a valid Task: {exc.errors()[0]['msg']}") from exc
    plan = next((o.valueString for o in sent.output or [] if o.valueString), None)
    change = {
        "status": sent.status,
        "reason": sent.statusReason.text if sent.statusReason else None,
        "follow_up_plan": plan,
        "performer": sent.owner.display if sent.owner and sent.owner.display else None,
    }
    try:
        patch = ReferralPatch.model_validate(change)
    except ValidationError as exc:
        raise FhirError(
            422, "invariant", "Task.status must be accepted, rejected, completed or cancelled"
        ) from exc
    try:
        referral = change_referral(request, resource_id, patch)
    except HTTPException as exc:
        code = FHIR_CODES.get(exc.status_code, "processing")
        raise FhirError(exc.status_code, code, str(exc.detail)) from exc
    return task(referral)
