"""Seeded chest-radiograph phantoms: the training and test data for the demo chest X-ray bundles.

No real patient data can be downloaded here, so the demo models learn from phantoms drawn from a
simple anatomical model: body outline, two lung fields with vessel markings, heart, mediastinum,
ribs, clavicles, detector noise, plus four findings (nodule/mass, pleural effusion, pneumothorax,
enlarged heart). Every phantom comes with its ground truth: finding labels, the nodule diameter
in millimetres, and lung and heart masks from which the cardiothoracic ratio (CTR) is measured
exactly as the segmentation bundle measures it (``cardiothoracic_ratio``).

A phantom is a pure function of its seed, so a data set is reproducible from its seed list, and
the held-out split uses seeds that the training split never uses (``split_seeds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

FINDINGS: tuple[str, ...] = ("nodule", "effusion", "pneumothorax", "cardiomegaly")
"""Finding labels, in the order the classifier outputs them."""

CTR_THRESHOLD = 0.5
"""A CTR above this is an enlarged heart on a PA chest radiograph."""

# Prevalence of each finding in generated data (independent draws).
_PREVALENCE = {"nodule": 0.3, "effusion": 0.3, "pneumothorax": 0.25, "cardiomegaly": 0.3}


@dataclass
class Phantom:
    """One generated chest radiograph with its ground truth."""

    seed: int
    pixels: np.ndarray  # (rows, cols) uint16, MONOCHROME2, BitsStored 12
    mask: np.ndarray  # (rows, cols) uint8: 0 background, 1 lung field, 2 heart
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)
    labels: dict[str, int]
    ctr: float  # measured on ``mask`` with ``cardiothoracic_ratio``
    nodule_diameter_mm: float  # 0.0 when there is no nodule
    nodule_center: tuple[int, int] | None = None
    patient_age: int = 50
    patient_sex: str = "O"
    extras: dict[str, float] = field(default_factory=dict)


def cardiothoracic_ratio(mask: np.ndarray) -> float:
    """CTR from a lung/heart label mask: widest heart extent / widest thoracic (lung) extent.

    The thoracic width is the horizontal distance between the outermost lung-field pixels; the
    heart width the horizontal extent of the heart label. Both are in pixels of the same grid, so
    the ratio needs no spacing. Returns 0.0 when either structure is missing.
    """
    lung_cols = np.flatnonzero((mask == 1).any(axis=0))
    heart_cols = np.flatnonzero((mask == 2).any(axis=0))
    if lung_cols.size == 0 or heart_cols.size == 0:
        return 0.0
    thorax = float(lung_cols[-1] - lung_cols[0] + 1)
    heart = float(heart_cols[-1] - heart_cols[0] + 1)
    return heart / thorax


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


def generate_phantom(
    seed: int,
    rows: int | None = None,
    cols: int | None = None,
    findings: dict[str, bool] | None = None,
) -> Phantom:
    """Draw one phantom from ``seed``; ``findings`` forces chosen labels (others are random).

    Matrix size (unless given), pixel spacing, body position and scale, heart size, contrast,
    gamma and noise all vary with the seed.
    """
    rng = np.random.default_rng(seed)
    rows = rows or int(rng.choice([224, 240, 256, 272]))
    cols = cols or int(rng.choice([224, 240, 256, 272]))
    spacing = float(rng.uniform(1.3, 1.8))
    labels = {name: int(rng.random() < p) for name, p in _PREVALENCE.items()}
    for name, value in (findings or {}).items():
        if name not in labels:
            raise ValueError(f"unknown finding {name!r}; known: {', '.join(FINDINGS)}")
        labels[name] = int(bool(value))

    # Normalised coordinates: x in [-1, 1] across columns, y in [-1, 1] down the rows.
    yy, xx = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]
    cx = rng.uniform(-0.06, 0.06)
    cy = rng.uniform(-0.06, 0.06)
    scale = rng.uniform(0.88, 1.05)
    x = (xx - cx) / scale
    y = (yy - cy) / scale

    body = ((x / 0.92) ** 2 + (y / 1.25) ** 2) <= 1.0
    lung_a = rng.uniform(0.26, 0.31)  # lung half-width
    lung_b = rng.uniform(0.52, 0.6)  # lung half-height
    lung_dx = rng.uniform(0.36, 0.42)  # distance of each lung centre from the midline
    lungs = np.zeros((rows, cols), bool)
    lung_params = []
    for side in (-1, 1):
        lx = side * lung_dx
        ly = rng.uniform(-0.1, 0.0)
        a = lung_a * rng.uniform(0.95, 1.05)
        b = lung_b * rng.uniform(0.95, 1.05)
        r = np.sqrt(((x - lx) / a) ** 2 + ((y - ly) / b) ** 2)
        # Diaphragm: the dome cuts off the bottom of the ellipse.
        dome = ly + b * 0.8 - 0.18 * ((x - lx) / a) ** 2
        lung = (r <= 1.0) & (y <= dome)
        lungs |= lung
        lung_params.append((lx, ly, a, b, r, lung))
    thorax_left = -lung_dx - lung_a
    thorax_right = lung_dx + lung_a
    thoracic_width = thorax_right - thorax_left

    # A gap around CTR_THRESHOLD keeps the cardiomegaly label unambiguous.
    target_ctr = rng.uniform(0.54, 0.66) if labels["cardiomegaly"] else rng.uniform(0.36, 0.46)
    heart_a = target_ctr * thoracic_width / 2
    heart_b = rng.uniform(0.26, 0.32)
    heart_x = rng.uniform(0.04, 0.1)
    heart_y = rng.uniform(0.22, 0.3)
    heart = (((x - heart_x) / heart_a) ** 2 + ((y - heart_y) / heart_b) ** 2) <= 1.0
    mediastinum = (np.abs(x) <= 0.1) & (y >= -0.9) & body
    lungs &= ~heart & ~mediastinum

    image = np.where(body, 0.55, 0.04)
    image = image + 0.06 * _smooth_noise(rng, (rows, cols), 12) * body
    image = np.where(mediastinum, 0.66, image)
    # Vessel markings: fine texture that fades from the hila to the periphery.
    markings = np.clip(_smooth_noise(rng, (rows, cols), 1.6), 0, None) * 0.05
    lung_level = rng.uniform(0.13, 0.2)
    for lx, ly, _, _, _, _ in lung_params:
        hilum = np.exp(-(((x - lx * 0.6) ** 2 + (y - ly) ** 2) / 0.12))
        lung_texture = markings * (0.5 + hilum)
        image = np.where(lungs & (np.sign(x) == np.sign(lx)), lung_level + lung_texture, image)
    image = np.where(heart, 0.62 + 0.02 * rng.standard_normal(), image)

    extras: dict[str, float] = {}
    lung_mask = lungs.copy()
    if labels["pneumothorax"]:
        lx, ly, a, b, r, lung = lung_params[int(rng.integers(2))]
        depth = rng.uniform(0.2, 0.4)
        region = lung & (r >= 1.0 - depth) & (y <= ly + rng.uniform(0.0, 0.3)) & ~heart
        pleural_line = lung & (np.abs(r - (1.0 - depth)) <= 0.025) & (y <= ly + 0.3) & ~region
        image = np.where(region, lung_level * 0.45, image)
        image = np.where(pleural_line, image + 0.18, image)
        extras["pneumothorax_depth"] = float(depth)
    if labels["effusion"]:
        lx, ly, a, b, r, lung = lung_params[int(rng.integers(2))]
        level = ly + b * rng.uniform(0.2, 0.55)
        meniscus = level - 0.25 * np.abs((x - lx) / a) ** 2 * np.sign(x * lx).clip(0)
        fluid = lung & (y >= meniscus)
        image = np.where(fluid, 0.5 + 0.03 * rng.standard_normal(), image)
        lung_mask &= ~fluid
        extras["effusion_level"] = float(level)

    nodule_diameter = 0.0
    nodule_center = None
    if labels["nodule"]:
        candidates = np.argwhere(ndimage.binary_erosion(lung_mask, iterations=6))
        if candidates.size == 0:
            candidates = np.argwhere(lung_mask)
        row, col = candidates[int(rng.integers(len(candidates)))]
        diameter_mm = float(rng.uniform(12.0, 40.0))
        radius_px = diameter_mm / spacing / 2
        dist = np.sqrt((np.arange(rows)[:, None] - row) ** 2 + (np.arange(cols)[None] - col) ** 2)
        blob = np.clip(radius_px + 0.5 - dist, 0, 1)
        image = image + blob * rng.uniform(0.3, 0.45)
        nodule_diameter = diameter_mm
        nodule_center = (int(row), int(col))

    # Ribs (posterior arcs) and clavicles over everything inside the body.
    rib_gap = rng.uniform(0.13, 0.16)
    for side in (-1, 1):
        for k in range(9):
            y0 = -0.75 + k * rib_gap
            arc = y0 + 0.35 * ((x - side * 0.1) * side).clip(0) ** 2 - 0.1 * np.abs(x)
            band = (np.abs(y - arc) <= 0.022) & (x * side > 0.08) & (np.abs(x) < 0.8) & body
            image = np.where(band, image + 0.08, image)
        clavicle = (np.abs(y - (-0.78 + 0.12 * np.abs(x))) <= 0.03) & (np.abs(x) < 0.55)
        image = np.where(clavicle & (x * side > 0.05), image + 0.12, image)

    mask = np.zeros((rows, cols), np.uint8)
    mask[lung_mask] = 1
    mask[heart] = 2

    # Acquisition: blur, gamma, quantum noise, then the detector's 12-bit range.
    image = ndimage.gaussian_filter(image, rng.uniform(0.4, 1.0))
    image = np.clip(image, 0, None) ** rng.uniform(0.8, 1.25)
    image = image + rng.uniform(0.01, 0.035) * rng.standard_normal(image.shape)
    low = rng.uniform(100, 600)
    high = rng.uniform(2800, 4000)
    pixels = np.clip(low + image * (high - low), 0, 4095).astype(np.uint16)

    return Phantom(
        seed=seed,
        pixels=pixels,
        mask=mask,
        pixel_spacing_mm=(spacing, spacing),
        labels=labels,
        ctr=cardiothoracic_ratio(mask),
        nodule_diameter_mm=nodule_diameter,
        nodule_center=nodule_center,
        patient_age=int(rng.integers(18, 90)),
        patient_sex=str(rng.choice(["F", "M"])),
        extras=extras,
    )


SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
"""Seed ranges per split: the held-out splits never reuse a training seed."""


def split_seeds(split: str, count: int, base: int = 0) -> list[int]:
    """The seeds of a split: disjoint ranges, so held-out phantoms never appear in training."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_OFFSETS)}")
    start = SPLIT_OFFSETS[split] + base
    return list(range(start, start + count))
