"""Fixtures for the delivery tests: two clinics' HIS listeners, sites settings, a migrated store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.support.delivery_studies import ADMIN, RESULTS_ONLY, sites_config
from tests.support.his_listener import MllpHis

from medgate.core.config import Settings
from medgate.store.migrations import upgrade
from medgate.trust.audit import AuditLog


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
