"""CDS Hooks answers traced and completed (CDS Hooks 2.0): record, override reasons, app link,
feedback.

``record_answer`` keeps what one answer told the doctor (``store.cds_answers``): the patient as
a keyed hash, the ``hookInstance``, which Observation gave each input and when it was measured,
the calculator and rule versions, the scores and the cards as sent; and writes a ``cds-answer``
audit entry. ``complete_cards`` adds what CDS Hooks 2.0 cards may carry and medgate's lacked:
``overrideReasons`` (so the EHR can say why a card was not followed) and a SMART app link to
the doctor's page (``/clinic``), and adds a card with the patient's latest referral from this
site (its status, and the hospital's follow-up plan once it came back down).
``record_feedback`` stores each outcome against the card it answers; accepting a referral
suggestion creates the referral (``store.referrals``), once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import HTTPException, Request
from fhir.resources.R4B.coding import Coding
from pydantic import BaseModel

from medgate import __version__
from medgate.api import cds_fhir as fh
from medgate.api.audit_log import app_audit
from medgate.api.routes_referrals import actor_of, open_referral, patient_key, token_site
from medgate.store.cds_answers import CdsAnswerStore, NewAnswer
from medgate.store.referrals import Evidence, NewReferral, ReferralStore

OVERRIDE_SYSTEM = "urn:medgate:cds:override-reason"
#: code -> (zh, en) display: why a doctor did not follow a card
OVERRIDE_REASONS: dict[str, tuple[str, str]] = {
    "patient-declined": ("患者拒绝", "Patient declined"),
    "already-addressed": ("已处理（已转诊或已治疗）", "Already addressed (referred or treated)"),
    "not-applicable": ("不适用于该患者", "Not applicable to this patient"),
    "data-incorrect": ("输入数据有误", "Input data are wrong"),
}
REFERRAL_URGENCY = {"stat", "asap", "urgent", "routine"}


# ---------------------------------------------------------------- cards


def clinic_base(request: Request) -> str:
    settings = request.app.state.settings
    base = settings.review.base_url or str(request.base_url)
    return base.rstrip("/")


def complete_cards(
    cards: list[dict[str, Any]], request: Request, patient_id: str, lang: str
) -> list[dict[str, Any]]:
    """Each card with ``overrideReasons`` and a SMART app link to the patient's /clinic page."""
    key = patient_key(request.app.state.settings, patient_id).removeprefix("h:")
    label = (
        "在medgate查看患者影像与转诊" if lang == "zh" else "Open in medgate: imaging and referrals"
    )
    link = {
        "label": label,
        "url": f"{clinic_base(request)}/clinic/launch",
        "type": "smart",
        "appContext": f"patient={key}",
    }
    reasons = [
        Coding(system=OVERRIDE_SYSTEM, code=code, display=zh if lang == "zh" else en).model_dump(
            mode="json"
        )
        for code, (zh, en) in OVERRIDE_REASONS.items()
    ]
    referral_card = _referral_card(request, patient_id, lang)
    if referral_card is not None:
        cards.append(referral_card)
    for card in cards:
        card.setdefault("overrideReasons", reasons)
        card.setdefault("links", [link])
    return cards


REFERRAL_CARD: dict[str, dict[str, str]] = {
    "zh": {
        "requested": "转诊已申请，等待上级医院接收",
        "accepted": "上级医院已接收转诊",
        "completed": "转诊已完成：上级医院随访方案",
        "rejected": "上级医院未接收转诊",
        "cancelled": "转诊已撤回",
        "plan": "随访方案",
        "reason": "说明",
        "disclaimer": "以上为转诊记录，供医生参考。",
    },
    "en": {
        "requested": "Referral requested, waiting for the hospital",
        "accepted": "The hospital accepted the referral",
        "completed": "Referral completed: the hospital's follow-up plan",
        "rejected": "The hospital did not accept the referral",
        "cancelled": "Referral withdrawn",
        "plan": "Follow-up plan",
        "reason": "Note",
        "disclaimer": "Referral record, for the doctor's information.",
    },
}


def _referral_card(request: Request, patient_id: str, lang: str) -> dict[str, Any] | None:
    """The patient's latest referral of this site as an info card: where it stands, and the
    hospital's follow-up plan once it came back down (下转) — in the doctor's own EHR."""
    settings = request.app.state.settings
    site = token_site(request)
    if site is None:
        return None  # a caller with no site: whose referrals to show is not known
    found = ReferralStore(request.app.state.index.engine).find(
        site=site, patient_key=patient_key(settings, patient_id)
    )
    if not found:
        return None
    latest = found[0]
    text = REFERRAL_CARD["zh" if lang == "zh" else "en"]
    lines = [f"{latest.reason}"]
    if latest.follow_up_plan:
        lines.append(f"**{text['plan']}:** {latest.follow_up_plan}")
    if latest.status_reason:
        lines.append(f"**{text['reason']}:** {latest.status_reason}")
    lines.append(f"*{text['disclaimer']}*")
    return {
        "uuid": str(uuid.uuid4()),
        "summary": text[latest.status][:140],
        "indicator": "info",
        "detail": "\n\n".join(lines),
        "source": {"label": "medgate referrals (双向转诊)", "topic": {"code": "referral"}},
    }


# ---------------------------------------------------------------- answer


def provenance(
    sources: Iterable[fh.Source], summary: Mapping[str, Any], ignored: Iterable[str]
) -> list[dict[str, Any]]:
    """For each input of the assessment: the resource that gave it and when it was measured.

    ``sources`` are those of the very pass that built the summary (``cds_fhir.read_prefetch``,
    with the request's ``now``), so the trace names the Observation behind each value; a value
    dropped as out of range is listed with ``used: false``, and so is one left out for its age
    (with its value and ``unused``), a resource that is not valid FHIR R4 and a Condition that
    was not used (refuted, inactive, or mapping to no input).
    """
    dropped = set(ignored)
    inputs: list[dict[str, Any]] = []
    for item in sources:
        field = item["input"]
        if field == "condition" or "unused" in item:
            inputs.append(dict(item))
            continue
        inputs.append(
            {
                **item,
                "value": item.get("value", summary.get(field)),  # one of a list: its own
                "used": field in summary and field not in dropped,
            }
        )
    inputs.sort(key=lambda item: (item["input"] == "condition", item["input"]))
    for field in ("age", "sex"):
        if field in summary:
            inputs.append(
                {
                    "input": field,
                    "value": summary[field],
                    "source": "Patient (hook context)",
                    "code": None,
                    "effective": None,
                    "used": field not in dropped,
                }
            )
    return inputs


def versions(result: BaseModel) -> list[dict[str, Any]]:
    """The calculators (name, version, coefficient hash, source) and rules behind an answer."""
    out: list[dict[str, Any]] = []
    for name in ("china_par", "news2", "qsofa", "follow_up"):
        part = getattr(result, name, None)
        calculator = getattr(part, "calculator", None)
        if calculator is not None:
            out.append({"score": name, **calculator.model_dump(mode="json")})
    learned = getattr(result, "learned_model", None)
    if isinstance(learned, Mapping) and isinstance(learned.get("model"), Mapping):
        model = learned["model"]
        out.append(
            {
                "score": "learned_model",
                "name": model.get("name"),
                "version": model.get("version"),
                "coefficients_sha256": model.get("onnx_sha256"),
                "source": "demo model bundle",
            }
        )
    referral = getattr(result, "referral", None)
    out.append(
        {
            "score": "referral_rules",
            "name": "medgate.clinical.assess",
            "version": __version__,
            "source": "; ".join(getattr(referral, "sources", []) or []),
        }
    )
    return out


def scores(result: BaseModel) -> dict[str, Any]:
    """The numbers a doctor follows over time (for /clinic), from one answer."""
    out: dict[str, Any] = {}
    news2 = getattr(result, "news2", None)
    if news2 is not None:
        out["news2"] = {"score": news2.score, "risk": news2.risk}
    qsofa = getattr(result, "qsofa", None)
    if qsofa is not None:
        out["qsofa"] = {"score": qsofa.score}
    par = getattr(result, "china_par", None)
    if par is not None and getattr(par, "applicable", False):
        out["china_par"] = {"risk_10y_percent": par.risk_10y_percent, "category": par.category}
    fup = getattr(result, "follow_up", None)
    if fup is not None:
        out["follow_up"] = {"next_visit_days": fup.next_follow_up_days}
    referral = getattr(result, "referral", None)
    if referral is not None:
        out["referral"] = {"level": referral.level, "reasons": list(referral.reasons)}
    return out


def record_answer(
    request: Request,
    service_id: str,
    hook: str,
    hook_instance: str,
    patient_id: str,
    sources: Iterable[fh.Source],
    summary: Mapping[str, Any],
    ignored: Iterable[str],
    result: BaseModel,
    cards: list[dict[str, Any]],
) -> str:
    """Keep one CDS Hooks answer (store + audit); returns its id. ``sources``: the provenance
    ``cds_fhir.read_prefetch`` gave with ``summary``."""
    settings = request.app.state.settings
    new = NewAnswer(
        patient_key=patient_key(settings, patient_id),
        site=token_site(request),
        service=service_id,
        hook=hook,
        hook_instance=hook_instance,
        inputs=provenance(sources, summary, ignored),
        versions=versions(result),
        scores=scores(result),
        cards=cards,
    )
    answer_id = CdsAnswerStore(request.app.state.index.engine).record(new)
    app_audit(request).record(
        "cds-answer",
        actor=actor_of(request),
        details={
            "patient": patient_id,
            "answer": answer_id,
            "service": service_id,
            "hook_instance": hook_instance,
            "cards": len(cards),
            "versions": [f"{v.get('name')} {v.get('version')}" for v in new.versions],
        },
    )
    return answer_id


# ---------------------------------------------------------------- feedback


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(400, f"outcomeTimestamp {value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _referral_action(suggestion: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for action in suggestion.get("actions") or []:
        resource = action.get("resource") or {}
        if action.get("type") == "create" and resource.get("resourceType") == "ServiceRequest":
            return resource
    return None


def record_feedback(request: Request, service_id: str, items: list[dict[str, Any]]) -> list[str]:
    """Store each feedback item against its card; returns the ids of referrals it created.

    Feedback on a card of another site than a site token's (403), with an outcome other than
    accepted / overridden (400) or naming a suggestion the card did not carry (404) is refused
    before anything is stored; a card this server never gave is skipped and noted in the audit
    trail (the CDS Hooks client cannot act on an error for it)."""
    store = CdsAnswerStore(request.app.state.index.engine)
    scoped = token_site(request)
    checked = []
    for item in items:
        card_uuid = str(item.get("card") or "")
        found = store.card(card_uuid) if card_uuid else None
        if found is None or found[0].service != service_id:
            # a card this server has no record of (given before tracing, or by another
            # service): nothing to store it against; the audit trail notes it
            app_audit(request).record(
                "cds-feedback",
                outcome="minor-failure",
                actor=actor_of(request),
                details={"service": service_id, "card": card_uuid, "unknown_card": True},
            )
            continue
        if scoped is not None and found[0].site != scoped:
            raise HTTPException(403, "this token's site was not given that card")
        outcome = str(item.get("outcome") or "")
        if outcome not in ("accepted", "overridden"):
            raise HTTPException(400, "feedback outcome must be 'accepted' or 'overridden'")
        accepted = [str(s.get("id")) for s in item.get("acceptedSuggestions") or [] if s.get("id")]
        suggestions = {str(s.get("uuid")): s for s in found[1].get("suggestions") or []}
        unknown = [s for s in accepted if s not in suggestions]
        if unknown:
            raise HTTPException(404, f"card {card_uuid} has no suggestion {unknown[0]!r}")
        override = item.get("overrideReason")
        if override is not None and not isinstance(override, Mapping):
            raise HTTPException(400, "overrideReason must be an object (reason, userComment)")
        when = _when(item.get("outcomeTimestamp"))
        checked.append((found, outcome, accepted, suggestions, override, when))
    created: list[str] = []
    for (answer, card), outcome, accepted, suggestions, override, when in checked:
        referral_id = None
        for suggestion_id in accepted if outcome == "accepted" else []:
            resource = _referral_action(suggestions[suggestion_id])
            if resource is None:
                continue
            reference = str((resource.get("subject") or {}).get("reference") or "")
            priority = str(resource.get("priority") or "routine")
            new = NewReferral(
                site=answer.site,
                patient_id=reference.removeprefix("Patient/"),
                patient_key=answer.patient_key,
                urgency=priority if priority in REFERRAL_URGENCY else "routine",  # type: ignore[arg-type]
                reason=str(card.get("summary") or "CDS referral suggestion"),
                requester=actor_of(request),
                evidence=_evidence(answer.scores),
                origin="cds",
                origin_ref=suggestion_id,
            )
            referral, made = open_referral(request, new)
            referral_id = referral.id
            if made:
                created.append(referral.id)
        store.add_feedback(
            answer.id,
            str(card["uuid"]),
            outcome,
            accepted,
            dict(override) if override is not None else None,
            when,
            referral_id,
        )
        app_audit(request).record(
            "cds-feedback",
            actor=actor_of(request),
            details={
                "answer": answer.id,
                "card": str(card["uuid"]),
                "outcome": outcome,
                "accepted": accepted,
                "override": (override or {}).get("reason", {}).get("code") if override else None,
                "referral": referral_id or "-",
            },
        )
    return created


def _evidence(answer_scores: Mapping[str, Any]) -> list[Evidence]:
    out: list[Evidence] = []
    if "news2" in answer_scores:
        out.append(Evidence("score", "NEWS2", str(answer_scores["news2"]["score"])))
    if "qsofa" in answer_scores:
        out.append(Evidence("score", "qSOFA", str(answer_scores["qsofa"]["score"])))
    par = answer_scores.get("china_par")
    if par and par.get("risk_10y_percent") is not None:
        out.append(Evidence("score", "China-PAR 10y", f"{par['risk_10y_percent']:.1f}%"))
    for reason in (answer_scores.get("referral") or {}).get("reasons", [])[:5]:
        out.append(Evidence("finding", str(reason)[:200]))
    return out
