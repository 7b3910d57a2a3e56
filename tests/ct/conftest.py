"""Fixtures of the chest-CT nodule suite: the committed bundle and phantom series as the gateway
sees them (parsed back from Part 10 bytes)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from medgate.datasets.ct_phantom import CTPhantom, ct_series_datasets
from medgate.models.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE_DIR = REPO / "models" / "ct_nodule_seg"


def series_from_bytes(phantom: CTPhantom) -> list[pydicom.Dataset]:
    """Every slice written to Part 10 bytes and read back."""
    out = []
    for ds in ct_series_datasets(phantom):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        out.append(pydicom.dcmread(buffer))
    return out


@pytest.fixture(scope="session")
def ct_bundle() -> Bundle:
    """The committed ct_nodule_seg bundle (regenerate: python -m medgate.training.ct_nodule)."""
    if not (BUNDLE_DIR / "configs" / "metadata.json").is_file():
        pytest.fail(f"{BUNDLE_DIR} is missing: run python -m medgate.training.ct_nodule")
    return Bundle.load(BUNDLE_DIR)
