"""The second-stage candidates: HU maxima find faint small nodules the network misses, the
features tell a bounded blob from a tube that goes on, and the reducer scores and de-duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from medgate.datasets.ct_phantom import generate_ct_phantom
from medgate.models.nodule_candidates import (
    FEATURES,
    candidate_features,
    hu_peaks,
    hu_volumes,
)
from medgate.models.nodules import (
    Candidate,
    DetectedNodule,
    find_nodules,
    reduce_candidates,
    reducer_scores,
    scan_candidates,
)

SPACING = (3.0, 3.3, 3.3)


def _lung_with_blob_and_tube(seed: int = 0) -> np.ndarray:
    """A box of lung (-850 HU, noise 15) inside soft tissue, with a 6 mm sphere and a 2 mm
    radius tube running along z (partial volume by 3x supersampling)."""
    rng = np.random.default_rng(seed)
    shape = (24, 48, 48)
    hu = np.full(shape, 40.0)
    hu[2:-2, 4:-4, 4:-4] = -850.0
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    frac_blob = np.zeros(shape)
    frac_tube = np.zeros(shape)
    offs = (np.arange(3) - 1) / 3.0
    for oz in offs:
        for oy in offs:
            for ox in offs:
                z = (grids[0] + oz) * SPACING[0]
                y = (grids[1] + oy) * SPACING[1]
                x = (grids[2] + ox) * SPACING[2]
                frac_blob += ((z - 36) ** 2 + (y - 50) ** 2 + (x - 50) ** 2 <= 9.0) / 27
                frac_tube += ((y - 100) ** 2 + (x - 100) ** 2 <= 4.0) / 27
    frac_tube[:2] = frac_tube[-2:] = 0
    hu = hu + frac_blob * (45 - hu)
    hu = hu + frac_tube * (40 - hu)
    return (hu + rng.normal(0, 15, shape)).astype(np.float32)


def _nearest(peaks: np.ndarray, at: tuple[float, float, float]) -> np.ndarray:
    scaled = (peaks - np.asarray(at)) * np.asarray(SPACING)
    return peaks[int(np.argmin(np.linalg.norm(scaled, axis=1)))]


def test_blob_is_bounded_and_a_tube_runs_on() -> None:
    hu = _lung_with_blob_and_tube()
    vol = hu_volumes(hu, SPACING)
    peaks = hu_peaks(vol)
    blob = _nearest(peaks, (12, 15.2, 15.2))
    tube = _nearest(peaks, (12, 30.3, 30.3))
    assert np.linalg.norm((blob - [12, 15.2, 15.2]) * SPACING) < 4
    prob = np.zeros(hu.shape, np.float32)
    f_blob = dict(zip(FEATURES, candidate_features(vol, prob, blob, None), strict=True))
    f_tube = dict(zip(FEATURES, candidate_features(vol, prob, tube, None), strict=True))
    assert f_blob["region_touches_box"] == 0 and f_tube["region_touches_box"] >= 1
    assert f_tube["region_z_mm"] > 2 * f_blob["region_z_mm"]
    assert f_blob["blob_large"] > f_tube["blob_large"]  # third Hessian eigenvalue: tube ~0
    assert f_blob["contrast"] > 3 and f_blob["from_network"] == 0


@pytest.mark.parametrize("seed", [700, 708, 726])
def test_a_faint_small_nodule_is_a_measured_hu_candidate(seed: int) -> None:
    """No network probability at all: the HU candidates alone hold the 4-5 mm nodule, measured
    within 2 mm."""
    phantom = generate_ct_phantom(seed, nodules=1)
    truth = phantom.nodules[0]
    assert truth.diameter_mm < 5.0
    prob = np.zeros(phantom.shape, np.float32)
    dz, dy, dx = phantom.spacing
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = (0, 0, dz), (0, dy, 0), (dx, 0, 0)
    affine[:3, 3] = phantom.origin
    candidates = scan_candidates(prob, phantom.hu.astype(np.float32), phantom.spacing, 0.3, affine)
    assert candidates and not any(c.from_network for c in candidates)
    near = [
        c
        for c in candidates
        if np.linalg.norm(np.subtract(c.nodule.centre_mm, truth.center_mm))
        <= truth.diameter_mm / 2 + 3
    ]
    assert near, "the nodule is not among the HU candidates"
    assert abs(near[0].nodule.long_axis_mm - truth.diameter_mm) <= 2.0
    assert near[0].nodule.component.any()


def _model(coef: list[float]) -> dict[str, object]:
    n = len(FEATURES)
    return {
        "features": list(FEATURES),
        "mean": [0.0] * n,
        "scale": [1.0] * n,
        "coef": coef,
        "intercept": 0.0,
    }


def _candidate(score_feature: float, centre: tuple[float, float, float]) -> Candidate:
    features = np.zeros(len(FEATURES))
    features[0] = score_feature
    nodule = DetectedNodule(
        probability=0.0,
        long_axis_mm=6.0,
        volume_mm3=113.0,
        centre_index=centre,
        centre_mm=centre,
        component=np.zeros((2, 2, 2), bool),
    )
    return Candidate(nodule, features, (0, 0, 0), False)


def test_reducer_scores_and_suppresses_duplicates() -> None:
    model = _model([2.0] + [0.0] * (len(FEATURES) - 1))
    scores = reducer_scores(model, np.array([[1.0] + [0] * (len(FEATURES) - 1)]))
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    cands = [
        _candidate(0.5, (10.0, 10.0, 10.0)),
        _candidate(2.0, (10.0, 11.0, 10.0)),  # 3.3 mm from the first: the same nodule
        _candidate(1.0, (10.0, 20.0, 10.0)),  # 33 mm away: another one
    ]
    kept = reduce_candidates(cands, model, SPACING)
    assert [round(k.centre_index[1]) for k in kept] == [11, 20]
    assert kept[0].probability > kept[1].probability


def test_reducer_refuses_other_features_and_needs_hu() -> None:
    bad = _model([0.0] * len(FEATURES))
    bad["features"] = ["something_else"]
    with pytest.raises(ValueError, match="features"):
        reducer_scores(bad, np.zeros((1, len(FEATURES))))
    with pytest.raises(ValueError, match="HU volume"):
        find_nodules(np.zeros((4, 4, 4)), SPACING, candidate_model=_model([0.0] * len(FEATURES)))
    with pytest.raises(ValueError, match="differ"):
        scan_candidates(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING)
