"""The committed chest-CT nodule bundle and phantom series as the gateway sees them."""

from __future__ import annotations

import io

import pydicom
from tests.support.paths import MODELS

from medgate.datasets.ct_phantom import CTPhantom, ct_series_datasets

BUNDLE_DIR = MODELS / "ct_nodule_seg"


def series_from_bytes(phantom: CTPhantom) -> list[pydicom.Dataset]:
    """Every slice written to Part 10 bytes and read back."""
    out: list[pydicom.Dataset] = []
    for ds in ct_series_datasets(phantom):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        out.append(pydicom.dcmread(buffer))
    return out
