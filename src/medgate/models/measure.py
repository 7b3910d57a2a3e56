"""Measurements on label masks, by the method names that bundles declare.

Each function takes the label mask on the source grid, the label value(s) it needs and the pixel
spacing in mm, and returns a value in the unit the bundle's MeasurementDef declares (UCUM). New
methods are added here and named in a bundle's ``medgate.measurements[].method``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage


def _main_components(binary: np.ndarray, keep: int, min_fraction: float = 0.1) -> np.ndarray:
    """The ``keep`` largest components, dropping any under ``min_fraction`` of the largest.

    A few stray pixels labelled heart or lung far from the chest would otherwise set the
    measured extent (a segmentation network makes such islands now and then).
    """
    labelled, count = ndimage.label(binary)
    if count <= 1:
        return binary
    sizes = np.asarray(ndimage.sum(binary, labelled, range(1, count + 1)))
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [int(i) + 1 for i in order if sizes[i] >= min_fraction * sizes.max()]
    return np.isin(labelled, chosen)


def cardiothoracic_ratio(mask: np.ndarray, lung: int, heart: int) -> float:
    """Widest heart extent / widest thoracic (lung-field) extent on a PA radiograph (unit 1).

    Measured on the heart's largest connected component and the lungs' two largest ones.
    """
    lungs = _main_components(mask == lung, keep=2)
    hearts = _main_components(mask == heart, keep=1)
    lung_cols = np.flatnonzero(lungs.any(axis=0))
    heart_cols = np.flatnonzero(hearts.any(axis=0))
    if lung_cols.size == 0 or heart_cols.size == 0:
        return 0.0
    return float(heart_cols[-1] - heart_cols[0] + 1) / float(lung_cols[-1] - lung_cols[0] + 1)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(binary)
    if count <= 1:
        return binary
    sizes = ndimage.sum(binary, labelled, range(1, count + 1))
    return labelled == (int(np.argmax(sizes)) + 1)


def max_diameter_mm(mask: np.ndarray, label: int, spacing: Sequence[float]) -> float:
    """Longest in-plane extent (mm) of the largest connected component of ``label``.

    Measured per slice on the bounding box diagonal of the component's pixels along rows and
    columns; a simple, reproducible stand-in for the RECIST long axis.
    """
    binary = _largest_component(mask == label)
    if not binary.any():
        return 0.0
    planes = binary if binary.ndim == 3 else binary[None]
    row_sp, col_sp = float(spacing[-2]), float(spacing[-1])
    best = 0.0
    for plane in planes:
        points = np.argwhere(plane)
        if points.size == 0:
            continue
        coords = points * np.array([row_sp, col_sp])
        # Farthest pair among hull-ish extreme points (cheap: extremes along 4 directions).
        candidates = coords[
            [
                coords[:, 0].argmin(),
                coords[:, 0].argmax(),
                coords[:, 1].argmin(),
                coords[:, 1].argmax(),
                (coords.sum(1)).argmin(),
                (coords.sum(1)).argmax(),
                (coords[:, 0] - coords[:, 1]).argmin(),
                (coords[:, 0] - coords[:, 1]).argmax(),
            ]
        ]
        dists = np.linalg.norm(candidates[:, None] - candidates[None], axis=-1)
        best = max(best, float(dists.max()) + min(row_sp, col_sp))
    return best


def volume_mm3(mask: np.ndarray, label: int, spacing: Sequence[float]) -> float:
    """Volume (mm3) of ``label`` in a 3D mask (area in mm2 for a 2D mask)."""
    return float((mask == label).sum() * float(np.prod([float(s) for s in spacing])))


MeasureFn = Callable[[np.ndarray, dict[str, int], Sequence[float]], float]


def _ctr(mask: np.ndarray, labels: dict[str, int], spacing: Sequence[float]) -> float:
    return cardiothoracic_ratio(mask, labels["lung"], labels["heart"])


METHODS: dict[str, MeasureFn] = {
    "cardiothoracic_ratio": _ctr,
}


def measure(
    method: str,
    mask: np.ndarray,
    labels: dict[str, int],
    spacing: Sequence[float],
    label: str | None = None,
) -> float:
    """Run a named measurement; ``labels`` maps label names to mask values."""
    if method in METHODS:
        return METHODS[method](mask, labels, spacing)
    if label is None or label not in labels:
        raise ValueError(f"measurement {method!r} needs a known label, got {label!r}")
    if method == "max_diameter_mm":
        return max_diameter_mm(mask, labels[label], spacing)
    if method == "volume_mm3":
        return volume_mm3(mask, labels[label], spacing)
    raise ValueError(f"unknown measurement method {method!r}")
