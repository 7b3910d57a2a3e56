"""Fixtures of the chest-CT nodule suite: the committed bundle and phantom series as the gateway
sees them (parsed back from Part 10 bytes)."""

from __future__ import annotations

import pytest
from tests.support.ct_data import BUNDLE_DIR

from medgate.models.bundle import Bundle


@pytest.fixture(scope="session")
def ct_bundle() -> Bundle:
    """The committed ct_nodule_seg bundle (regenerate: python -m medgate.training.ct_nodule)."""
    if not (BUNDLE_DIR / "configs" / "metadata.json").is_file():
        pytest.fail(f"{BUNDLE_DIR} is missing: run python -m medgate.training.ct_nodule")
    return Bundle.load(BUNDLE_DIR)
