"""Fixtures of the referral tests: two sites with their own tokens, and the hospital's token."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
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
