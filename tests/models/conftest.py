"""Fixtures of the models suite: tiny real bundles (tests/support/models_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.models_data import make_tiny_bundle

from medgate.models.bundle import Bundle


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    make_tiny_bundle(root, "classifier")
    make_tiny_bundle(root, "segmenter")
    return root


@pytest.fixture(scope="session")
def tiny_classifier(bundle_root: Path) -> Bundle:
    return Bundle.load(bundle_root / "tiny_cls")


@pytest.fixture(scope="session")
def tiny_segmenter(bundle_root: Path) -> Bundle:
    return Bundle.load(bundle_root / "tiny_seg")
