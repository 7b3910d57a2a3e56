"""Fixtures of the clinical-rule tests: the app (for the HTTP checks) on temporary storage."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.paths import MODELS

from medgate.api.app import create_app
from medgate.core.config import Settings


@pytest.fixture
def client(settings_factory: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = settings_factory(models={"path": str(MODELS)})
    with TestClient(create_app(settings)) as test_client:
        yield test_client
