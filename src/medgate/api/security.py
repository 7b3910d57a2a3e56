"""HTTP access control: bearer tokens from ``api.tokens``, and CDS Hooks client JWTs.

Scopes: ``cds`` (decision support), ``results`` (studies, worklist, models, inference), ``fhir``
(the FHIR endpoints), ``review`` (the radiologist's /review pages and verdicts) and ``admin``
(everything). With no tokens and no JWT issuers configured the API is open: ``medgate serve``
allows that on loopback only, or with ``api.allow_anonymous`` (core/serve_checks.py). ``/healthz``
is always open.

CDS Hooks clients (an EHR) authenticate the way the CDS Hooks specification asks: each request
carries ``Authorization: Bearer <JWT>`` signed with the client's private key (ES384 or RS384, other
RSA/EC variants accepted, never ``none`` or a shared-secret HMAC), with ``iss``, ``aud`` (this
service's URL), ``exp``, ``iat`` and a unique ``jti``. The service trusts an issuer only when
``api.cds_jwt_issuers`` maps it to its public key or JWK Set file (no keys fetched at run time:
the gateway runs without outside network). A valid client JWT grants the ``cds`` scope only.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import jwt
from fastapi import HTTPException, Request, status

SCOPES = ("cds", "results", "fhir", "review", "admin")
JWT_ALGORITHMS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384", "PS256")
CLOCK_SKEW_S = 30


class TokenError(Exception):
    """A bearer JWT that is not accepted; the message is safe to return to the client."""


class CdsJwtVerifier:
    """Validates CDS Hooks client JWTs against pre-registered issuer keys; rejects replays."""

    def __init__(
        self,
        issuers: Mapping[str, str | Path],
        audience: str | None = None,
        max_age_s: int = 300,
    ) -> None:
        self.audience = audience
        self.max_age_s = max_age_s
        self._keys: dict[str, dict[str | None, Any]] = {
            iss: _load_keys(Path(path)) for iss, path in issuers.items()
        }
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is genuine, current, for us and not seen before."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError("malformed JWT") from exc
        alg = header.get("alg")
        if alg not in JWT_ALGORITHMS:
            raise TokenError(f"JWT algorithm {alg!r} is not accepted")
        issuer = unverified.get("iss")
        keys = self._keys.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise TokenError("JWT issuer is not registered")
        key = keys.get(header.get("kid")) or (keys.get(None) if len(keys) == 1 else None)
        if key is None:
            raise TokenError("no registered key matches the JWT's kid")
        required = ["iss", "exp", "iat", "jti"] + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("JWT expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("JWT audience is not this service") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"JWT rejected: {exc}") from exc
        if float(claims["exp"]) - float(claims["iat"]) > self.max_age_s + CLOCK_SKEW_S:
            raise TokenError("JWT lifetime is longer than allowed")
        self._check_replay(f"{issuer}\x00{claims['jti']}", float(claims["exp"]))
        return claims

    def _check_replay(self, jti: str, expires: float) -> None:
        now = time.time()
        with self._lock:
            for seen, until in list(self._seen.items()):
                if until + CLOCK_SKEW_S < now:
                    del self._seen[seen]
            if jti in self._seen:
                raise TokenError("JWT replayed (jti already used)")
            self._seen[jti] = expires


def _load_keys(path: Path) -> dict[str | None, Any]:
    """kid -> public key from a PEM public key or a JWK Set / single JWK (JSON) file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"CDS JWT key file {path} cannot be read: {exc.strerror}") from exc
    if data.lstrip().startswith(b"{"):
        document = json.loads(data)
        jwks = document.get("keys", [document])
        keys: dict[str | None, Any] = {}
        for item in jwks:
            jwk = jwt.PyJWK(item)
            keys[item.get("kid")] = jwk.key
        if not keys:
            raise ValueError(f"CDS JWT key file {path} holds no keys")
        return keys
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return {None: load_pem_public_key(data)}
    except ValueError as exc:
        raise ValueError(f"CDS JWT key file {path} is not a PEM public key or JWK Set") from exc


def _verifier(request: Request) -> CdsJwtVerifier | None:
    """The app's JWT verifier, built once from ``settings.api`` (None when none configured)."""
    state = request.app.state
    verifier = getattr(state, "cds_jwt_verifier", None)
    if verifier is not None:
        return verifier
    settings = getattr(state, "settings", None)
    api = getattr(settings, "api", None)
    issuers = getattr(api, "cds_jwt_issuers", None) or {}
    if api is None or not issuers:
        return None
    verifier = CdsJwtVerifier(issuers, api.cds_jwt_audience, api.cds_jwt_max_age_s)
    state.cds_jwt_verifier = verifier
    return verifier


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def require_scope(scope: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency: 401 without a valid token, 403 when the token lacks ``scope``.

    A coroutine, so FastAPI runs it on the event loop: the check is a few comparisons (and at
    most one signature check), cheaper than the thread-pool hop a plain function would cost on
    every request."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(request: Request) -> None:
        tokens: dict[str, list[str]] = getattr(request.app.state, "api_tokens", {}) or {}
        verifier = _verifier(request)
        if not tokens and verifier is None:
            return
        header = request.headers.get("authorization", "")
        kind, _, presented = header.partition(" ")
        presented = presented.strip()
        if kind.lower() != "bearer" or not presented:
            raise _unauthorized("a bearer token is required")
        granted: list[str] | None = None
        for token, scopes in tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                granted = scopes
                # [[sites]] tokens see one site only (medgate.delivery.sites)
                request.state.token_site = getattr(request.app.state, "token_sites", {}).get(token)
                break
        if granted is None and verifier is not None and presented.count(".") == 2:
            try:
                claims = verifier.verify(presented)
            except TokenError as exc:
                raise _unauthorized(str(exc)) from exc
            request.state.cds_client = claims.get("iss")
            granted = ["cds"]
        if granted is None:
            raise _unauthorized("unknown bearer token")
        if scope not in granted and "admin" not in granted:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the '{scope}' scope")

    return check
