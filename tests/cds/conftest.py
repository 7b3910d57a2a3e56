"""Fixtures of the decision-support tests: the app on temporary storage with the repo's bundles."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.paths import MODELS

from medgate.api.app import create_app
from medgate.core.config import Settings


@pytest.fixture
def cds_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(models={"path": str(MODELS)})


@pytest.fixture
def client(cds_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cds_settings)) as test_client:
        yield test_client
