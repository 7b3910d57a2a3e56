"""The reviewer's pages: ``/review`` (worklist), ``/review/{study_uid}`` (one study), sign-in.

Server-rendered with Jinja2; the study page posts its verdicts as JSON to
``POST /api/v1/studies/{uid}/review`` (the same endpoint other clients use) from a small script,
with the session cookie for access. Images are the overlay secondary captures medgate wrote
(mask outlines and heat maps burned in), served as PNGs.
"""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from PIL import Image

from medgate.api.pages.i18n import TEXT, pick
from medgate.api.pages.session import (
    COOKIE,
    ReviewAccess,
    issue_cookie,
    open_access,
    review_access,
    token_may_review,
)
from medgate.review.board import BoardFilters, board
from medgate.store.notifications import NotificationStore
from medgate.store.reviews import ReviewStore

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: the review pages, then the page skeleton they share with the clinic pages
templates = Jinja2Templates(directory=[HERE / "templates", HERE.parent / "templates"])


def _replace_lang(params: Any, lang: str) -> str:
    """The current query string with ``lang`` set (the language switch link)."""
    items = [(k, v) for k, v in params.multi_items() if k != "lang"]
    return urllib.parse.urlencode([*items, ("lang", lang)])


templates.env.filters["replace_lang"] = _replace_lang
pages = APIRouter(prefix="/review", tags=["review pages"], include_in_schema=False)

PRIORITIES = ("critical", "urgent", "routine")


def _lang(request: Request, lang: str | None) -> str:
    return pick(lang, request.app.state.settings.review.language)


def _context(
    request: Request, lang: str, access: ReviewAccess | None, **extra: Any
) -> dict[str, Any]:
    return {
        "request": request,
        "lang": lang,
        "other_lang": "en" if lang == "zh" else "zh",
        "t": TEXT[lang],
        "access": access,
        "open": open_access(request),
        **extra,
    }


def _login_redirect(request: Request, lang: str) -> RedirectResponse:
    target = urllib.parse.quote(
        str(request.url.path) + ("?" + request.url.query if request.url.query else "")
    )
    return RedirectResponse(f"/review/login?lang={lang}&next={target}", status_code=303)


def _age(minutes: float, t: dict[str, str]) -> str:
    if minutes < 120:
        return f"{minutes:.0f} {t['minutes']}"
    return f"{minutes / 60:.1f} {t['hours']}"


@pages.get("/login", response_class=HTMLResponse)
def login_page(request: Request, lang: str | None = None, next: str = "/review") -> Response:
    language = _lang(request, lang)
    return templates.TemplateResponse(
        request, "login.html", _context(request, language, None, next=next, error=None)
    )


@pages.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    token: str = Form(...),
    name: str = Form(...),
    reviewer_id: str = Form(...),
    next: str = Form("/review"),
    lang: str = Form("zh"),
) -> Response:
    """Exchange a review token for a session cookie that also carries who the reviewer is."""
    language = _lang(request, lang)
    if not token_may_review(request, token.strip()) or not name.strip() or not reviewer_id.strip():
        context = _context(request, language, None, next=next, error=TEXT[language]["bad_token"])
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    target = next if next.startswith("/review") else "/review"
    response = RedirectResponse(target, status_code=303)
    hours = request.app.state.settings.review.session_hours
    cookie = issue_cookie(request, token.strip(), name.strip(), reviewer_id.strip(), hours)
    response.set_cookie(
        COOKIE, cookie, max_age=int(hours * 3600), httponly=True, samesite="strict", path="/"
    )
    return response


@pages.get("/logout")
def logout(lang: str | None = None) -> Response:
    response = RedirectResponse(f"/review/login?lang={lang or ''}", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@pages.get("/ack/{token}", response_class=HTMLResponse)
def ack_page(request: Request, token: str, lang: str | None = None) -> Response:
    """The link in a critical-result message: one button that acknowledges it (the token in the
    link is the credential; a GET never changes anything, so link previews cannot ack)."""
    language = _lang(request, lang)
    item = NotificationStore(request.app.state.index.engine).by_token(token)
    if item is None:
        raise HTTPException(404, "no such notification")
    return templates.TemplateResponse(
        request, "ack.html", _context(request, language, None, item=item, done=False)
    )


@pages.post("/ack/{token}", response_class=HTMLResponse)
def ack(request: Request, token: str, lang: str = Form("zh")) -> Response:
    language = _lang(request, lang)
    store = NotificationStore(request.app.state.index.engine)
    item = store.acknowledge(token=token, by="link")
    if item is None:
        raise HTTPException(404, "no such notification")
    from medgate.api.routes_review import audit_log

    audit_log(request).record(
        "critical-acknowledged",
        actor="ack-link",
        study_uid=item.study_instance_uid,
        details={"notification": item.id, "channel": item.channel},
    )
    return templates.TemplateResponse(
        request, "ack.html", _context(request, language, None, item=item, done=True)
    )


@pages.get("", response_class=HTMLResponse)
def worklist_page(
    request: Request,
    lang: str | None = None,
    site: str | None = None,
    modality: str | None = None,
    priority: str | None = None,
    reviewed: str | None = None,
) -> Response:
    """Studies by priority then arrival, with their AI findings, age and review state."""
    language = _lang(request, lang)
    access = review_access(request)
    if access is None:
        return _login_redirect(request, language)
    settings = request.app.state.settings
    filters = BoardFilters(
        site=site or None,
        modality=modality or None,
        priority=priority if priority in PRIORITIES else None,
        reviewed={"yes": True, "no": False}.get(reviewed or ""),
    )
    rows = board(request.app.state.index, settings, filters)
    context = _context(
        request,
        language,
        access,
        rows=rows,
        filters={
            "site": site or "",
            "modality": modality or "",
            "priority": priority or "",
            "reviewed": reviewed or "",
        },
        sites=[s.name for s in settings.sites],
        modalities=sorted(
            {
                m
                for r in board(request.app.state.index, settings)
                for m in r.modality.split("/")
                if m
            }
        ),
        priorities=PRIORITIES,
        age=lambda minutes: _age(minutes, TEXT[language]),
    )
    return templates.TemplateResponse(request, "worklist.html", context)


def _images(request: Request, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> file of what the study page shows: medgate's overlays (outlines and
    heat maps burned in) first, then the source images of the study."""
    index = request.app.state.index
    shown = {
        i.sop_instance_uid: i.path
        for i in index.outbox.list(study_uid=study_uid)
        if i.kind == "overlay"
    }
    for record in index.instances.of_study(study_uid):
        if (record.modality or "") not in ("SR", "SEG", "KO", "PR"):
            shown.setdefault(record.sop_instance_uid, record.path)
    return shown


def _png(path: str) -> bytes:
    ds = pydicom.dcmread(path)
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame: its middle frame
    if pixels.dtype != np.uint8 or pixels.ndim == 2:
        from pydicom.pixels import apply_voi_lut

        if pixels.ndim == 2:
            pixels = apply_voi_lut(pixels, ds)
        low, high = float(np.min(pixels)), float(np.max(pixels))
        pixels = ((pixels - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            pixels = 255 - pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _plot_points(values: list[float], width: int = 360, height: int = 120) -> str:
    """SVG polyline points for rates in [0, 1] (the stats page's small plots)."""
    if not values:
        return ""
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - v * height:.1f}" for i, v in enumerate(values))


@pages.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, lang: str | None = None) -> Response:
    """Per model version: sensitivity, PPV, time to review, and the confirmed rate over time
    against the validation PPV (the drift alarm)."""
    from medgate.api.routes_review import review_figures

    language = _lang(request, lang)
    access = review_access(request)
    if access is None:
        return _login_redirect(request, language)
    settings = request.app.state.settings
    figures = review_figures(request.app.state)
    plots = {
        (f.bundle, f.version): _plot_points(f.rolling_confirmed_rate(settings.review.drift_window))
        for f in figures
    }
    context = _context(
        request,
        language,
        access,
        figures=figures,
        plots=plots,
        window=settings.review.drift_window,
        margin=settings.review.drift_margin,
    )
    return templates.TemplateResponse(request, "stats.html", context)


@pages.get("/{study_instance_uid}", response_class=HTMLResponse)
def study_page(request: Request, study_instance_uid: str, lang: str | None = None) -> Response:
    """One study: overlay images, each finding with its verdict controls, the report text."""
    language = _lang(request, lang)
    access = review_access(request)
    if access is None:
        return _login_redirect(request, language)
    row = request.app.state.index.studies.get(study_instance_uid)
    if row is None:
        raise HTTPException(404, f"no study with StudyInstanceUID {study_instance_uid}")
    result = row.result or {}
    findings = sorted(
        result.get("findings") or [],
        key=lambda f: (not f.get("present"), -float(f.get("probability") or 0)),
    )
    review = ReviewStore(request.app.state.index.engine).latest(study_instance_uid)
    verdicts = {v["finding"]: v for v in review.verdicts} if review is not None else {}
    context = _context(
        request,
        language,
        access,
        study=row,
        findings=findings,
        measurements=result.get("measurements") or [],
        guidance=result.get("guidance") or [],
        models=result.get("models") or [],
        overlays=list(_images(request, study_instance_uid)),
        review=review,
        verdicts=verdicts,
        has_results=bool(findings)
        and any(o.get("kind") == "sr" for o in result.get("result_objects") or []),
    )
    return templates.TemplateResponse(request, "study.html", context)


@pages.get("/{study_instance_uid}/images/{sop_instance_uid}.png")
def image_png(request: Request, study_instance_uid: str, sop_instance_uid: str) -> Response:
    """An overlay or source image of the study as a PNG (what the study page shows)."""
    if review_access(request) is None:
        raise HTTPException(401, "sign in to /review first")
    path = _images(request, study_instance_uid).get(sop_instance_uid)
    if path is None or not Path(path).exists():
        raise HTTPException(404, "no such image in this study")
    try:
        data = _png(path)
    except Exception as exc:  # pydicom/numpy raise many kinds on pixel data they cannot decode
        raise HTTPException(422, f"the image cannot be rendered: {exc}") from exc
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
