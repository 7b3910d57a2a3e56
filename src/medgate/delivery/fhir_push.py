"""Push one transaction Bundle to a site's FHIR server and classify its answer.

``POST [base]`` with ``application/fhir+json`` (FHIR RESTful API, "transaction"). The answers
mean what the HL7 ACKs mean to the delivery loop: 2xx accepted; 4xx (other than 408 and 429) the
server refused this Bundle, retried a bounded number of times then dead-lettered; everything else
(no connection, time-out, 408, 429, 5xx) says nothing about the Bundle and is retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

FHIR_JSON = "application/fhir+json"
TRANSIENT = {408, 429}


class FhirPushError(Exception):
    """No usable answer from the FHIR server; the Bundle itself may be fine."""


@dataclass(frozen=True)
class PushAnswer:
    status: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def push_bundle(base_url: str, payload: str, *, token: str | None, timeout: float) -> PushAnswer:
    """POST ``payload`` (a transaction Bundle as JSON) to ``base_url``; raises FhirPushError
    when the server cannot be reached or answers with a transient failure."""
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(
            base_url.rstrip("/"), content=payload.encode("utf-8"), headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise FhirPushError(f"the FHIR server cannot be reached: {type(exc).__name__}") from exc
    if response.status_code in TRANSIENT or response.status_code >= 500:
        raise FhirPushError(f"the FHIR server answered {response.status_code}")
    return PushAnswer(response.status_code, _diagnostics(response))


def _diagnostics(response: httpx.Response) -> str:
    """The first OperationOutcome diagnostics of a refusal (short), or the reason phrase."""
    if response.is_success:
        return ""
    try:
        issues = response.json().get("issue", [])
        text = str(issues[0].get("diagnostics") or issues[0].get("code") or "")
    except (ValueError, AttributeError, IndexError, KeyError):
        text = ""
    return (text or response.reason_phrase)[:300]
