"""FHIR R4 endpoints (``/fhir``): the AI results as DiagnosticReport, Observation, RiskAssessment.

Read and search only, JSON only (``application/fhir+json``), behind a bearer token with the
``fhir`` scope. A site-scoped token (``[[sites]].tokens``) finds only its own site's resources
and gets 403 on another site's. Errors come back as an OperationOutcome with a 4xx status.
ServiceRequest and Task are the tracked referrals (``api.fhir_referrals``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydicom.errors import InvalidDicomError

from medgate import __version__
from medgate.api.fhir_referrals import (
    FhirError,
    ReferralHidden,
    read_referral,
    search_referrals,
    update_task,
)
from medgate.api.security import require_scope
from medgate.core.config import SiteConfig
from medgate.delivery.fhir_resources import (
    StudyResources,
    capability_statement,
    observation_prefix,
    operation_outcome,
    patient_id,
    patient_identifier_system,
    risk_id,
    searchset,
)
from medgate.delivery.sites import site_for_aes, visible_to
from medgate.delivery.study_header import StudyHeader, read_study_header
from medgate.store.deliveries import DeliveryStore

FHIR_JSON = "application/fhir+json"
IGNORED_PARAMS = {"_format", "_pretty"}
PAGING_PARAMS = {"_count", "_offset"}
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SEARCHES: dict[str, set[str]] = {
    "DiagnosticReport": {"patient", "subject", "subject:identifier", "status", "date"},
    "Observation": {"patient", "subject", "subject:identifier", "status", "date"},
    "RiskAssessment": {"patient", "subject", "subject:identifier"},
    "ServiceRequest": {"patient", "subject", "subject:identifier", "status"},
    "Task": {"patient", "subject", "subject:identifier", "status"},
}

router = APIRouter(prefix="/fhir", tags=["fhir"])
guarded = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(require_scope("fhir"))])


def _json(resource: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(resource.model_dump(mode="json"), status_code=status, media_type=FHIR_JSON)


def _error(exc: FhirError) -> JSONResponse:
    severity = "error" if exc.status < 500 else "fatal"
    return _json(operation_outcome(severity, exc.code, exc.text), exc.status)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _token_site(request: Request) -> str | None:
    return getattr(request.state, "token_site", None)


@dataclass
class StudyEntry:
    """One study with a built result, as a search sees it: header and resources are made only
    for the studies that pass the cheaper checks (site, id, status) first."""

    uid: str
    row: dict[str, Any]
    report: dict[str, Any] | None
    site: SiteConfig | None
    visible: bool
    path: str | None
    languages: list[str]

    @property
    def status(self) -> str:
        return str(self.report["status"]) if self.report else "preliminary"

    @cached_property
    def header(self) -> StudyHeader | None:
        if self.path is None:
            return None
        try:
            return read_study_header(self.path)
        except (OSError, InvalidDicomError):
            return None

    @cached_property
    def resources(self) -> StudyResources:
        if self.header is None:
            raise ValueError(f"study {self.uid} has no readable header")
        report = self.report or {}
        return StudyResources(
            study_uid=self.uid,
            result=report.get("final_result") or self.row["result"],
            header=self.header,
            status=self.status,
            issued=report.get("final_at") or report.get("issued_at") or self.row["updated_at"],
            site=self.site.name if self.site else None,
            languages=self.languages,
        )


def _studies(request: Request, only_uid: str | None = None) -> list[StudyEntry]:
    """Every study with a built result, oldest first."""
    settings = request.app.state.settings
    store = DeliveryStore(request.app.state.index.engine)
    reports = store.reports()
    rows = store.built_results(only_uid)
    uids = [r["study_instance_uid"] for r in rows]
    aes = store.calling_aes(uids) if settings.sites and uids else {}
    paths = store.first_instance_paths(uids) if uids else {}
    token_site = _token_site(request)
    entries: list[StudyEntry] = []
    for row in rows:
        uid = row["study_instance_uid"]
        if not row.get("result"):
            continue
        site = site_for_aes(settings, aes.get(uid, set())) if settings.sites else None
        entries.append(
            StudyEntry(
                uid=uid,
                row=row,
                report=reports.get(uid),
                site=site,
                visible=visible_to(token_site, site),
                path=paths.get(uid),
                languages=list(settings.reports.languages),
            )
        )
    return entries


def _check_params(kind: str, request: Request) -> None:
    unknown = sorted(set(request.query_params) - SEARCHES[kind] - IGNORED_PARAMS - PAGING_PARAMS)
    if unknown:
        raise FhirError(
            400,
            "not-supported",
            f"{kind} search does not support {', '.join(unknown)}; "
            f"supported: {', '.join(sorted(SEARCHES[kind]))}",
        )


def _matches_patient(header: StudyHeader, site: str | None, request: Request) -> bool:
    params = request.query_params
    for name in ("patient", "subject"):
        for value in params.getlist(name):
            wanted = value.split("/", 1)[1] if value.startswith("Patient/") else value
            if wanted != patient_id(header, site):
                return False
    for value in params.getlist("subject:identifier"):
        system, bar, code = value.rpartition("|")
        if code != (header.patient_id or "unknown") or (
            bar and system and system != patient_identifier_system(header, site)
        ):
            return False
    return True


def _matches_status(status: str, request: Request) -> bool:
    for value in request.query_params.getlist("status"):
        if status not in {s.strip() for s in value.split(",")}:
            return False
    return True


DATE_PREFIXES = ("eq", "ne", "ge", "le", "gt", "lt")


def _matches_date(effective: str | None, request: Request) -> bool:
    """FHIR date search on the study date (day precision): eq, ne, ge, le, gt, lt."""
    values = request.query_params.getlist("date")
    if not values:
        return True
    if effective is None:
        return False
    day = dt.date.fromisoformat(effective)
    for value in values:
        prefix, text = ("eq", value)
        if value[:2] in DATE_PREFIXES:
            prefix, text = value[:2], value[2:]
        try:
            wanted = dt.date.fromisoformat(text[:10])
        except ValueError as exc:
            raise FhirError(400, "invalid", f"date {value!r} is not a FHIR date") from exc
        ok = {
            "eq": day == wanted,
            "ne": day != wanted,
            "ge": day >= wanted,
            "le": day <= wanted,
            "gt": day > wanted,
            "lt": day < wanted,
        }[prefix]
        if not ok:
            return False
    return True


def _whole_number(request: Request, name: str, default: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) > high:
        raise FhirError(400, "invalid", f"{name} must be a whole number from 0 to {high}")
    return int(value)


def _page(found: list[Any], request: Request) -> Any:
    """One page of a search's matches (``_count`` per page, default 100, at most 1000; ``_count=0``
    gives only the total), with ``self`` / ``next`` / ``previous`` links that keep the search's
    other parameters, as FHIR servers page a searchset."""
    count = _whole_number(request, "_count", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    offset = _whole_number(request, "_offset", 0, 10**9)  # past the end: an empty page

    def url(at: int) -> str:
        return str(request.url.include_query_params(_count=count, _offset=at))

    links = {"self": url(offset)}
    if count and offset + count < len(found):
        links["next"] = url(offset + count)
    if count and offset > 0:
        links["previous"] = url(max(offset - count, 0))
    page = found[offset : offset + count]
    return searchset(page, _base_url(request), total=len(found), links=links)


def _search(kind: str, request: Request) -> JSONResponse:
    try:
        _check_params(kind, request)
        found: list[Any] = []
        if kind in ("ServiceRequest", "Task"):
            return _json(_page(list(search_referrals(kind, request)), request))
        for entry in _studies(request):
            if not entry.visible or not _matches_status(entry.status, request):
                continue
            header = entry.header
            site = entry.site.name if entry.site else None
            if header is None or not _matches_patient(header, site, request):
                continue
            day = header.study_datetime
            if not _matches_date(day.date().isoformat() if day else None, request):
                continue
            study = entry.resources
            if kind == "DiagnosticReport":
                found.append(study.report)
            elif kind == "Observation":
                found.extend(study.observations)
            elif study.risk is not None:
                found.append(study.risk)
        return _json(_page(found, request))
    except FhirError as exc:
        return _error(exc)


def _read(kind: str, resource_id: str, request: Request) -> JSONResponse:
    try:
        if kind in ("ServiceRequest", "Task"):
            try:
                referral = read_referral(kind, resource_id, request)
            except ReferralHidden as exc:
                raise FhirError(403, "forbidden", "this token's site did not make it") from exc
            if referral is None:
                raise FhirError(404, "not-found", f"no {kind} with id {resource_id}")
            return _json(referral)
        if kind == "DiagnosticReport":
            studies = _studies(request, only_uid=resource_id)
        else:
            studies = _studies(request)
        for entry in studies:
            if kind == "Observation" and not resource_id.startswith(observation_prefix(entry.uid)):
                continue
            if kind == "RiskAssessment" and resource_id != risk_id(entry.uid):
                continue
            if entry.header is None:
                continue
            study = entry.resources
            by_kind: dict[str, list[Any]] = {
                "DiagnosticReport": [study.report],
                "Observation": list(study.observations),
                "RiskAssessment": [study.risk],
            }
            candidates = by_kind.get(kind, [])
            for candidate in candidates:
                if candidate is not None and candidate.id == resource_id:
                    if not entry.visible:
                        raise FhirError(403, "forbidden", "this token's site does not hold it")
                    return _json(candidate)
        raise FhirError(404, "not-found", f"no {kind} with id {resource_id}")
    except FhirError as exc:
        return _error(exc)


@router.get("/metadata")
def metadata(request: Request) -> JSONResponse:
    """The CapabilityStatement (open, as FHIR clients read it before they authenticate)."""
    return _json(capability_statement(__version__, _base_url(request)))


#: what each type's search returns, for the OpenAPI page
TYPES = {
    "DiagnosticReport": "The AI results, one report per study.",
    "Observation": "One Observation per finding and per study-level measurement.",
    "RiskAssessment": "The triage priority of each result as a qualitative risk.",
    "ServiceRequest": "The referrals' requests (``api.fhir_referrals``).",
    "Task": "Where each referral stands (``api.fhir_referrals``).",
}


def _add_type_routes(kind: str) -> None:
    """GET ``/fhir/<kind>`` (search) and GET ``/fhir/<kind>/{resource_id}`` (read)."""
    described = f"{TYPES[kind]} Search parameters: {', '.join(sorted(SEARCHES[kind]))}."

    @guarded.get(f"/{kind}", summary=f"Search {kind}", description=described)
    def search(request: Request) -> JSONResponse:
        return _search(kind, request)

    @guarded.get(f"/{kind}/{{resource_id}}", summary=f"Read {kind}")
    def read(resource_id: str, request: Request) -> JSONResponse:
        return _read(kind, resource_id, request)


for _kind in SEARCHES:
    _add_type_routes(_kind)


@guarded.put("/Task/{resource_id}")
async def put_task(resource_id: str, request: Request) -> JSONResponse:
    """A referral's Task moved on by the hospital's system (``fhir_referrals.update_task``)."""
    try:
        body = await request.json()
    except ValueError:
        return _error(FhirError(400, "invalid", "the body is not JSON"))
    try:
        updated = await run_in_threadpool(update_task, resource_id, body, request)
    except FhirError as exc:
        return _error(exc)
    return _json(updated)
