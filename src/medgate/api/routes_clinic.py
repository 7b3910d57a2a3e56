"""The primary-care doctor's pages: ``/clinic`` (the site's patients) and one patient's page.

Server-rendered with Jinja2 (templates in ``clinic_templates/``), Chinese by default
(``review.language``), English with ``?lang=en``. The list puts urgent items first (critical or
urgent AI results, urgent advice from decision support, open urgent referrals) and shows each
patient's latest result (AI or verified by a radiologist), its guidance and the referral status;
the patient page shows the imaging results, the decision-support scores over time with the
Observations they came from, and the referral history with the hospital's follow-up plan.

Access follows the API (``clinic_session``): the ``results`` scope, a site token sees only its
site (403 on another site's patient). Patients are named in URLs by a keyed hash, never by ID.
Each page view is audited (event ``clinic-view``, patient hashed).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from medgate.api.audit_log import app_audit
from medgate.api.clinic_session import (
    COOKIE,
    ClinicAccess,
    NotAllowed,
    NotSignedIn,
    check_token,
    clinic_access,
    session_cookie,
)
from medgate.api.clinic_view import PatientHidden, PatientView, patient, patients, score_series
from medgate.api.routes_referrals import open_referral
from medgate.store.referrals import Evidence, NewReferral

HERE = Path(__file__).parent
#: the clinic's pages, then the page skeleton they share with the review pages
templates = Jinja2Templates(directory=[HERE / "clinic_templates", HERE / "templates"])
router = APIRouter(prefix="/clinic", tags=["clinic pages"], include_in_schema=False)

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "app": "medgate 基层医生工作台",
        "patients": "我的患者",
        "signin": "登录",
        "signout": "退出",
        "signin_intro": "请使用本机构的 medgate 访问令牌登录。",
        "token": "访问令牌",
        "bad_token": "令牌无效或没有查看结果的权限。",
        "site": "机构",
        "all_sites": "全部机构",
        "patient": "患者",
        "sex": "性别",
        "born": "出生日期",
        "latest": "最近检查",
        "result": "结果",
        "ai": "AI初步结果",
        "verified": "医师已复核",
        "guidance": "处理建议",
        "referral": "转诊",
        "no_referral": "无",
        "open": "查看",
        "no_patients": "暂无患者结果。",
        "imaging": "影像检查结果",
        "findings": "AI发现",
        "no_findings": "未见异常发现",
        "scores": "决策支持评分与血压（按时间）",
        "bp": "血压",
        "next_visit": "下次随访",
        "days": "天内",
        "cds_advice": "决策支持",
        "no_scores": "暂无决策支持记录。",
        "when": "时间",
        "advice": "转诊建议",
        "inputs": "依据（观察值与测量时间）",
        "history": "转诊记录",
        "no_history": "暂无转诊。",
        "reason": "转诊原因",
        "urgency": "紧急程度",
        "status": "状态",
        "plan": "上级医院随访方案（下转）",
        "status_reason": "说明",
        "back": "返回患者列表",
        "forbidden": "无权查看：该患者不属于您的机构。",
        "not_found": "未找到该患者。",
        "disclaimer": "AI结果与决策支持仅供参考，须由医生结合临床判断。",
        "study": "检查",
        "date": "日期",
        "refer_up": "发起上转",
        "refer_reason": "原因（病情、检查发现）",
        "refer_submit": "提交转诊申请",
        "referred": "已提交转诊申请。",
    },
    "en": {
        "app": "medgate primary care",
        "patients": "My patients",
        "signin": "Sign in",
        "signout": "Sign out",
        "signin_intro": "Sign in with your site's medgate access token.",
        "token": "Access token",
        "bad_token": "This token is not valid or may not see results.",
        "site": "Site",
        "all_sites": "all sites",
        "patient": "Patient",
        "sex": "Sex",
        "born": "Born",
        "latest": "Latest study",
        "result": "Result",
        "ai": "AI, preliminary",
        "verified": "Verified by a radiologist",
        "guidance": "What to do",
        "referral": "Referral",
        "no_referral": "none",
        "open": "Open",
        "no_patients": "No patient results yet.",
        "imaging": "Imaging results",
        "findings": "AI findings",
        "no_findings": "no abnormal finding",
        "scores": "Decision-support scores and blood pressure over time",
        "bp": "Blood pressure",
        "next_visit": "Next visit",
        "days": "days",
        "cds_advice": "Decision support",
        "no_scores": "No decision-support answer yet.",
        "when": "When",
        "advice": "Referral advice",
        "inputs": "Based on (observation, measured at)",
        "history": "Referral history",
        "no_history": "No referral.",
        "reason": "Reason",
        "urgency": "Urgency",
        "status": "Status",
        "plan": "Hospital's follow-up plan (back to the clinic)",
        "status_reason": "Note",
        "back": "Back to patients",
        "forbidden": "Not allowed: this patient belongs to another site.",
        "not_found": "No such patient.",
        "disclaimer": "AI results and decision support assist; the doctor decides.",
        "study": "Study",
        "date": "Date",
        "refer_up": "Refer to hospital",
        "refer_reason": "Reason (condition, findings)",
        "refer_submit": "Send referral",
        "referred": "Referral sent.",
    },
}
#: status / urgency / priority words shown on the pages
WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "requested": "已申请",
        "accepted": "已接收",
        "completed": "已完成（已下转）",
        "rejected": "已拒绝",
        "cancelled": "已撤回",
        "critical": "危急",
        "emergency": "急救",
        "stat": "立即",
        "urgent": "紧急",
        "asap": "尽快",
        "soon": "尽快",
        "routine": "常规",
        "none": "无",
        "F": "女",
        "M": "男",
        "O": "其他",
    },
    "en": {
        "requested": "requested",
        "accepted": "accepted",
        "completed": "completed (back to the clinic)",
        "rejected": "rejected",
        "cancelled": "withdrawn",
        "critical": "critical",
        "emergency": "emergency",
        "stat": "immediately",
        "urgent": "urgent",
        "asap": "as soon as possible",
        "soon": "soon",
        "routine": "routine",
        "none": "none",
        "F": "female",
        "M": "male",
        "O": "other",
    },
}


#: decision-support inputs as a doctor names them
INPUTS: dict[str, dict[str, str]] = {
    "zh": {
        "sbp_mmhg": "收缩压",
        "dbp_mmhg": "舒张压",
        "heart_rate": "心率",
        "respiratory_rate": "呼吸",
        "spo2": "血氧",
        "temperature_c": "体温",
        "total_cholesterol_mmol_l": "总胆固醇",
        "hdl_cholesterol_mmol_l": "HDL-C",
        "fasting_glucose_mmol_l": "空腹血糖",
        "random_glucose_mmol_l": "随机血糖",
        "hba1c_percent": "HbA1c",
        "waist_cm": "腰围",
        "current_smoker": "吸烟",
        "age": "年龄",
        "sex": "性别",
        "condition": "诊断",
        "male": "男",
        "female": "女",
        "True": "是",
        "False": "否",
        "38341003": "高血压",
        "44054006": "2型糖尿病",
        "46635009": "1型糖尿病",
        "73211009": "糖尿病",
    },
    "en": {
        "sbp_mmhg": "systolic BP",
        "dbp_mmhg": "diastolic BP",
        "heart_rate": "heart rate",
        "respiratory_rate": "respiratory rate",
        "spo2": "SpO2",
        "temperature_c": "temperature",
        "total_cholesterol_mmol_l": "total cholesterol",
        "hdl_cholesterol_mmol_l": "HDL-C",
        "fasting_glucose_mmol_l": "fasting glucose",
        "random_glucose_mmol_l": "random glucose",
        "hba1c_percent": "HbA1c",
        "waist_cm": "waist",
        "current_smoker": "smoker",
        "age": "age",
        "sex": "sex",
        "condition": "diagnosis",
        "male": "male",
        "female": "female",
        "True": "yes",
        "False": "no",
        "38341003": "hypertension",
        "44054006": "type 2 diabetes",
        "46635009": "type 1 diabetes",
        "73211009": "diabetes",
    },
}


#: imaging finding names (the models' SNOMED CT meanings) in Chinese; others stay as they are
FINDINGS_ZH = {
    "Nodule": "结节",
    "Pleural effusion": "胸腔积液",
    "Pneumothorax": "气胸",
    "Cardiomegaly": "心脏增大",
    "Consolidation": "实变",
    "Pneumonia": "肺炎",
    "Mass": "肿块",
    "Atelectasis": "肺不张",
}


def _lang(request: Request) -> str:
    wanted = request.query_params.get("lang")
    if wanted in TEXT:
        return wanted
    default = request.app.state.settings.review.language
    return default if default in TEXT else "zh"


def _context(request: Request, access: ClinicAccess | None, **extra: Any) -> dict[str, Any]:
    lang = _lang(request)
    return {
        "request": request,
        "lang": lang,
        "other_lang": "en" if lang == "zh" else "zh",
        "t": TEXT[lang],
        "w": WORDS[lang],
        "inputs": INPUTS[lang],
        "finding_names": FINDINGS_ZH if lang == "zh" else {},
        "access": access,
        "signed_in": access is not None and access.actor != "anonymous",
        **extra,
    }


def _audit(request: Request, access: ClinicAccess, page: str, patient_id: str | None) -> None:
    details: dict[str, Any] = {"page": page, "site": access.site or "*"}
    if patient_id is not None:
        details["patient"] = patient_id
    app_audit(request).record("clinic-view", actor=access.actor, details=details)


def _gate(request: Request) -> ClinicAccess | Response:
    """The viewer, or the response that sends them to sign in (or refuses them)."""
    try:
        return clinic_access(request)
    except NotSignedIn:
        lang = _lang(request)
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
        next_url = urllib.parse.quote(target)
        return RedirectResponse(f"/clinic/login?lang={lang}&next={next_url}", status_code=303)
    except NotAllowed as exc:
        return templates.TemplateResponse(
            request, "message.html", _context(request, None, message=str(exc)), status_code=403
        )


@router.get("", response_class=HTMLResponse)
async def patient_list(request: Request) -> Response:
    """The site's patients, urgent first, with the latest result, guidance and referral."""
    access = _gate(request)
    if isinstance(access, Response):
        return access
    settings = request.app.state.settings
    engine = request.app.state.index.engine
    found = await run_in_threadpool(patients, settings, engine, access.site)
    await run_in_threadpool(_audit, request, access, "patients", None)
    return templates.TemplateResponse(
        request, "patients.html", _context(request, access, patients=found)
    )


@router.get("/patients/{url_key}", response_class=HTMLResponse)
async def patient_page(request: Request, url_key: str) -> Response:
    """One patient: imaging results, decision-support scores over time, referral history."""
    access = _gate(request)
    if isinstance(access, Response):
        return access
    settings = request.app.state.settings
    engine = request.app.state.index.engine
    t = TEXT[_lang(request)]
    try:
        view = await run_in_threadpool(patient, settings, engine, access.site, url_key)
    except PatientHidden:
        context = _context(request, access, message=t["forbidden"])
        return templates.TemplateResponse(request, "message.html", context, status_code=403)
    if view is None:
        context = _context(request, access, message=t["not_found"])
        return templates.TemplateResponse(request, "message.html", context, status_code=404)
    await run_in_threadpool(_audit, request, access, "patient", view.patient_id)
    context = _context(
        request,
        access,
        p=view,
        scores=score_series(view.answers),
        referred=request.query_params.get("referred") == "1",
    )
    return templates.TemplateResponse(request, "patient.html", context)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return templates.TemplateResponse(
        request, "login.html", _context(request, None, next=request.query_params.get("next"))
    )


def _safe_next(value: str | None, lang: str) -> str:
    """Only a path inside /clinic (no open redirect to another site)."""
    if value and value.startswith("/clinic") and "//" not in value and "\\" not in value:
        return value
    return f"/clinic?lang={lang}"


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, token: str = Form(..., max_length=512), next: str | None = Form(None)
) -> Response:
    """Check the token like the API does and set the session cookie."""
    try:
        access = check_token(request, token.strip())
    except NotAllowed:
        access = None
    if access is None:
        context = _context(request, None, error=True, next=next)
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    value, max_age = session_cookie(request, token.strip())
    response = RedirectResponse(_safe_next(next, _lang(request)), status_code=303)
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/clinic",
    )
    return response


@router.get("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse(f"/clinic/login?lang={_lang(request)}", status_code=303)
    response.delete_cookie(COOKIE, path="/clinic")
    return response


@router.get("/launch")
def launch(request: Request) -> Response:
    """Where a CDS Hooks card's SMART link lands: the patient's page (``appContext``
    ``patient=<key>``) or the list. The EHR's SMART authorisation is not exchanged here (no EHR
    authorisation server is reachable); the clinic session applies as on every page."""
    context = request.query_params.get("appContext") or ""
    fields = urllib.parse.parse_qs(context)
    key = (fields.get("patient") or [""])[0]
    lang = _lang(request)
    if key and key.isalnum():
        return RedirectResponse(f"/clinic/patients/{key}?lang={lang}", status_code=303)
    return RedirectResponse(f"/clinic?lang={lang}", status_code=303)


@router.post("/patients/{url_key}/refer")
async def refer_patient(
    request: Request,
    url_key: str,
    reason: str = Form(..., min_length=1, max_length=2000),
    urgency: str = Form("routine"),
) -> Response:
    """Refer the patient up from their page: the latest result and scores go as evidence."""
    access = _gate(request)
    if isinstance(access, Response):
        return access
    if urgency not in ("routine", "urgent", "asap", "stat"):
        return HTMLResponse(f"unknown urgency {urgency!r}", status_code=422)
    settings = request.app.state.settings
    try:
        view = await run_in_threadpool(
            patient, settings, request.app.state.index.engine, access.site, url_key
        )
    except PatientHidden:
        view = None
    if view is None or access.site is None or view.site != access.site:
        t = TEXT[_lang(request)]
        context = _context(request, access, message=t["forbidden"])
        return templates.TemplateResponse(request, "message.html", context, status_code=403)
    request.state.clinic_actor = access.actor
    new = NewReferral(
        site=access.site,
        patient_id=view.patient_id,
        patient_key=view.key,
        urgency=urgency,  # type: ignore[arg-type]
        reason=reason.strip(),
        requester=access.actor,
        evidence=clinic_evidence(view),
        study_instance_uid=view.latest_study.uid if view.latest_study else None,
        origin="api",
    )
    await run_in_threadpool(open_referral, request, new)
    return RedirectResponse(
        f"/clinic/patients/{url_key}?lang={_lang(request)}&referred=1", status_code=303
    )


def clinic_evidence(view: PatientView) -> list[Evidence]:
    """The latest study's present findings and the latest decision-support scores."""
    evidence: list[Evidence] = []
    study = view.latest_study
    if study is not None:
        evidence.append(
            Evidence("study", study.header.study_description or "imaging", None, study.uid)
        )
        for f in study.findings[:5]:
            name = (f.get("finding_type") or {}).get("meaning") or str(f.get("label"))
            p = f.get("probability")
            evidence.append(Evidence("finding", name, f"{p:.0%}" if p is not None else None))
    if view.answers:
        scores = view.answers[-1].scores
        if "news2" in scores:
            evidence.append(Evidence("score", "NEWS2", str(scores["news2"]["score"])))
        par = scores.get("china_par") or {}
        if par.get("risk_10y_percent") is not None:
            evidence.append(Evidence("score", "China-PAR 10y", f"{par['risk_10y_percent']:.1f}%"))
    return evidence
