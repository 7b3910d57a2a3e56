"""Fixtures for the delivery tests: two clinics' HIS listeners, sites settings, a migrated store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from medgate.core.config import Settings
from medgate.store.migrations import upgrade
from medgate.trust.audit import AuditLog

from .delivery_support import ADMIN, RESULTS_ONLY, TOKEN_A, TOKEN_B
from .his_listener import MllpHis


@pytest.fixture
def his_a() -> Iterator[MllpHis]:
    his = MllpHis().start()
    yield his
    his.stop()


@pytest.fixture
def his_b() -> Iterator[MllpHis]:
    his = MllpHis().start()
    yield his
    his.stop()


def sites_config(port_a: int, port_b: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "clinic-a",
            "calling_aes": ["CLINIC_A_CT"],
            "hl7": {"host": "127.0.0.1", "port": port_a, "receiving_facility": "CLINIC_A"},
            "tokens": {TOKEN_A: ["results", "fhir"]},
        },
        {
            "name": "clinic-b",
            "calling_aes": ["CLINIC_B_DX"],
            "hl7": {"host": "127.0.0.1", "port": port_b},
            "tokens": {TOKEN_B: ["results", "fhir"]},
        },
    ]


@pytest.fixture
def sites_settings(
    settings_factory: Callable[..., Settings], his_a: MllpHis, his_b: MllpHis
) -> Settings:
    base = settings_factory(
        api={"tokens": {ADMIN: ["admin"], RESULTS_ONLY: ["results"]}},
        delivery={
            "hl7": {
                "max_attempts": 2,
                "backoff_seconds": 0.01,
                "backoff_max_seconds": 0.05,
                "ack_timeout_s": 5,
                "connect_timeout_s": 2,
            }
        },
    )
    return base.model_copy(
        update={"sites": Settings(sites=sites_config(his_a.port, his_b.port)).sites}
    )


@pytest.fixture
def engine(sites_settings: Settings) -> Iterator[sa.engine.Engine]:
    Path(sites_settings.storage.path).mkdir(parents=True, exist_ok=True)
    made = sa.create_engine(sites_settings.storage.resolved_database_url())
    upgrade(made)
    yield made
    made.dispose()


@pytest.fixture
def audit(sites_settings: Settings) -> AuditLog:
    return AuditLog(sites_settings.audit_path, sites_settings.audit.hash_key)
