"""Fixtures of the /clinic tests: two sites' studies, decision-support answers and a referral
that went up and came back down, on the referral tests' settings (tokens, sites, channels)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.clinic_data import ClinicData, populate
from tests.support.referral_site import referral_settings

from medgate.api.app import create_app
from medgate.core.config import Settings


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return referral_settings(settings_factory)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def data(client: TestClient, settings: Settings) -> ClinicData:
    return populate(client, settings)
