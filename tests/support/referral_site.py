"""The referral tests' site: the hospital's and two clinics' bearer headers, and settings with the
two clinic sites (their calling AEs and tokens) and the notification channels they are told on."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.paths import MODELS

from medgate.core.config import NotifyConfig, Settings, SiteConfig

HOSPITAL = {"Authorization": "Bearer hospital-token"}
SITE_A = {"Authorization": "Bearer site-a-token"}
SITE_B = {"Authorization": "Bearer site-b-token"}


def referral_settings(factory: Callable[..., Settings]) -> Settings:
    base = factory(
        models={"path": str(MODELS)},
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
