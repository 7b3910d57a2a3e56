"""Decision support for primary-care doctors: ``/api/v1/cds/*`` and HL7 CDS Hooks.

Every request on this router is written to the audit trail (event ``api-request``) with its
route, status and duration only: no body, no patient identifier. Guidance text follows the
``Accept-Language`` header (zh or en).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medgate.api import cds_fhir as fh
from medgate.api.security import require_scope
from medgate.clinical import china_par as cp
from medgate.clinical import followup as fu
from medgate.clinical import news2 as nw
from medgate.clinical.assess import GUIDANCE, AssessResult, Language, assess
from medgate.clinical.schemas import (
    AssessRequest,
    ChinaParRequest,
    DiabetesProgressionRequest,
    FollowUpRequest,
    News2Request,
    QsofaRequest,
)
from medgate.core.logs import phi_hash
from medgate.models.tabular import (
    DEFAULT_BUNDLE,
    BundleError,
    ModelPrediction,
    TabularPredictor,
    load_predictor,
)
from medgate.trust.audit import AuditLog


def _audit_log(request: Request) -> AuditLog:
    log = getattr(request.app.state, "cds_audit", None)
    if log is None:
        settings = request.app.state.settings
        log = AuditLog(settings.audit_path, settings.audit.hash_key)
        request.app.state.cds_audit = log
    return log


def _actor(request: Request) -> str:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() == "bearer" and token:
        return "token:" + phi_hash(token, request.app.state.settings.audit.hash_key)
    return "anonymous"


class AuditedRoute(APIRoute):
    """Records every request (also 401/403/422/500) after it is answered."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        route_path = self.path

        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                response = await original(request)
                status = response.status_code
                return response
            except HTTPException as exc:
                status = exc.status_code
                raise
            except RequestValidationError:
                status = 422
                raise
            finally:
                details = {
                    "route": route_path,
                    "method": request.method,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
                await run_in_threadpool(
                    _audit_log(request).record,
                    "api-request",
                    outcome="success" if status < 400 else "failure",
                    actor=_actor(request),
                    details=details,
                )

        return handler


router = APIRouter(
    tags=["decision support"],
    route_class=AuditedRoute,
    dependencies=[Depends(require_scope("cds"))],
)


def language(request: Request) -> Language:
    """zh or en from Accept-Language (highest q wins; default zh, the network's doctors)."""
    best: tuple[float, Language] | None = None
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang: Language | None = (
            "zh" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        )
        if lang and (best is None or q > best[0]):
            best = (q, lang)
    return best[1] if best else "zh"


def predictor(request: Request) -> TabularPredictor | None:
    """The demo learned model from ``models.path``; None when the bundle is absent."""
    settings = request.app.state.settings
    try:
        return load_predictor(str(settings.models.path.resolve()), DEFAULT_BUNDLE)
    except BundleError:
        return None


class ChinaParResponse(BaseModel):
    applicable: bool
    risk_10y_percent: float | None
    category: Literal["low", "intermediate", "high"] | None
    reason: str | None
    calculator: dict[str, str]
    guidance: str | None


@router.post("/api/v1/cds/china-par", response_model=ChinaParResponse)
def china_par_route(body: ChinaParRequest, lang: Language = Depends(language)) -> ChinaParResponse:
    """China-PAR 10-year ASCVD risk; ages outside 35-74 are "not applicable"."""
    result = cp.china_par(
        cp.ChinaParInput(
            age=body.age,
            sex=body.sex,
            sbp_mmhg=body.sbp_mmhg,
            on_bp_treatment=body.on_bp_treatment,
            total_cholesterol_mg_dl=body.lipid_mg_dl("total_cholesterol"),
            hdl_cholesterol_mg_dl=body.lipid_mg_dl("hdl_cholesterol"),
            waist_cm=body.waist_cm,
            current_smoker=body.current_smoker,
            diabetes=body.diabetes,
            region=body.region,
            residence=body.residence,
            family_history_ascvd=body.family_history_ascvd,
        )
    )
    return ChinaParResponse(
        applicable=result.applicable,
        risk_10y_percent=result.risk_10y_percent,
        category=result.category,
        reason=result.reason,
        calculator=result.calculator.model_dump(),
        guidance=GUIDANCE[f"cvd-{result.category}"][lang] if result.category else None,
    )


@router.post("/api/v1/cds/news2", response_model=nw.News2Result)
def news2_route(body: News2Request) -> nw.News2Result:
    """NEWS2 aggregate score, risk band and sub-scores (RCP 2017)."""
    return nw.news2(nw.News2Input(**body.model_dump()))


@router.post("/api/v1/cds/qsofa", response_model=nw.QsofaResult)
def qsofa_route(body: QsofaRequest) -> nw.QsofaResult:
    """qSOFA (Sepsis-3)."""
    return nw.qsofa(nw.QsofaInput(**body.model_dump()))


@router.post("/api/v1/cds/follow-up", response_model=fu.FollowUpResult)
def follow_up_route(body: FollowUpRequest) -> fu.FollowUpResult:
    """Hypertension / type 2 diabetes follow-up: control, referral, next visit."""
    return fu.follow_up(fu.FollowUpInput(**body.model_dump()))


@router.post("/api/v1/cds/diabetes-progression", response_model=ModelPrediction)
def diabetes_progression_route(
    body: DiabetesProgressionRequest,
    model: TabularPredictor | None = Depends(predictor),
) -> ModelPrediction:
    """The demo learned model (not for clinical use) with reason codes."""
    if model is None:
        raise HTTPException(503, f"model bundle {DEFAULT_BUNDLE!r} is not installed")
    return model.predict(body.model_dump())


@router.post("/api/v1/cds/assess", response_model=AssessResult)
def assess_route(
    body: AssessRequest,
    lang: Language = Depends(language),
    model: TabularPredictor | None = Depends(predictor),
) -> AssessResult:
    """Every applicable score, referral advice and guidance for one patient summary."""
    return assess(body, model, lang)


# ---------------------------------------------------------------- CDS Hooks (HL7, v2.0)

SERVICES: dict[str, dict[str, Any]] = {
    "medgate-primary-care": {
        "hook": "patient-view",
        "id": "medgate-primary-care",
        "title": "medgate primary-care decision support",
        "description": "China-PAR 10-year ASCVD risk, NEWS2, qSOFA, hypertension / type 2 "
        "diabetes follow-up and referral advice from the patient's latest observations.",
        "prefetch": fh.PREFETCH_TEMPLATES,
    },
    "medgate-order-safety": {
        "hook": "order-select",
        "id": "medgate-order-safety",
        "title": "medgate urgent-referral check on orders",
        "description": "When an order is selected, warns if the latest observations meet an "
        "urgent-referral criterion (NEWS2, qSOFA, BP / glucose crisis).",
        "prefetch": fh.PREFETCH_TEMPLATES,
    },
}
SOURCE = {"label": "medgate decision support", "url": "https://github.com/medgate/medgate"}


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")
    access_token: str
    token_type: str = "Bearer"


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str
    hookInstance: str
    context: dict[str, Any]
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[dict[str, Any]] = Field(min_length=1)


@router.get("/cds-services")
def discovery() -> dict[str, list[dict[str, Any]]]:
    """CDS Hooks discovery."""
    return {"services": list(SERVICES.values())}


def _short(text: str, limit: int = 139) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _card(
    summary: str,
    indicator: str,
    detail: str,
    source: dict[str, str] | None = None,
    suggestions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _short(summary),
        "indicator": indicator,
        "detail": detail,
        "source": source or SOURCE,
    }
    if suggestions:
        card["suggestions"] = suggestions
    return card


def _referral_suggestion(patient_id: str, level: str, lang: Language) -> dict[str, Any]:
    label = (
        ("紧急转诊至上级医院" if level == "urgent" else "转诊至上级医院专科")
        if lang == "zh"
        else (
            "Urgent referral to a higher-level hospital"
            if level == "urgent"
            else "Referral to a specialist"
        )
    )
    return {
        "label": label,
        "uuid": str(uuid.uuid4()),
        "actions": [
            {
                "type": "create",
                "description": label,
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "draft",
                    "intent": "proposal",
                    "priority": "urgent" if level == "urgent" else "routine",
                    "code": {
                        "coding": [
                            {
                                "system": "http://snomed.info/sct",
                                "code": "3457005",
                                "display": "Patient referral",
                            }
                        ]
                    },
                    "subject": {"reference": f"Patient/{patient_id}"},
                },
            }
        ],
    }


def cards_for(
    result: AssessResult, patient_id: str, lang: Language, only_urgent: bool = False
) -> list[dict[str, Any]]:
    """CDS Hooks cards for one assessment."""
    zh = lang == "zh"
    cards: list[dict[str, Any]] = []
    ref = result.referral
    if ref.level != "none":
        reasons = "；".join(ref.reasons) if zh else "; ".join(ref.reasons)
        title = (
            ("紧急转诊：" if ref.level == "urgent" else "建议转诊：")
            if zh
            else ("Urgent referral: " if ref.level == "urgent" else "Referral advised: ")
        )
        cards.append(
            _card(
                title + reasons,
                "critical" if ref.level == "urgent" else "warning",
                "\n".join(f"- {line}" for line in [*ref.reasons, *result.guidance]),
                {"label": "国家基本公共卫生服务规范（第三版）/ RCP NEWS2", "url": fu.SOURCE_URL},
                [_referral_suggestion(patient_id, ref.level, lang)],
            )
        )
    if only_urgent:
        return cards
    if result.news2 is not None:
        n2 = result.news2
        indicator = {"high": "critical", "medium": "warning", "low-medium": "warning"}.get(
            n2.risk, "info"
        )
        detail = "| parameter | points |\n|---|---|\n" + "\n".join(
            f"| {k} | {v} |" for k, v in n2.parameters.items()
        )
        cards.append(
            _card(
                f"NEWS2 {n2.score} ({n2.risk})",
                indicator,
                detail + f"\n\n{n2.clinical_response}",
                {"label": "RCP NEWS2 (2017)", "url": nw.NEWS2_URL},
            )
        )
    if result.qsofa is not None and result.qsofa.positive:
        cards.append(
            _card(
                f"qSOFA {result.qsofa.score}/3: assess for sepsis",
                "warning",
                ", ".join(k for k, v in result.qsofa.criteria.items() if v),
                {"label": "Sepsis-3 qSOFA", "url": nw.QSOFA_URL},
            )
        )
    par = result.china_par
    if par is not None and par.applicable and par.risk_10y_percent is not None:
        text = (
            f"China-PAR 10 年心血管病风险 {par.risk_10y_percent:.1f}%（{par.category}）"
            if zh
            else f"China-PAR 10-year ASCVD risk {par.risk_10y_percent:.1f}% ({par.category})"
        )
        cards.append(
            _card(
                text,
                "warning" if par.category == "high" else "info",
                GUIDANCE[f"cvd-{par.category}"][lang] + f"\n\n*{cp.NAME} {cp.VERSION}*",
                {"label": "China-PAR (Yang et al., Circulation 2016)", "url": cp.SOURCE_URL},
            )
        )
    fup = result.follow_up
    if fup is not None and not fup.urgent_referral:
        lines = [
            f"- {s.condition}: {'controlled' if s.controlled else 'not controlled' if s.controlled is False else 'unknown'} ({s.target}; {s.basis})"  # noqa: E501
            for s in fup.status
        ]
        summary = (
            f"随访：{fup.next_follow_up_days} 天内复诊"
            if zh
            else f"Follow-up: next visit within {fup.next_follow_up_days} days"
        )
        cards.append(
            _card(
                summary,
                "info",
                "\n".join(lines),
                {"label": "国家基本公共卫生服务规范（第三版）", "url": fu.SOURCE_URL},
            )
        )
    if result.learned_model is not None:
        p = result.learned_model["probability"]
        reasons = "\n".join(
            f"- {r['feature']} = {r['value']:g} {r['unit']}: {r['direction']}"
            for r in result.learned_model["reasons"]
        )
        cards.append(
            _card(
                f"Demo model (not for clinical use): {p:.0%} risk of fast diabetes progression",
                "info",
                reasons + "\n\n" + result.learned_model["model"]["intended_use"],
                {"label": "medgate demo model cds_diabetes_risk", "url": SOURCE["url"]},
            )
        )
    if result.not_computed:
        detail = "\n".join(
            f"- {n.score}: {n.reason}" + (f" ({', '.join(n.missing)})" if n.missing else "")
            for n in result.not_computed
        )
        cards.append(
            _card(
                "Some scores could not be computed" if not zh else "部分评分无法计算",
                "info",
                detail,
            )
        )
    return cards


def _assess_request(summary: dict[str, Any]) -> tuple[AssessRequest, list[str]]:
    """Build the request, dropping values that fail validation (they are reported)."""
    ignored: list[str] = []
    data = dict(summary)
    for _ in range(len(data) + 1):
        try:
            return AssessRequest(**data), ignored
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            bad = bad or {k for k in data if "cholesterol" in k}
            for key in bad:
                data.pop(key, None)
                ignored.append(key)
    return AssessRequest(), ignored


@router.post("/cds-services/{service_id}")
def call_service(
    service_id: str,
    body: HookRequest,
    lang: Language = Depends(language),
    model: TabularPredictor | None = Depends(predictor),
) -> dict[str, Any]:
    """Run a CDS service on the hook's prefetch (fetching what is missing when possible)."""
    service = SERVICES.get(service_id)
    if service is None:
        raise HTTPException(404, f"no CDS service {service_id!r}")
    if body.hook != service["hook"]:
        raise HTTPException(400, f"service {service_id!r} answers hook {service['hook']!r}")
    patient_id = str(body.context.get("patientId") or "")
    if not patient_id:
        raise HTTPException(400, "context.patientId is required")
    prefetch = dict(body.prefetch or {})
    notes: list[str] = []
    try:
        prefetch = fh.fetch_missing(
            prefetch,
            patient_id,
            body.fhirServer,
            body.fhirAuthorization.access_token if body.fhirAuthorization else None,
        )
    except fh.FhirFetchError as exc:
        notes.append(str(exc))
    try:
        summary = fh.summary_from_prefetch(prefetch)
    except ValidationError as exc:
        raise HTTPException(
            400, f"prefetch is not valid FHIR R4: {exc.errors()[0]['msg']}"
        ) from exc
    request, ignored = _assess_request(summary)
    result = assess(request, model, lang)
    cards = cards_for(result, patient_id, lang, only_urgent=service["hook"] == "order-select")
    if notes or ignored:
        detail = "\n".join([*notes, *(f"ignored out-of-range value: {k}" for k in ignored)])
        cards.append(_card("Data could not all be used", "info", detail))
    return {"cards": cards}


@router.post("/cds-services/{service_id}/feedback")
def feedback(service_id: str, body: FeedbackRequest, request: Request) -> dict[str, Any]:
    """CDS Hooks feedback: outcomes are audited (card IDs and outcomes only)."""
    if service_id not in SERVICES:
        raise HTTPException(404, f"no CDS service {service_id!r}")
    outcomes = [str(item.get("outcome", "")) for item in body.feedback]
    _audit_log(request).record(
        "api-request",
        actor=_actor(request),
        details={
            "route": "cds-feedback",
            "service": service_id,
            "outcomes": outcomes,
            "cards": [str(item.get("card", "")) for item in body.feedback],
        },
    )
    return {}
