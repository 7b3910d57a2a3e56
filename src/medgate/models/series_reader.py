"""A study's DICOM series as MONAI sees an image: a MetaTensor with its affine.

MONAI's bundles start with ``LoadImaged``, which reads files from disk. The gateway holds the
study in memory (the Part 10 data sets a model call carries), so it gives the bundle's transforms
the image that MONAI's ``PydicomReader`` would have produced from the same files: voxels in
(column, row, slice) order, slices sorted along the slice normal, the affine in RAS
(``affine_lps_to_ras``), ``original_channel_dim`` NaN (no channel axis yet) so that
``EnsureChannelFirstd`` adds one. tests/models/test_monai_bundle.py checks voxels and affine
against ``PydicomReader`` on the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medgate.models.images import ImageError, ImageGeometry, orientation_cosines, read_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _first_position(datasets: Sequence[Dataset], first_uid: str) -> np.ndarray:
    for ds in datasets:
        if str(ds.get("SOPInstanceUID", "")) == first_uid and ds.get("ImagePositionPatient"):
            return np.array(ds.ImagePositionPatient, float)
    frames = datasets[0].get("PerFrameFunctionalGroupsSequence") or []
    if frames and frames[0].get("PlanePositionSequence"):
        return np.array(frames[0].PlanePositionSequence[0].ImagePositionPatient, float)
    return np.zeros(3)


def series_affine(
    datasets: Sequence[Dataset], geometry: ImageGeometry, lps_to_ras: bool = True
) -> np.ndarray:
    """The 4x4 voxel-to-patient matrix of ``read_volume``'s grid in (column, row, slice) order."""
    reference = datasets[0]
    row_cosine, column_cosine = orientation_cosines(reference)
    slice_step, row_spacing, column_spacing = geometry.spacing
    normal = np.cross(row_cosine, column_cosine)
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * column_spacing  # along a row: the column index grows
    affine[:3, 1] = column_cosine * row_spacing  # down a column: the row index grows
    affine[:3, 2] = normal * slice_step
    affine[:3, 3] = _first_position(datasets, geometry.frame_sop_instance_uids[0])
    return LPS_TO_RAS @ affine if lps_to_ras else affine


def series_metatensor(datasets: Sequence[Dataset]) -> tuple[Any, ImageGeometry]:
    """The series as MONAI's ``LoadImage(reader="PydicomReader")`` returns it, plus the
    geometry medgate uses to map a mask back onto the source instances."""
    import torch
    from monai.data import MetaTensor

    volume, geometry = read_volume(datasets)
    if not geometry.is_volume:
        raise ImageError("a MONAI bundle needs a volume (a series of slices)")
    affine = series_affine(datasets, geometry)
    array = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)), dtype=np.float32)
    meta = {
        "affine": affine,
        "original_affine": affine.copy(),
        "spatial_shape": np.array(array.shape),
        "original_channel_dim": float("nan"),
        "space": "RAS",
        "filename_or_obj": "series",
    }
    return MetaTensor(array, affine=torch.as_tensor(affine), meta=meta), geometry


def mask_to_source_grid(mask_xyz: np.ndarray) -> np.ndarray:
    """A label volume in MONAI's (column, row, slice) order back to (slice, row, column)."""
    return np.ascontiguousarray(np.transpose(mask_xyz, (2, 1, 0)))
