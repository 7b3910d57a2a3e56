"""Fixtures of the decision-support tests: the app on temporary storage with the repo's bundles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medgate.api.app import create_app
from medgate.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


@pytest.fixture
def cds_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(models={"path": str(MODELS)})


@pytest.fixture
def client(cds_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cds_settings)) as test_client:
        yield test_client
