"""Fixtures of the referral tests: two sites with their own tokens, and the hospital's token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medgate.api.app import create_app
from medgate.core.config import NotifyConfig, Settings, SiteConfig

REPO = Path(__file__).resolve().parents[2]

HOSPITAL = {"Authorization": "Bearer hospital-token"}
SITE_A = {"Authorization": "Bearer site-a-token"}
SITE_B = {"Authorization": "Bearer site-b-token"}
CDS = {"Authorization": "Bearer cds-token"}


def referral_settings(factory: Callable[..., Settings]) -> Settings:
    base = factory(
        models={"path": str(REPO / "models")},
        api={"tokens": {"hospital-token": ["results", "fhir"], "cds-token": ["cds"]}},
    )
    sites = [
        {
            "name": "clinic-a",
            "calling_aes": ["CLINIC_A"],
            "notify_channels": ["clinic-a-mail"],
            "tokens": {"site-a-token": ["results", "fhir", "cds"]},
        },
        {
            "name": "clinic-b",
            "calling_aes": ["CLINIC_B"],
            "tokens": {"site-b-token": ["results", "fhir", "cds"]},
        },
    ]
    notify = {
        "channels": [
            {
                "name": "clinic-a-mail",
                "kind": "smtp",
                "site": "clinic-a",
                "role": "clinic",
                "mail_to": ["doctor@clinic-a.example"],
            },
            {
                "name": "referral-desk",
                "kind": "webhook",
                "role": "hospital",
                "url": "http://127.0.0.1:9/referrals",
            },
        ]
    }
    return base.model_copy(
        update={
            "sites": [SiteConfig.model_validate(s) for s in sites],
            "notify": NotifyConfig.model_validate(notify),
        }
    )


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return referral_settings(settings_factory)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
