"""Two-way referral over HTTP: ``/api/v1/referrals[/{id}]`` (docs/clinic.md).

A primary-care site refers a patient up (``POST``); the receiving hospital answers with
``PATCH`` (accepted, rejected with a reason, completed with the follow-up plan that goes back
down to the clinic); the site may withdraw it (cancelled). Illegal moves get 409, a missing
reason or plan 422, each with a message that says what is allowed.

Access: the ``results`` scope. A site-scoped token (``[[sites]].tokens``) sees and creates only
its own site's referrals (403 on another site's) and may only withdraw; the hospital's answers
come from a token that is not scoped to a site. Every change is audited (patient as a keyed
hash) and its notification to the other side is queued with it (``store.referrals``) and sent
in the background (``delivery.referral_notify``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator, Field
from pydicom.errors import InvalidDicomError

from medgate.api.audit_log import app_audit
from medgate.api.security import require_scope
from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.delivery.referral_notify import ReferralNotifier
from medgate.delivery.sites import site_for_aes
from medgate.delivery.study_header import read_study_header
from medgate.store.referrals import (
    MADE_BY,
    Evidence,
    IllegalTransition,
    MissingField,
    NewReferral,
    Referral,
    ReferralStore,
    StaleReferral,
    Urgency,
)
from medgate.store.reviews import ReviewRow

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

router = APIRouter(tags=["referrals"], dependencies=[Depends(require_scope("results"))])


class EvidenceIn(BaseModel):
    kind: Literal["finding", "score", "study", "observation"]
    display: str = Field(min_length=1, max_length=200)
    value: str | None = Field(None, max_length=200)
    reference: str | None = Field(None, max_length=200)


class ReferralIn(BaseModel):
    """A referral up to the hospital."""

    patient_id: str = Field(min_length=1, max_length=64, description="the site's patient ID")
    reason: str = Field(min_length=1, max_length=2000)
    urgency: Literal["routine", "urgent", "asap", "stat"] = "routine"
    evidence: list[EvidenceIn] = Field(default_factory=list, max_length=50)
    study_instance_uid: str | None = Field(None, max_length=64, pattern=UID.pattern)
    site: str | None = Field(None, description="the referring site; a site token's own site")
    performer: str | None = Field(None, max_length=128, description="the receiving hospital")


class ReferralPatch(BaseModel):
    """A status change: accepted, rejected (reason), completed (follow-up plan), cancelled."""

    status: Literal["accepted", "rejected", "completed", "cancelled"]
    reason: str | None = Field(None, max_length=2000)
    follow_up_plan: str | None = Field(None, max_length=4000)
    performer: str | None = Field(None, max_length=128)
    version: int | None = Field(None, ge=1, description="the version read; 409 if it changed")


def _isoformat(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


#: a stored time as the API shows it: ``datetime.isoformat()``
IsoTime = Annotated[str, BeforeValidator(_isoformat)]


class EventOut(BaseModel):
    """One step of a referral's history, read from the stored ``ReferralEvent``."""

    seq: int
    status: str
    note: str | None
    at: IsoTime = Field(validation_alias="created_at")
    notified: str = Field(validation_alias="notify_side")
    channels: list[str] = Field(validation_alias="notify_channels")


class ReferralOut(BaseModel):
    """A referral as the API shows it, read by name from the stored ``Referral``."""

    id: str
    site: str | None
    patient_id: str
    status: str
    urgency: str
    reason: str
    evidence: list[EvidenceIn]
    study_instance_uid: str | None
    origin: str
    performer: str | None
    status_reason: str | None
    follow_up_plan: str | None
    version: int
    created_at: IsoTime
    updated_at: IsoTime
    history: list[EventOut] = Field(validation_alias="events")


def referral_out(r: Referral) -> ReferralOut:
    return ReferralOut.model_validate(r, from_attributes=True)


# ---------------------------------------------------------------- shared with CDS Hooks, /clinic


def referral_store(request: Request) -> ReferralStore:
    return ReferralStore(request.app.state.index.engine)


def token_site(request: Request) -> str | None:
    """The site a site-scoped token belongs to (None: not scoped)."""
    return getattr(request.state, "token_site", None)


def actor_of(request: Request) -> str:
    """Who made a request, as a keyed hash of their token (never the token itself)."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() == "bearer" and token.strip():
        return "token:" + phi_hash(token.strip(), request.app.state.settings.audit.hash_key)
    session = getattr(request.state, "clinic_actor", None)
    if session:
        return str(session)
    client = getattr(request.state, "cds_client", None)
    return f"cds-client:{client}" if client else "anonymous"


def patient_key(settings: Settings, patient_id: str) -> str:
    """The pseudonymous key that joins a patient's referrals, CDS answers and studies."""
    return phi_hash(patient_id, settings.audit.hash_key)


def channels_for(settings: Settings, site: str | None, side: str) -> list[str]:
    """``[[notify.channels]]`` that reach one side of a referral.

    The clinic: the site's ``notify_channels`` and channels of that site whose role is
    ``clinic``; the hospital: channels whose role is ``hospital`` (any site, or this site)."""
    names: list[str] = []
    if side == "clinic":
        for s in settings.sites:
            if s.name == site:
                names.extend(s.notify_channels)
        for c in settings.notify.channels:
            if c.role == "clinic" and c.site in ("", site) and c.name not in names:
                names.append(c.name)
    else:
        for c in settings.notify.channels:
            if c.role == "hospital" and c.site in ("", site) and c.name not in names:
                names.append(c.name)
    return names


def audit_change(request: Request, event: str, referral: Referral) -> None:
    """One audit entry per change: ids, status, urgency, the side notified; patient hashed."""
    last = referral.events[-1] if referral.events else None
    app_audit(request).record(
        event,
        actor=actor_of(request),
        study_uid=referral.study_instance_uid,
        details={
            "referral": referral.id,
            "patient": referral.patient_id,
            "site": referral.site or "-",
            "status": referral.status,
            "urgency": referral.urgency,
            "origin": referral.origin,
            "notified": last.notify_side if last else "-",
            "channels": last.notify_channels if last else [],
        },
    )


def notifier(request: Request) -> ReferralNotifier:
    """The app's sender of referral messages (one per app, made on first use)."""
    state = request.app.state
    made = getattr(state, "referral_notifier", None)
    if made is None:
        made = ReferralNotifier(state.settings, state.index.engine, app_audit(request))
        state.referral_notifier = made
    return made


def open_referral(request: Request, new: NewReferral) -> tuple[Referral, bool]:
    """Store a new referral, notify the hospital's side and audit it (returns (ref, created))."""
    settings = request.app.state.settings
    referral, created = referral_store(request).create(
        new, channels_for(settings, new.site, "hospital")
    )
    if created:
        audit_change(request, "referral-created", referral)
        notifier(request).kick()
    return referral, created


def refer_from_review(
    request: Request,
    study_uid: str,
    review: ReviewRow,
    *,
    reason: str,
    urgency: Urgency,
    performer: str | None,
) -> Referral:
    """The radiologist's "refer" on a reviewed study: a referral for the study's patient, from
    the site that sent the study, with the confirmed and modified findings as evidence.

    Keyed by the review revision (``origin_ref``), so a retried review makes one referral."""
    settings: Settings = request.app.state.settings
    index = request.app.state.index
    stored = index.instances.of_study(study_uid)
    if not stored:
        raise HTTPException(409, "the study has no stored instance to take the patient from")
    try:
        header = read_study_header(stored[0].path)
    except (OSError, InvalidDicomError) as exc:
        raise HTTPException(409, f"the study header cannot be read ({type(exc).__name__})") from exc
    if not header.patient_id:
        raise HTTPException(409, "the study carries no PatientID to refer")
    site = site_for_aes(settings, {r.calling_ae for r in stored if r.calling_ae})
    evidence = [Evidence(kind="study", display="imaging study", reference=study_uid)]
    evidence += [
        Evidence(
            kind="finding",
            display=str(v["finding"]),
            value=str(v["verdict"]) if v.get("value") is None else f"{v['value']}",
            reference=review.sr_sop_instance_uid,
        )
        for v in review.verdicts
        if v.get("verdict") in ("confirmed", "modified")
    ]
    new = NewReferral(
        site=site.name if site is not None else None,
        patient_id=header.patient_id,
        patient_key=patient_key(settings, header.patient_id),
        urgency=urgency,
        reason=reason,
        requester=f"reviewer:{review.reviewer_id}",
        evidence=evidence,
        study_instance_uid=study_uid,
        performer=performer,
        origin="review",
        origin_ref=f"review:{study_uid}:{review.revision}",
    )
    referral, _ = open_referral(request, new)
    return referral


def visible(request: Request, referral: Referral) -> bool:
    scoped = token_site(request)
    return scoped is None or referral.site == scoped


# ---------------------------------------------------------------- routes


@router.post("/api/v1/referrals", status_code=201, response_model=ReferralOut)
async def create_referral(body: ReferralIn, request: Request) -> ReferralOut:
    """Refer a patient up: reason, urgency, evidence (findings, scores, the imaging study)."""
    settings: Settings = request.app.state.settings
    scoped = token_site(request)
    site = body.site
    if scoped is not None:
        if site not in (None, scoped):
            raise HTTPException(403, "this token may only refer patients of its own site")
        site = scoped
    elif site is not None and not any(s.name == site for s in settings.sites):
        raise HTTPException(422, f"no [[sites]] entry named {site!r}")
    new = NewReferral(
        site=site,
        patient_id=body.patient_id,
        patient_key=patient_key(settings, body.patient_id),
        urgency=body.urgency,
        reason=body.reason,
        requester=actor_of(request),
        evidence=[Evidence(**e.model_dump()) for e in body.evidence],
        study_instance_uid=body.study_instance_uid,
        performer=body.performer,
        origin="api",
    )
    referral, _ = await run_in_threadpool(open_referral, request, new)
    return referral_out(referral)


@router.get("/api/v1/referrals", response_model=list[ReferralOut])
def list_referrals(
    request: Request,
    patient: str | None = Query(None, max_length=64, description="the site's patient ID"),
    status: str | None = Query(None, max_length=16),
) -> list[ReferralOut]:
    """Referrals, newest first; a site token sees its own site's only."""
    settings: Settings = request.app.state.settings
    found = referral_store(request).find(
        site=token_site(request),
        patient_key=patient_key(settings, patient) if patient else None,
        status=status,
    )
    return [referral_out(r) for r in found]


def _get_visible(request: Request, referral_id: str) -> Referral:
    referral = referral_store(request).get(referral_id)
    if referral is None:
        raise HTTPException(404, f"no referral {referral_id}")
    if not visible(request, referral):
        raise HTTPException(403, "this token's site did not make this referral")
    return referral


@router.get("/api/v1/referrals/{referral_id}", response_model=ReferralOut)
def get_referral(referral_id: str, request: Request) -> ReferralOut:
    return referral_out(_get_visible(request, referral_id))


@router.patch("/api/v1/referrals/{referral_id}", response_model=ReferralOut)
def update_referral(referral_id: str, body: ReferralPatch, request: Request) -> ReferralOut:
    """Move the referral on: accepted / rejected / completed (hospital), cancelled (site)."""
    return referral_out(change_referral(request, referral_id, body))


def change_referral(request: Request, referral_id: str, body: ReferralPatch) -> Referral:
    """One status change, checked (403/404/409/422 as ``HTTPException``), stored, audited."""
    settings: Settings = request.app.state.settings
    current = _get_visible(request, referral_id)
    if token_site(request) is not None and MADE_BY[body.status] == "hospital":
        raise HTTPException(
            403, f"only the receiving hospital marks a referral {body.status}; a site may cancel"
        )
    side = "hospital" if MADE_BY[body.status] == "clinic" else "clinic"
    try:
        updated = referral_store(request).transition(
            referral_id,
            body.status,
            actor_of(request),
            channels_for(settings, current.site, side),
            reason=body.reason,
            follow_up_plan=body.follow_up_plan,
            performer=body.performer,
            expected_version=body.version,
        )
    except (IllegalTransition, StaleReferral) as exc:
        raise HTTPException(409, str(exc)) from exc
    except MissingField as exc:
        raise HTTPException(422, str(exc)) from exc
    except KeyError as exc:
        raise HTTPException(404, f"no referral {referral_id}") from exc
    audit_change(request, "referral-updated", updated)
    notifier(request).kick()
    return updated


def referral_summary(referral: Referral) -> dict[str, Any]:
    """A short, PHI-free description (for CDS feedback answers and logs)."""
    return {"referral": referral.id, "status": referral.status, "urgency": referral.urgency}
