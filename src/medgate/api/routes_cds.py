"""Decision support for primary-care doctors: ``/api/v1/cds/*`` and HL7 CDS Hooks.

Every request on this router is written to the audit trail (event ``api-request``) with its
route, status and duration only: no body, no patient identifier. Guidance text follows the
``Accept-Language`` header (zh or en).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medgate.api import cds_fhir as fh
from medgate.api import cds_trace
from medgate.api.audit_log import app_audit
from medgate.api.security import require_scope
from medgate.clinical import china_par as cp
from medgate.clinical import followup as fu
from medgate.clinical import news2 as nw
from medgate.clinical.assess import (
    CATEGORY_ZH,
    GUIDANCE,
    NEWS2_RISK_ZH,
    NOT_ASSESSED,
    NOT_FOR_CLINICAL,
    UNDER_16,
    AssessResult,
    Language,
    Level,
    assess,
    china_par_guidance,
    ldl_line,
    news2_action,
    qsofa_action,
)
from medgate.clinical.common import (
    DISCLAIMER,
    MG_DL_PER_MMOL_L_CHOLESTEROL,
    CalculatorInfo,
    Reason,
)
from medgate.clinical.lifetime_risk import LifetimeRisk
from medgate.clinical.schemas import (
    AssessRequest,
    ChinaParRequest,
    DiabetesProgressionRequest,
    FollowUpRequest,
    News2Request,
    QsofaRequest,
)
from medgate.core.logs import phi_hash
from medgate.delivery.referral_fhir import REFERRAL_CODE
from medgate.models.tabular import (
    DEFAULT_BUNDLE,
    BundleError,
    ModelPrediction,
    TabularPredictor,
    load_predictor,
)


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
                    app_audit(request).record,
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


#: A route's reply language (``Accept-Language``) and the demo learned model, as parameters.
ReplyLanguage = Annotated[Language, Depends(language)]
DemoModel = Annotated[TabularPredictor | None, Depends(predictor)]


#: the equation's lipid inputs, in mg/dL: the request gives them in either unit
LIPIDS_MG_DL = {"total_cholesterol_mg_dl", "hdl_cholesterol_mg_dl", "ldl_cholesterol_mg_dl"}


class ChinaParAnswer(BaseModel):
    """What the equation answered, as the API shows it: read by name from ``ChinaParResult``."""

    model_config = ConfigDict(from_attributes=True)

    applicable: bool
    route: str
    risk_10y_percent: float | None
    category: Literal["low", "intermediate", "high"] | None
    reason: str | None
    direct_high_risk_reasons: list[str]
    cautions: list[Reason]
    lifetime_risk_assessment: Reason | None
    lifetime_risk: LifetimeRisk | None
    calculator: CalculatorInfo


class ChinaParResponse(ChinaParAnswer):
    guidance: list[str]
    disclaimer: str


@router.post("/api/v1/cds/china-par", response_model=ChinaParResponse)
def china_par_route(body: ChinaParRequest, lang: ReplyLanguage) -> ChinaParResponse:
    """2019-guideline ASCVD risk assessment: direct high risk, else China-PAR (ages 35-74)."""
    tc = body.lipid_mg_dl("total_cholesterol")
    hdl = body.lipid_mg_dl("hdl_cholesterol")
    assert tc is not None and hdl is not None  # the request requires both
    ldl = body.ldl_cholesterol_mmol_l
    same_names = body.model_dump(include=set(cp.ChinaParInput.model_fields) - LIPIDS_MG_DL)
    result = cp.china_par(
        cp.ChinaParInput(
            **same_names,
            total_cholesterol_mg_dl=tc,
            hdl_cholesterol_mg_dl=hdl,
            ldl_cholesterol_mg_dl=None if ldl is None else ldl * MG_DL_PER_MMOL_L_CHOLESTEROL,
        )
    )
    return ChinaParResponse(
        **dict(ChinaParAnswer.model_validate(result)),
        guidance=china_par_guidance(result, lang),
        disclaimer=DISCLAIMER[lang],
    )


class News2Response(nw.News2Result):
    """NEWS2 with the action level it calls for on its own (emergency / urgent / none)."""

    action_level: Level
    action_reasons: list[str]


@router.post("/api/v1/cds/news2", response_model=News2Response)
def news2_route(body: News2Request, lang: ReplyLanguage) -> News2Response:
    """NEWS2 aggregate score, RCP response band, monitoring frequency and action level."""
    fields = body.model_dump(exclude={"age", "deteriorating"})
    result = nw.news2(nw.News2Input(**fields), lang)
    level, reasons = news2_action(result, body.deteriorating, lang)
    return News2Response(**result.model_dump(), action_level=level, action_reasons=reasons)


class QsofaResponse(nw.QsofaResult):
    """qSOFA with the action level it calls for on its own."""

    action_level: Level
    action_reasons: list[str]


@router.post("/api/v1/cds/qsofa", response_model=QsofaResponse)
def qsofa_route(body: QsofaRequest, lang: ReplyLanguage) -> QsofaResponse:
    """qSOFA (Sepsis-3), interpreted with the answer to "is infection suspected?"."""
    result = nw.qsofa(nw.QsofaInput(**body.model_dump()), lang)
    level, reasons = qsofa_action(result, lang)
    return QsofaResponse(**result.model_dump(), action_level=level, action_reasons=reasons)


@router.post("/api/v1/cds/follow-up", response_model=fu.FollowUpResult)
def follow_up_route(body: FollowUpRequest) -> fu.FollowUpResult:
    """Hypertension / type 2 diabetes follow-up: control, referral, next visit."""
    return fu.follow_up(fu.FollowUpInput(**body.model_dump()))


class DiabetesProgressionResponse(ModelPrediction):
    """The demo model's answer with the disclaimer every decision-support answer carries."""

    disclaimer: str


@router.post("/api/v1/cds/diabetes-progression", response_model=DiabetesProgressionResponse)
def diabetes_progression_route(
    body: DiabetesProgressionRequest, lang: ReplyLanguage, model: DemoModel
) -> DiabetesProgressionResponse:
    """The demo learned model (not for clinical use) with reason codes."""
    if model is None:
        raise HTTPException(503, f"model bundle {DEFAULT_BUNDLE!r} is not installed")
    prediction = model.predict(body.model_dump())
    return DiabetesProgressionResponse(**prediction.model_dump(), disclaimer=NOT_FOR_CLINICAL[lang])


@router.post("/api/v1/cds/assess", response_model=AssessResult)
def assess_route(body: AssessRequest, lang: ReplyLanguage, model: DemoModel) -> AssessResult:
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
    lang: Language,
    source: dict[str, str] | None = None,
    suggestions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One CDS Hooks card; its detail always ends with the decision-support disclaimer."""
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _short(summary),
        "indicator": indicator,
        "detail": f"{detail}\n\n*{DISCLAIMER[lang]}*" if detail else f"*{DISCLAIMER[lang]}*",
        "source": source or SOURCE,
    }
    if suggestions:
        card["suggestions"] = suggestions
    return card


REFERRAL_LABEL: dict[str, dict[str, str]] = {
    "emergency": {"zh": "立即拨打120 / 立即转运急诊", "en": "Call 120 / transfer now"},
    "urgent": {"zh": "紧急转诊至上级医院", "en": "Urgent referral to a higher-level hospital"},
    "routine": {"zh": "转诊至上级医院专科", "en": "Referral to a specialist"},
}
REFERRAL_TITLE: dict[str, dict[str, str]] = {
    "emergency": {"zh": "急救：", "en": "Emergency: "},
    "urgent": {"zh": "紧急转诊：", "en": "Urgent referral: "},
    "routine": {"zh": "建议转诊：", "en": "Referral advised: "},
}
SCORE_ZH = {
    "china_par": "China-PAR",
    "news2": "NEWS2",
    "qsofa": "qSOFA",
    "follow_up": "随访",
    "learned_model": "机器学习模型",
}
CONDITION_ZH = {"hypertension": "高血压", "type2_diabetes": "2型糖尿病"}

#: The demo model's inputs (its bundle's metadata) in Chinese, for the zh card.
MODEL_FEATURE_ZH = {
    "age": "年龄",
    "bmi": "体重指数",
    "mean_arterial_pressure_mmhg": "平均动脉压",
    "total_cholesterol_mg_dl": "总胆固醇",
    "ldl_cholesterol_mg_dl": "低密度脂蛋白胆固醇",
    "hdl_cholesterol_mg_dl": "高密度脂蛋白胆固醇",
    "tc_hdl_ratio": "总胆固醇/高密度脂蛋白胆固醇比值",
    "ln_triglycerides_mg_dl": "甘油三酯（对数）",
    "glucose_mg_dl": "血糖",
}
MODEL_UNIT_ZH = {
    "a": "岁",
    "kg/m2": "千克/平方米",
    "mm[Hg]": "毫米汞柱",
    "mg/dL": "毫克/分升",
    "1": "",
}


def _referral_suggestion(patient_id: str, level: str, lang: Language) -> dict[str, Any]:
    label = REFERRAL_LABEL[level][lang]
    return {
        "label": label,
        "uuid": str(uuid.uuid4()),
        "actions": [
            {
                "type": "create",
                "description": label,
                "resource": ServiceRequest(
                    status="draft",
                    intent="proposal",
                    priority={"emergency": "stat", "urgent": "urgent"}.get(level, "routine"),
                    code=CodeableConcept(coding=[Coding(**REFERRAL_CODE)]),
                    subject=Reference(reference=f"Patient/{patient_id}"),
                ).model_dump(mode="json"),
            }
        ],
    }


def _news2_card(n2: nw.News2Result, lang: Language) -> dict[str, Any]:
    indicator = {"high": "critical", "medium": "warning", "low-medium": "warning"}.get(
        n2.risk, "info"
    )
    if lang == "zh":
        rows = "\n".join(f"| {NEWS2_PARAMETER_ZH[k]} | {v} |" for k, v in n2.parameters.items())
        detail = (
            f"| 参数 | 分值 |\n|---|---|\n{rows}\n\n监测：{n2.monitoring}。{n2.clinical_response}"
        )
        summary = f"NEWS2 {n2.score}分（{NEWS2_RISK_ZH[n2.risk]}）"
    else:
        rows = "\n".join(f"| {k} | {v} |" for k, v in n2.parameters.items())
        detail = (
            f"| parameter | points |\n|---|---|\n{rows}\n\nMonitoring: {n2.monitoring}. "
            f"{n2.clinical_response}"
        )
        summary = f"NEWS2 {n2.score} ({n2.risk})"
    return _card(
        summary, indicator, detail, lang, {"label": "RCP NEWS2 (2017)", "url": nw.NEWS2_URL}
    )


NEWS2_PARAMETER_ZH = {
    "respiratory_rate": "呼吸频率",
    "spo2": "血氧饱和度",
    "air_or_oxygen": "吸氧",
    "sbp_mmhg": "收缩压",
    "heart_rate": "心率",
    "consciousness": "意识",
    "temperature_c": "体温",
}
QSOFA_CRITERIA_ZH = {
    "respiratory_rate_ge_22": "呼吸频率≥22次/分",
    "sbp_le_100": "收缩压≤100 mmHg",
    "altered_mentation": "意识改变",
}


def _qsofa_card(qs: nw.QsofaResult, lang: Language) -> dict[str, Any]:
    met = [k for k, v in qs.criteria.items() if v]
    if lang == "zh":
        summary = f"qSOFA {qs.score}/3分"
        detail = "、".join(QSOFA_CRITERIA_ZH[k] for k in met) + f"\n\n{qs.interpretation}"
    else:
        summary = f"qSOFA {qs.score}/3"
        detail = ", ".join(met) + f"\n\n{qs.interpretation}"
    indicator = "critical" if qs.suspected_infection else "warning"
    source = {"label": "Sepsis-3 qSOFA", "url": nw.QSOFA_URL}
    return _card(summary, indicator, detail, lang, source)


#: Input names in Chinese, for the list of what a score is missing (the field name follows).
INPUT_ZH = {
    **nw.PARAMETER_ZH,
    "age": "年龄",
    "sex": "性别",
    "dbp_mmhg": "舒张压",
    "on_bp_treatment": "是否服用降压药",
    "total_cholesterol_mmol_l": "总胆固醇",
    "hdl_cholesterol_mmol_l": "高密度脂蛋白胆固醇",
    "ldl_cholesterol_mmol_l": "低密度脂蛋白胆固醇",
    "triglycerides_mmol_l": "甘油三酯",
    "fasting_glucose_mmol_l": "空腹血糖",
    "waist_cm": "腰围",
    "bmi": "体重指数",
    "current_smoker": "是否吸烟",
    "diabetes": "是否患糖尿病",
    "region": "南方或北方",
    "residence": "城市或农村",
    "family_history_ascvd": "心血管病家族史",
    "conditions": "诊断",
}


def _input_zh(name: str) -> str:
    """One missing input in Chinese, with its field name quoted for the integrator: "a|b" (either
    unit) is named by the first, "a+b" (both needed) by each part."""
    parts = [part.split("|")[0] for part in name.split("+")]
    labels = [INPUT_ZH.get(part) or INPUT_ZH.get(f"{part}_mmol_l") for part in parts]
    if not all(labels):
        return f"`{name}`"
    return f"{'和'.join(str(label) for label in labels)}（`{name}`）"


def _follow_up_card(fup: fu.FollowUpResult, lang: Language) -> dict[str, Any]:
    zh = lang == "zh"
    lines = []
    for s in fup.status:
        if zh:
            state = {True: "控制满意", False: "控制不满意", None: "无法判断"}[s.controlled]
            lines.append(f"- {CONDITION_ZH[s.condition]}：{state}（目标：{s.target_zh}）")
            if s.reason_zh:
                lines.append(f"  {s.reason_zh}")
        else:
            state = {True: "controlled", False: "not controlled", None: "unknown"}[s.controlled]
            lines.append(f"- {s.condition}: {state} ({s.target}; {s.basis})")
            if s.reason_zh:  # a reason the doctor must read (the others say what is missing)
                lines.append(f"  {s.reason}")
    for t in fup.targets:
        # BP and glucose show in the status lines above; an unmet LDL-C target shows here,
        # since it does not change the visit interval (a "controlled, 90 days" card would hide it)
        if t.measure == "ldl_cholesterol_mmol_l" and t.met is False:
            lines.append(f"- {ldl_line(t, lang)}")
    lines.append(getattr(fup.advice, lang))
    summary = (
        f"随访：{fup.next_follow_up_days}天内复诊"
        if zh
        else f"Follow-up: next visit within {fup.next_follow_up_days} days"
    )
    source = {"label": "国家基本公共卫生服务规范（第三版）", "url": fu.SOURCE_URL}
    return _card(summary, "info", "\n".join(lines), lang, source)


def _china_par_card(
    par: cp.ChinaParResult, ldl: fu.TargetCheck | None, lang: Language
) -> dict[str, Any]:
    zh = lang == "zh"
    category = par.category or "high"
    if par.risk_10y_percent is not None:
        summary = (
            f"China-PAR 10年心血管病风险{par.risk_10y_percent:.1f}%（{CATEGORY_ZH[category]}）"
            if zh
            else f"China-PAR 10-year ASCVD risk {par.risk_10y_percent:.1f}% ({category})"
        )
    else:
        summary = "心血管病风险：高危（无需计算）" if zh else "ASCVD risk: high (no calculation)"
    # Lipid 2016 / 2023: a remaining-lifetime risk that is high is managed as high ASCVD risk
    lifetime_high = par.lifetime_risk is not None and par.lifetime_risk.status == "high"
    if lifetime_high:
        summary += "；余生危险高危" if zh else "; remaining-lifetime risk high"
    lines = china_par_guidance(par, lang) + ([ldl_line(ldl, lang)] if ldl else [])
    detail = "\n".join(f"- {line}" for line in lines)
    detail += f"\n\n`{cp.NAME} {cp.VERSION}`"
    source = {"label": "China-PAR (Yang et al., Circulation 2016)", "url": cp.SOURCE_URL}
    indicator = "warning" if category == "high" or lifetime_high else "info"
    return _card(summary, indicator, detail, lang, source)


def cards_for(
    result: AssessResult, patient_id: str, lang: Language, only_urgent: bool = False
) -> list[dict[str, Any]]:
    """CDS Hooks cards for one assessment, in one language, each with the disclaimer."""
    ref = result.referral
    others = [] if only_urgent else _other_cards(result, lang)
    if ref.level == "none":
        return others
    zh = lang == "zh"
    reasons = "；".join(ref.reasons) if zh else "; ".join(ref.reasons)
    shown = "\n".join(card["detail"] for card in others)
    lines = [*ref.reasons, *(g for g in result.guidance if g not in shown)]  # each line once
    referral = _card(
        REFERRAL_TITLE[ref.level][lang] + reasons,
        "critical" if ref.level in ("emergency", "urgent") else "warning",
        "\n".join(f"- {line}" for line in lines),
        lang,
        {"label": "国家基本公共卫生服务规范（第三版）/ RCP NEWS2", "url": fu.SOURCE_URL},
        [_referral_suggestion(patient_id, ref.level, lang)],
    )
    return [referral, *others]


def _other_cards(result: AssessResult, lang: Language) -> list[dict[str, Any]]:
    """The cards besides the referral one: scores, risk, follow-up, demo model, not computed."""
    zh = lang == "zh"
    cards: list[dict[str, Any]] = []
    if result.news2 is not None:
        cards.append(_news2_card(result.news2, lang))
    if result.qsofa is not None and result.qsofa.positive:
        cards.append(_qsofa_card(result.qsofa, lang))
    par = result.china_par
    established = par is not None and par.route == "established-ascvd"
    ldl = result.ldl_target
    if par is not None and par.applicable and par.category is not None:
        cards.append(_china_par_card(par, None if established else ldl, lang))
    if established:
        cards.append(
            _card(
                "已确诊动脉粥样硬化性心血管病：极高危，二级预防"
                if zh
                else "Established ASCVD: very high risk, secondary prevention",
                "warning",
                GUIDANCE["cvd-established"][lang] + (f"\n\n{ldl_line(ldl, lang)}" if ldl else ""),
                lang,
            )
        )
    fup = result.follow_up
    if fup is not None and not fup.urgent_referral:
        cards.append(_follow_up_card(fup, lang))
    if result.learned_model is not None:
        p = result.learned_model["probability"]
        reasons = "\n".join(
            f"- {MODEL_FEATURE_ZH.get(r['feature'], r['feature'])}"
            f"{r['value']:g}{MODEL_UNIT_ZH.get(r['unit'], r['unit'])}："
            f"{'升高风险' if r['contribution_log_odds'] > 0 else '降低风险'}"
            if zh
            else f"- {r['feature']} = {r['value']:g} {r['unit']}: {r['direction']}"
            for r in result.learned_model["reasons"]
        )
        intended_use = (
            "仅为演示，不用于临床：展示学习型表格风险模型如何训练、校准、导出并与指南计算器一同提供。"
            if zh
            else result.learned_model["model"]["intended_use"]
        )
        summary = (
            f"演示模型（不用于临床）：糖尿病进展较快的概率{p:.0%}"
            if zh
            else f"Demo model (not for clinical use): {p:.0%} risk of fast diabetes progression"
        )
        cards.append(
            _card(
                summary,
                "info",
                reasons + "\n\n" + intended_use,
                lang,
                {"label": "medgate demo model cds_diabetes_risk", "url": SOURCE["url"]},
            )
        )
    if any(n.reason == UNDER_16 for n in result.not_computed):
        # A child: one card says no score applies and why, instead of a list of each score.
        cards.append(
            _card(NOT_ASSESSED["summary"][lang], "warning", NOT_ASSESSED["detail"][lang], lang)
        )
    elif result.not_computed:
        if zh:
            detail = "\n".join(
                f"- {SCORE_ZH.get(n.score, n.score)}：{n.reason_zh or '不适用'}"
                + (f"（{'、'.join(_input_zh(m) for m in n.missing)}）" if n.missing else "")
                for n in result.not_computed
            )
        else:
            detail = "\n".join(
                f"- {n.score}: {n.reason}" + (f" ({', '.join(n.missing)})" if n.missing else "")
                for n in result.not_computed
            )
        cards.append(
            _card(
                "部分评分无法计算" if zh else "Some scores could not be computed",
                "info",
                detail,
                lang,
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
            if not bad:  # a cross-field check: drop the fields it names
                text = " ".join(str(e["msg"]) for e in exc.errors())
                pair = ("sbp_mmhg", "dbp_mmhg") if "diastolic" in text else ()
                bad = set(pair) or {k for k in data if "cholesterol" in k}
            for key in bad:
                data.pop(key, None)
                ignored.append(key)
    return AssessRequest.model_validate({}), ignored


@router.post("/cds-services/{service_id}")
def call_service(
    service_id: str,
    body: HookRequest,
    http_request: Request,
    lang: ReplyLanguage,
    model: DemoModel,
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
        notes.append(exc.zh if lang == "zh" else exc.en)
    try:
        summary, sources = fh.read_prefetch(prefetch, now=fh.utc_now())
    except ValidationError as exc:
        raise HTTPException(
            400, f"prefetch is not valid FHIR R4: {exc.errors()[0]['msg']}"
        ) from exc
    notes += fh.not_used(sources, lang)  # too old to use; resources not valid FHIR R4
    request, ignored = _assess_request(summary)
    result = assess(request, model, lang)
    cards = cards_for(result, patient_id, lang, only_urgent=service["hook"] == "order-select")
    if notes or ignored:
        dropped = "已忽略超出范围的数值：" if lang == "zh" else "ignored out-of-range value: "
        detail = "\n".join([*notes, *(f"{dropped}`{k}`" for k in ignored)])
        title = "部分数据无法使用" if lang == "zh" else "Data could not all be used"
        cards.append(_card(title, "info", detail, lang))
    cards = cds_trace.complete_cards(cards, http_request, patient_id, lang)
    cds_trace.record_answer(
        http_request,
        service_id,
        body.hook,
        body.hookInstance,
        patient_id,
        sources,
        summary,
        ignored,
        result,
        cards,
    )
    return {"cards": cards}


@router.post("/cds-services/{service_id}/feedback")
def feedback(service_id: str, body: FeedbackRequest, request: Request) -> dict[str, Any]:
    """CDS Hooks feedback: outcomes are audited (card IDs and outcomes only)."""
    if service_id not in SERVICES:
        raise HTTPException(404, f"no CDS service {service_id!r}")
    cds_trace.record_feedback(request, service_id, body.feedback)  # accepted referral: created
    outcomes = [str(item.get("outcome", "")) for item in body.feedback]
    app_audit(request).record(
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
