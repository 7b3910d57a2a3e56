"""HTTP access control: bearer tokens from ``api.tokens``, each with scopes.

Scopes: ``cds`` (decision support), ``results`` (studies, worklist, models, inference) and ``admin``
(everything). With no tokens configured the API is open (the embedded demo on loopback); a site
that exposes the API configures tokens. ``/healthz`` is always open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request, status

SCOPES = ("cds", "results", "admin")


def require_scope(scope: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 without a valid token, 403 when the token lacks ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(request: Request) -> None:
        tokens: dict[str, list[str]] = getattr(request.app.state, "api_tokens", {}) or {}
        if not tokens:
            return
        header = request.headers.get("authorization", "")
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        granted: list[str] | None = None
        for token, scopes in tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                granted = scopes
                break
        if granted is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in granted and "admin" not in granted:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the '{scope}' scope")

    return check
