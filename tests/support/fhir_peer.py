"""A site's FHIR server for the tests: takes transaction Bundles, validates every resource with
fhir.resources (R4B), applies the PUTs, and serves the stored resources back for reads.

``mode``: ``ok``; ``reject`` (422 with an OperationOutcome); ``down`` (503). Requests without the
expected bearer token get 401.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B import get_fhir_model_class

FHIR_JSON = "application/fhir+json"


@dataclass
class PeerState:
    token: str
    mode: str = "ok"
    posts: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def fhir_peer(state: PeerState) -> FastAPI:
    app = FastAPI()

    def outcome(status: int, code: str, text: str) -> JSONResponse:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        }
        return JSONResponse(body, status_code=status, media_type=FHIR_JSON)

    @app.post("/fhir")
    async def transaction(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {state.token}":
            return outcome(401, "security", "bearer token required")
        if request.headers.get("content-type", "").split(";")[0] != FHIR_JSON:
            return outcome(415, "not-supported", "send application/fhir+json")
        body = await request.json()
        state.posts.append(body)
        if state.mode == "down":
            return outcome(503, "transient", "maintenance")
        if state.mode == "reject":
            return outcome(422, "business-rule", "patient unknown to this EHR")
        get_fhir_model_class("Bundle").model_validate(body)
        if body.get("type") != "transaction":
            return outcome(400, "invalid", "a transaction Bundle is expected")
        responses = []
        for entry in body["entry"]:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            method, url = entry["request"]["method"], entry["request"]["url"]
            kind, _, rid = url.partition("/")
            assert method == "PUT" and kind == resource["resourceType"] and rid == resource["id"]
            created = (kind, rid) not in state.stored
            state.stored[(kind, rid)] = resource
            responses.append({"response": {"status": "201 Created" if created else "200 OK"}})
        reply = {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}
        return JSONResponse(reply, media_type=FHIR_JSON)

    @app.get("/fhir/metadata")
    def metadata() -> JSONResponse:
        body = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-06",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
        }
        return JSONResponse(body, media_type=FHIR_JSON)

    @app.get("/fhir/{kind}/{rid}")
    def read(kind: str, rid: str) -> JSONResponse:
        resource = state.stored.get((kind, rid))
        if resource is None:
            return outcome(404, "not-found", f"{kind}/{rid}")
        return JSONResponse(resource, media_type=FHIR_JSON)

    return app
