"""Who is looking at ``/clinic``: the API's bearer tokens, carried by a signed session cookie.

A browser cannot send ``Authorization: Bearer`` on a link, so signing in with a token sets a
cookie that names the token only by its keyed hash, with an expiry, under an HMAC of
``audit.hash_key``; each request finds the token again by that hash, so the page follows the
same rules as the API: the ``results`` (or ``admin``) scope is needed, a site-scoped token sees
only its own site, and removing a token from the config ends its sessions at once. A bearer
header works too. With no tokens and no CDS JWT issuers configured (the embedded demo on
loopback) the pages are open, as the API is; a CDS client's JWT never opens them (it grants
``cds`` only).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from hashlib import sha256

from fastapi import Request

from medgate.core.logs import phi_hash

COOKIE = "medgate_clinic"
SCOPE = "results"


@dataclass(frozen=True)
class ClinicAccess:
    """A signed-in viewer: their token's site (None: every site) and how they are audited."""

    site: str | None
    actor: str


class NotSignedIn(Exception):
    """No valid session or bearer token."""


class NotAllowed(Exception):
    """A valid token without the scope the pages need."""


def _key(request: Request) -> str:
    return str(request.app.state.settings.audit.hash_key)


def _tokens(request: Request) -> dict[str, list[str]]:
    return getattr(request.app.state, "api_tokens", {}) or {}


def _access_for(request: Request, token: str) -> ClinicAccess:
    scopes = _tokens(request)[token]
    if SCOPE not in scopes and "admin" not in scopes:
        raise NotAllowed(f"this token lacks the '{SCOPE}' scope")
    site = getattr(request.app.state, "token_sites", {}).get(token)
    return ClinicAccess(site=site, actor="token:" + phi_hash(token, _key(request)))


def check_token(request: Request, presented: str) -> ClinicAccess | None:
    """The access a presented token grants, or None when it is not a configured token."""
    for token in _tokens(request):
        if hmac.compare_digest(token.encode(), presented.encode()):
            return _access_for(request, token)
    return None


def _mac(key: str, body: str) -> str:
    return hmac.new(key.encode(), body.encode(), sha256).hexdigest()


def session_cookie(request: Request, token: str) -> tuple[str, int]:
    """(cookie value, max age in seconds) for a signed-in token."""
    hours = float(request.app.state.settings.review.session_hours)
    expires = int(time.time() + hours * 3600)
    body = f"{phi_hash(token, _key(request))}|{expires}"
    return f"{body}|{_mac(_key(request), body)}", int(hours * 3600)


def clinic_access(request: Request) -> ClinicAccess:
    """The viewer of this request (raises NotSignedIn / NotAllowed)."""
    if not _tokens(request) and not request.app.state.settings.api.cds_jwt_issuers:
        return ClinicAccess(site=None, actor="anonymous")  # the API is open: so are the pages
    kind, _, presented = request.headers.get("authorization", "").partition(" ")
    if kind.lower() == "bearer" and presented.strip():
        access = check_token(request, presented.strip())
        if access is None:
            raise NotSignedIn("unknown bearer token")
        return access
    value = request.cookies.get(COOKIE, "")
    token_hash, _, rest = value.partition("|")
    expires, _, mac = rest.partition("|")
    body = f"{token_hash}|{expires}"
    if not value or not hmac.compare_digest(mac, _mac(_key(request), body)):
        raise NotSignedIn("no session")
    if not expires.isdigit() or int(expires) < time.time():
        raise NotSignedIn("session expired")
    for token in _tokens(request):
        if hmac.compare_digest(phi_hash(token, _key(request)), token_hash):
            return _access_for(request, token)
    raise NotSignedIn("the session's token is no longer configured")
