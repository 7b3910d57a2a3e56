"""Referrals on the FHIR endpoints: ``/fhir/ServiceRequest`` and ``/fhir/Task`` from real rows.

Search by ``patient`` / ``subject`` (``Patient/<id>`` as on the AI results), ``subject:identifier``
(``system|value``) and ``status`` (the resource's own status); read by id. A site-scoped token
finds only its site's referrals and reads another site's as ``ReferralHidden`` (403).
"""

from __future__ import annotations

from fastapi import Request
from fhir.resources.R4B.resource import Resource

from medgate.api.routes_referrals import referral_store, token_site, visible
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
