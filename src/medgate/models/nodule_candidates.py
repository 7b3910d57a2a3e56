"""Nodule candidates and their features for the second-stage false-positive reducer.

Why: the segmentation network finds every 9-15 mm nodule but gives many 4-6.5 mm nodules (1-2
voxels of 3-3.6 mm) almost no probability, and scores vessel cross sections as high as nodules.
What tells them apart is 3D shape: a nodule is a blob bounded in every direction, a vessel is a
tube that goes on. So candidates come from two sources,

- the network's connected components (``detect_nodules``), and
- local maxima of the smoothed HU volume inside the lungs that no component covers (a faint
  4 mm nodule is still ~10 noise sigmas above the lung),

and each candidate gets a small feature vector (``FEATURES``): the network's probability near it,
HU contrast over the surrounding lung, Hessian eigenvalues at two scales (blob vs tube), and how
far its half-maximum region reaches (a vessel's runs out of the measuring box). A logistic
regression over these features (coefficients in the bundle metadata, fitted on training-range
phantoms the network never saw, threshold chosen on the validation split) gives the candidate's
probability; see ``medgate.training.ct_nodule``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FEATURES = (
    "net_peak",
    "net_mass",
    "from_network",
    "hu_peak",
    "contrast",
    "shell_dense",
    "blob_small",
    "tube_small",
    "blob_large",
    "tube_large",
    "strength_small",
    "strength_large",
    "region_mm3",
    "region_touches_box",
    "region_z_mm",
    "region_xy_mm",
)
LUNG_HU = -600.0  # below: air-filled lung (or outside air)
PEAK_FLOOR_HU = -700.0  # a smoothed local maximum below this is lung noise
SMOOTH_MM = 1.5
SCALES_MM = (1.5, 3.0)
SHELL_MM = (5.0, 9.0)
BOX_MM = 12.0
NODULE_HU = 45.0  # the middle of the solid nodules' 30-60 HU


@dataclass
class HUVolumes:
    """Derived volumes shared by every candidate of one scan."""

    hu: np.ndarray
    smooth: np.ndarray
    lung: np.ndarray
    hessians: list[np.ndarray]  # per scale: (3, 3, D, H, W) scale-normalised second derivatives
    spacing: np.ndarray


def lung_region(hu: np.ndarray) -> np.ndarray:
    """Lungs with everything inside them (vessels, nodules): per slice, the low-density regions
    that do not touch the image border (the outside air does), holes filled."""
    low = hu < LUNG_HU
    out = np.zeros(hu.shape, bool)
    for k in range(hu.shape[0]):
        labels, count = ndimage.label(low[k])
        if count == 0:
            continue
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        keep = ~np.isin(labels, border) & (labels > 0)
        out[k] = ndimage.binary_fill_holes(keep)
    return out


def hu_volumes(hu: np.ndarray, spacing: Sequence[float] | np.ndarray) -> HUVolumes:
    """Smoothed HU, lung region and Hessians at ``SCALES_MM`` (in mm, scale-normalised)."""
    sp = np.asarray([float(s) for s in spacing])
    hu = np.asarray(hu, np.float32)
    hessians = []
    for scale in SCALES_MM:
        sigma = scale / sp
        h = np.zeros((3, 3, *hu.shape), np.float32)
        for a in range(3):
            for b in range(a, 3):
                order = [0, 0, 0]
                order[a] += 1
                order[b] += 1
                d = ndimage.gaussian_filter(hu, sigma=sigma, order=order)
                h[a, b] = h[b, a] = d * scale**2 / (sp[a] * sp[b])
        hessians.append(h)
    return HUVolumes(
        hu=hu,
        smooth=ndimage.gaussian_filter(hu, sigma=SMOOTH_MM / sp),
        lung=lung_region(hu),
        hessians=hessians,
        spacing=sp,
    )


def hu_peaks(vol: HUVolumes, exclude: np.ndarray | None = None) -> np.ndarray:
    """(K, 3) local maxima of the smoothed HU inside the lungs above ``PEAK_FLOOR_HU``, outside
    ``exclude`` (voxels already covered by a network component)."""
    peaks = (vol.smooth == ndimage.maximum_filter(vol.smooth, size=3)) & vol.lung
    peaks &= vol.smooth > PEAK_FLOOR_HU
    if exclude is not None:
        peaks &= ~exclude
    return np.argwhere(peaks)


def _box(centre: np.ndarray, half_mm: float, vol: HUVolumes) -> tuple[slice, slice, slice]:
    half = np.ceil(half_mm / vol.spacing).astype(int)
    return tuple(  # type: ignore[return-value]
        slice(max(int(c) - h, 0), min(int(c) + h + 1, n))
        for c, h, n in zip(centre, half, vol.hu.shape, strict=True)
    )


def _distances(box: tuple[slice, ...], centre: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    return np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)))


def _eigen(h: np.ndarray, at: tuple[int, int, int]) -> tuple[float, float, float]:
    """Blob and tube measures of the Hessian at a voxel: with eigenvalues sorted by magnitude
    (|l1| >= |l2| >= |l3|), a bright blob has l1, l2, l3 all strongly negative, a bright tube
    l1, l2 negative and l3 ~ 0. Returns (|l3| / |l1|, |l2| / |l1|, -l1) with signs kept."""
    eig = np.linalg.eigvalsh(h[(slice(None), slice(None), *at)].astype(np.float64))
    eig = eig[np.argsort(-np.abs(eig))]
    big = max(abs(float(eig[0])), 1e-6)
    return float(-eig[2] / big), float(-eig[1] / big), float(-eig[0])


def half_max_region(vol: HUVolumes, peak: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The connected region of the smoothed HU above the half-way level between the peak and
    the surrounding lung, inside a +-``BOX_MM`` box: a nodule's stays inside, a vessel's runs to
    the box's faces."""
    box = _box(peak, BOX_MM, vol)
    local = vol.smooth[box]
    dist = _distances(box, peak, vol.spacing)
    shell = (dist >= SHELL_MM[0]) & (dist <= SHELL_MM[1])
    background = float(np.median(local[shell])) if shell.any() else -850.0
    level = (float(vol.smooth[tuple(peak)]) + background) / 2.0
    labels, _ = ndimage.label(local >= level, structure=np.ones((3, 3, 3), bool))
    index = labels[tuple(int(p) - s.start for p, s in zip(peak, box, strict=True))]
    return (labels == index) & (index > 0), box


def candidate_features(
    vol: HUVolumes, prob: np.ndarray, peak: np.ndarray, component: np.ndarray | None
) -> np.ndarray:
    """The ``FEATURES`` vector of one candidate whose densest voxel is ``peak`` (slice, row,
    col); ``component`` is its network component (bool, whole grid) or ``None``."""
    at = (int(peak[0]), int(peak[1]), int(peak[2]))
    sp = vol.spacing
    voxel = float(np.prod(sp))
    near = _box(peak, 4.0, vol)
    net_peak = float(prob[near].max())
    ball = _box(peak, 8.0, vol)
    net_mass = float(prob[ball][_distances(ball, peak, sp) <= 8.0].sum() * voxel)
    box = _box(peak, SHELL_MM[1], vol)
    dist = _distances(box, peak, sp)
    shell = (dist >= SHELL_MM[0]) & (dist <= SHELL_MM[1])
    shell_hu = vol.hu[box][shell]
    background = float(np.median(shell_hu)) if shell_hu.size else -850.0
    hu_peak = float(vol.smooth[at])
    region, rbox = half_max_region(vol, peak)
    idx = np.argwhere(region)
    touches = 0.0
    if idx.size:
        lo, hi = idx.min(0), idx.max(0)
        full = np.array([s.stop - s.start for s in rbox])
        at_edge = [
            (lo[a] == 0 and rbox[a].start > 0) or (hi[a] == full[a] - 1 and rbox[a].stop < n)
            for a, n in enumerate(vol.hu.shape)
        ]
        touches = float(sum(at_edge))
        extent = (hi - lo + 1) * sp
    else:
        extent = np.zeros(3)
    small = _eigen(vol.hessians[0], at)
    large = _eigen(vol.hessians[1], at)
    return np.array(
        [
            net_peak,
            np.log1p(net_mass),
            float(component is not None),
            hu_peak / 100.0,
            (hu_peak - background) / 100.0,
            float(np.mean(shell_hu > LUNG_HU)) if shell_hu.size else 0.0,
            small[0],
            small[1],
            large[0],
            large[1],
            np.log1p(max(small[2], 0.0)),
            np.log1p(max(large[2], 0.0)),
            np.log1p(float(region.sum()) * voxel),
            touches,
            float(extent[0]),
            float(max(extent[1], extent[2])),
        ],
        np.float64,
    )


def partial_volume_map(vol: HUVolumes, peak: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Nodule fraction of each voxel near ``peak``, from HU: 0 at the surrounding lung, 1 at
    solid-nodule density, restricted to the candidate's half-maximum region grown by one voxel
    (its partial-volume rim). Measures a candidate the network gave no component."""
    region, box = half_max_region(vol, peak)
    region = ndimage.binary_dilation(region, structure=np.ones((3, 3, 3), bool))
    dist = _distances(box, peak, vol.spacing)
    shell = (dist >= SHELL_MM[0]) & (dist <= SHELL_MM[1])
    background = float(np.median(vol.hu[box][shell])) if shell.any() else -850.0
    frac = np.clip((vol.hu[box] - background) / max(NODULE_HU - background, 1.0), 0.0, 1.0)
    return np.where(region, frac, 0.0), box
