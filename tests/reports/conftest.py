"""Fixtures of the reports tests: the sources of tests/support/reports_data.py."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from tests.support.reports_data import make_ct, make_dx

from medgate.core.config import ReportsConfig


@pytest.fixture
def dx() -> Dataset:
    return make_dx()


@pytest.fixture
def ct() -> list[Dataset]:
    return make_ct()


@pytest.fixture
def reports_config() -> ReportsConfig:
    return ReportsConfig()
