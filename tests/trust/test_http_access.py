"""HTTP access control: static bearer tokens with scopes, and CDS Hooks client JWTs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from medgate.api.app import create_app
from medgate.api.security import CdsJwtVerifier, require_scope
from medgate.store.db import Index

TOKENS = {"tok-results": ["results"], "tok-cds": ["cds"], "tok-admin": ["admin"]}


@pytest.fixture
def api(settings_factory: Callable) -> TestClient:
    settings = settings_factory(api={"tokens": TOKENS})
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    with TestClient(create_app(settings, index)) as client:
        yield client
    index.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_scopes_on_results(api: TestClient) -> None:
    assert api.get("/api/v1/studies").status_code == 401
    assert api.get("/api/v1/studies").headers["www-authenticate"] == "Bearer"
    assert api.get("/api/v1/studies", headers={"Authorization": "Basic abc"}).status_code == 401
    assert api.get("/api/v1/studies", headers=bearer("no-such-token")).status_code == 401
    wrong = api.get("/api/v1/studies", headers=bearer("tok-cds"))
    assert wrong.status_code == 403 and "results" in wrong.json()["detail"]
    assert api.get("/api/v1/studies", headers=bearer("tok-results")).status_code == 200
    assert api.get("/api/v1/studies", headers=bearer("tok-admin")).status_code == 200
    missing = api.get("/api/v1/studies/1.2.3.4", headers=bearer("tok-results"))
    assert missing.status_code == 404


def test_healthz_stays_open(api: TestClient) -> None:
    assert api.get("/healthz").status_code == 200


def test_no_tokens_means_open(settings_factory: Callable) -> None:
    settings = settings_factory()
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    with TestClient(create_app(settings, index)) as client:
        assert client.get("/api/v1/studies").status_code == 200
    index.close()


# ------------------------------------------------------------------ CDS Hooks JWT

AUDIENCE = "https://medgate.example/cds-services"
ISSUER = "https://ehr.example"


def jwk_file(tmp_path: Path, key: Any, kid: str) -> Path:
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": kid, "use": "sig", "alg": "ES384"})
    path = tmp_path / "ehr-jwks.json"
    path.write_text(json.dumps({"keys": [public]}))
    return path


def client_jwt(key: Any, *, kid: str = "k1", alg: str = "ES384", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "ehr-client",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def cds_app(settings_factory: Callable, tmp_path: Path):
    key = ec.generate_private_key(ec.SECP384R1())
    settings = settings_factory(
        api={
            "tokens": {"tok-results": ["results"]},
            "cds_jwt_issuers": {ISSUER: str(jwk_file(tmp_path, key, "k1"))},
            "cds_jwt_audience": AUDIENCE,
        }
    )
    app = FastAPI()
    app.state.settings = settings
    app.state.api_tokens = settings.api.tokens

    @app.post("/cds-services/demo", dependencies=[Depends(require_scope("cds"))])
    def demo() -> dict[str, list[str]]:
        return {"cards": []}

    @app.get("/results", dependencies=[Depends(require_scope("results"))])
    def results() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        yield client, key


def test_cds_client_jwt_accepted_once(cds_app) -> None:
    client, key = cds_app
    token = client_jwt(key)
    assert client.post("/cds-services/demo", headers=bearer(token)).status_code == 200
    replay = client.post("/cds-services/demo", headers=bearer(token))
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    # a CDS client JWT grants 'cds' only
    assert client.get("/results", headers=bearer(client_jwt(key))).status_code == 403
    assert client.get("/results", headers=bearer("tok-results")).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "https://other.example"}, "audience"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 700}, "expired"),
        ({"iss": "https://unknown.example"}, "issuer"),
        ({"jti": None}, "jti"),
        ({"exp": int(time.time()) + 86400}, "lifetime"),
    ],
)
def test_cds_client_jwt_refused(cds_app, overrides: dict, reason: str) -> None:
    client, key = cds_app
    response = client.post("/cds-services/demo", headers=bearer(client_jwt(key, **overrides)))
    assert response.status_code == 401
    assert reason in response.json()["detail"]


def test_cds_jwt_wrong_key_alg_or_kid(cds_app) -> None:
    client, _ = cds_app
    stranger = ec.generate_private_key(ec.SECP384R1())
    forged = client.post("/cds-services/demo", headers=bearer(client_jwt(stranger)))
    assert forged.status_code == 401
    hs = jwt.encode({"iss": ISSUER, "aud": AUDIENCE}, "secret" * 8, algorithm="HS256")
    refused = client.post("/cds-services/demo", headers=bearer(hs))
    assert refused.status_code == 401 and "algorithm" in refused.json()["detail"]
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE}, None, algorithm="none")
    assert client.post("/cds-services/demo", headers=bearer(unsigned)).status_code == 401
    other_kid = client_jwt(stranger, kid="k2")
    assert client.post("/cds-services/demo", headers=bearer(other_kid)).status_code == 401


def test_pem_public_key_rs384(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "ehr.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = CdsJwtVerifier({ISSUER: pem}, AUDIENCE)
    claims = verifier.verify(client_jwt(key, alg="RS384"))
    assert claims["iss"] == ISSUER
    with pytest.raises(ValueError, match="cannot be read"):
        CdsJwtVerifier({ISSUER: tmp_path / "missing.pem"})
