"""Per-nodule post-processing on known shapes: components, long axis, volume, centre."""

from __future__ import annotations

import numpy as np
import pytest

from medgate.models.nodules import detect_nodules, long_axis_mm


def _sphere(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_mm: np.ndarray,
    diameter: float,
) -> np.ndarray:
    """Partial-volume sphere (fraction of each voxel inside), 4x supersampled."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    frac = np.zeros(shape)
    offs = (np.arange(4) + 0.5) / 4 - 0.5
    for oz in offs:
        for oy in offs:
            for ox in offs:
                pts = [(g + o) * s for g, o, s in zip(grids, (oz, oy, ox), spacing, strict=True)]
                d2 = sum((p - c) ** 2 for p, c in zip(pts, centre_mm, strict=True))
                frac += d2 <= (diameter / 2) ** 2
    return frac / 64


@pytest.mark.parametrize("diameter", [5.0, 8.0, 14.0])
def test_long_axis_and_volume_of_a_sphere(diameter: float) -> None:
    spacing = (3.0, 3.3, 3.3)
    prob = _sphere((20, 30, 30), spacing, np.array([30.0, 50.0, 48.0]), diameter)
    found = detect_nodules(prob, spacing, voxel_threshold=0.3)
    assert len(found) == 1
    assert abs(found[0].long_axis_mm - diameter) <= 1.5
    true_volume = np.pi / 6 * diameter**3
    assert abs(found[0].volume_mm3 - true_volume) / true_volume < 0.15


def test_two_components_two_nodules_and_patient_centre() -> None:
    spacing = (2.5, 3.0, 3.0)
    prob = np.maximum(
        _sphere((24, 40, 40), spacing, np.array([20.0, 30.0, 30.0]), 10.0),
        0.8 * _sphere((24, 40, 40), spacing, np.array([40.0, 90.0, 90.0]), 7.0),
    )
    affine = np.eye(4)
    affine[:3, :3] = np.diag([0.0, 0.0, 0.0])
    affine[:3, 0] = [0, 0, spacing[0]]  # slice -> z
    affine[:3, 1] = [0, spacing[1], 0]  # row -> y
    affine[:3, 2] = [spacing[2], 0, 0]  # col -> x
    affine[:3, 3] = [-100.0, -50.0, 10.0]
    found = detect_nodules(prob, spacing, 0.3, affine)
    assert len(found) == 2 and found[0].probability > found[1].probability
    x, y, z = found[0].centre_mm  # type: ignore[misc]
    assert np.allclose([x, y, z], [-100 + 30, -50 + 30, 10 + 20], atol=1.0)


def test_no_component_and_bad_input() -> None:
    assert detect_nodules(np.zeros((8, 8, 8)), (1, 1, 1)) == []
    with pytest.raises(ValueError, match="3D"):
        detect_nodules(np.zeros((8, 8)), (1, 1))
    assert long_axis_mm(np.zeros(0), np.zeros((0, 3)), (1, 1, 1)) == 0.0
