"""Who may review: a bearer token with the ``review`` (or ``admin``) scope, or a session cookie
issued from one on ``/review/login``.

The cookie carries the token's fingerprint (never the token), the reviewer's name and id, and an
expiry, signed with HMAC-SHA256 under a key made when the application starts (a restart logs
everyone out). It is checked against the configured tokens on every request, so removing a token
ends its sessions too. With no tokens configured the API is open (loopback demo) and so are the
pages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from medgate.core.logs import phi_hash

COOKIE = "medgate_review"
REVIEW_SCOPES = ("review", "admin")


@dataclass(frozen=True)
class ReviewAccess:
    """How the caller got in (for the audit trail) and, from a session, who they said they are."""

    via: str
    name: str = ""
    reviewer_id: str = ""


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _key(request: Request) -> bytes:
    state = request.app.state
    key = getattr(state, "review_session_key", None)
    if key is None:
        key = secrets.token_bytes(32)
        state.review_session_key = key
    return bytes(key)


def _tokens(request: Request) -> dict[str, list[str]]:
    return dict(getattr(request.app.state, "api_tokens", {}) or {})


def open_access(request: Request) -> bool:
    """True when no token is configured (the API and the pages are open)."""
    return not _tokens(request)


def token_may_review(request: Request, token: str) -> bool:
    for known, scopes in _tokens(request).items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return any(s in scopes for s in REVIEW_SCOPES)
    return False


def issue_cookie(request: Request, token: str, name: str, reviewer_id: str, hours: float) -> str:
    body = {
        "fp": _fingerprint(token),
        "name": name,
        "id": reviewer_id,
        "exp": int(time.time() + hours * 3600),
    }
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
    mac = hmac.new(_key(request), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def _from_cookie(request: Request) -> ReviewAccess | None:
    raw = request.cookies.get(COOKIE, "")
    payload, _, mac = raw.rpartition(".")
    if not payload:
        return None
    expected = hmac.new(_key(request), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if int(body.get("exp", 0)) < time.time():
        return None
    for token, scopes in _tokens(request).items():
        if _fingerprint(token) == body.get("fp") and any(s in scopes for s in REVIEW_SCOPES):
            return ReviewAccess(
                f"session:{body['fp'][:12]}", body.get("name", ""), body.get("id", "")
            )
    return None


def review_access(request: Request) -> ReviewAccess | None:
    """The caller's access, or None when neither a review token nor a valid session is shown."""
    if open_access(request):
        return ReviewAccess("open")
    header = request.headers.get("authorization", "")
    kind, _, presented = header.partition(" ")
    if kind.lower() == "bearer" and presented.strip():
        token = presented.strip()
        if token_may_review(request, token):
            return ReviewAccess("token:" + phi_hash(token, _audit_key(request)))
        return None
    return _from_cookie(request)


def _audit_key(request: Request) -> str | None:
    settings = getattr(request.app.state, "settings", None)
    return getattr(getattr(settings, "audit", None), "hash_key", None)


async def require_review(request: Request) -> ReviewAccess:
    """FastAPI dependency for the JSON API: 401 without review access."""
    access = review_access(request)
    if access is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token with the 'review' scope (or a review session) is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return access


#: A JSON route's parameter that admits only callers with review access.
Reviewer = Annotated[ReviewAccess, Depends(require_review)]
