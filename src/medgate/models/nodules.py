"""Per-nodule post-processing: a nodule probability map -> one finding per nodule.

Why: a voxel mask says little to a primary-care doctor; the follow-up guidelines (Fleischner,
Lung-RADS) work per nodule, from its size. So connected components of the thresholded nodule
probability become separate nodules, each with

- a probability compared with the label threshold: the component's highest voxel probability,
  or, when the bundle has a candidate model (``extra.candidate_model``), the second-stage
  reducer's score over network components *and* HU candidates (``find_nodules``,
  ``scan_candidates``, ``reduce_candidates``; features in ``nodule_candidates``),
- the long-axis diameter (mm) of a volume-preserving ellipsoid fit: the shape (axis ratios)
  from the component's probability-weighted second moments in patient space, the size from its
  summed probability; sub-voxel accurate on 3 mm voxels, where a voxel-count extent would be off
  by a whole voxel,
- the volume (mm3) as the summed probability times the voxel volume (partial volume aware),
- its centre in patient coordinates (ImagePositionPatient + orientation + pixel spacing).

Distances are computed on (slice step, row step, column step) axes in mm; these axes are
orthogonal for an axial series, so lengths equal patient-space lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from medgate.models.bundle import OutputLabel
from medgate.models.findings import Code, Measurement, ModelResult, SegmentationOutput
from medgate.models.images import ImageGeometry, read_volume
from medgate.models.nodule_candidates import (
    FEATURES,
    candidate_features,
    hu_peaks,
    hu_volumes,
    partial_volume_map,
)

LONG_AXIS = Code(value="103339001", scheme="SCT", meaning="Long Axis")
VOLUME = Code(value="118565006", scheme="SCT", meaning="Volume")
MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
MM3 = Code(value="mm3", scheme="UCUM", meaning="cubic millimeter")
VOXEL_THRESHOLD = 0.5
MAX_CANDIDATES = 32
ROUND_ELONGATION = 1.6
# Below this equivalent-sphere diameter the component spans too few 3-5 mm voxels for its
# second moments to mean anything: the long axis is the sphere's (chosen on training-range
# phantoms: small nodules were measured 3-5 mm too long from noisy moments).
MIN_SHAPE_MM = 12.0
MAX_HU_CANDIDATES = 96  # HU local maxima per scan, densest first
PARTIAL_VOLUME_THRESHOLD = 0.3  # a HU candidate's component: nodule fraction >= this
SUPPRESS_MM = 4.0
COVER_MAX_MM3 = 4200.0  # a 20 mm sphere: bigger than any nodule in scope


@dataclass
class DetectedNodule:
    """One connected component of the nodule probability map."""

    probability: float
    long_axis_mm: float
    volume_mm3: float
    centre_index: tuple[float, float, float]  # (slice, row, col), fractional
    centre_mm: tuple[float, float, float] | None  # patient (x, y, z) when the geometry is known
    component: np.ndarray  # bool mask on the source grid


def long_axis_mm(
    weights: np.ndarray,
    points_mm: np.ndarray,
    spacing: Sequence[float] | np.ndarray,
    volume_mm3: float | None = None,
) -> float:
    """Long axis (mm) of a weighted point cloud (N, 3) on a voxel grid, by an ellipsoid fit.

    The shape comes from the second moments: a solid ellipsoid with semi-axis a has variance
    a^2 / 5 along it, and a voxel of size s adds s^2 / 12 along its axes, which is removed first
    (never below a quarter of the raw value). With ``volume_mm3`` the size comes from the volume
    instead (a volume-preserving ellipsoid of that shape): moments of a blurred probability map
    overstate every axis, while its summed probability keeps the volume.
    """
    total = float(weights.sum())
    if total <= 0:
        return 0.0
    mean = (weights[:, None] * points_mm).sum(0) / total
    centred = points_mm - mean
    cov = (weights[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) / total
    voxel = np.diag([float(s) ** 2 / 12.0 for s in spacing])
    raw = np.linalg.eigvalsh(cov)
    eig = np.maximum(np.linalg.eigvalsh(cov - voxel), 0.25 * np.maximum(raw, 0.0))
    if volume_mm3 is None:
        return float(2.0 * np.sqrt(5.0 * max(float(eig[-1]), 0.0)))
    if eig.min() <= 0:
        return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))
    sphere = float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))
    if sphere < MIN_SHAPE_MM:  # the moments of a few voxels are noise: call it round
        return sphere
    elongation = float(np.clip(np.sqrt(eig[-1]) / np.prod(eig) ** (1.0 / 6.0), 1.0, 3.0))
    if elongation < ROUND_ELONGATION:  # moments of a few voxels are noisy: call it round
        elongation = 1.0
    return sphere * elongation


def detect_nodules(
    prob: np.ndarray,
    spacing: Sequence[float] | np.ndarray,
    voxel_threshold: float = VOXEL_THRESHOLD,
    voxel_to_patient: np.ndarray | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> list[DetectedNodule]:
    """Components of ``prob >= voxel_threshold`` (26-connected), largest probability first.

    Only the ``max_candidates`` components with the highest peak probability are measured
    (an untrained or confused network can produce thousands of specks).

    ``voxel_to_patient`` is a 4x4 affine from (slice, row, col, 1) to patient (x, y, z, 1).
    Measurements use the probabilities inside the component grown by one voxel, so that the
    partial-volume rim counts.
    """
    if prob.ndim != 3:
        raise ValueError(f"nodule post-processing needs a 3D probability map, got {prob.shape}")
    binary = prob >= voxel_threshold
    labelled, _count = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    spacing_arr = np.asarray([float(s) for s in spacing])
    found: list[DetectedNodule] = []
    objects = ndimage.find_objects(labelled)
    if not objects:
        return []
    peaks = np.asarray(ndimage.maximum(prob, labelled, range(1, len(objects) + 1)))
    chosen = np.argsort(-peaks, kind="stable")[:max_candidates] + 1
    for index in (int(i) for i in chosen):
        box = objects[index - 1]
        if box is not None:
            found.append(_measure(prob, labelled, index, box, spacing_arr, voxel_to_patient))
    found.sort(key=lambda n: n.probability, reverse=True)
    return found


def _measure(
    prob: np.ndarray,
    labelled: np.ndarray,
    index: int,
    box: tuple[slice, ...],
    spacing: np.ndarray,
    voxel_to_patient: np.ndarray | None,
) -> DetectedNodule:
    """Measure component ``index`` of ``labelled`` (bounding box ``box``) on the weights
    ``prob``, grown by one voxel to include its partial-volume rim."""
    grown = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, prob.shape, strict=True)
    )
    core = labelled[grown] == index
    region = ndimage.binary_dilation(core, structure=np.ones((3, 3, 3), bool))
    region &= (labelled[grown] == 0) | core  # never borrow a neighbour's voxels
    weights = prob[grown][region].astype(np.float64)
    idx = np.argwhere(region) + np.array([s.start for s in grown])
    points = idx * spacing
    centre_index = tuple(float(v) for v in (weights[:, None] * idx).sum(0) / weights.sum())
    centre_mm = None
    if voxel_to_patient is not None:
        homog = voxel_to_patient @ np.array([*centre_index, 1.0])
        centre_mm = (float(homog[0]), float(homog[1]), float(homog[2]))
    component = np.zeros(prob.shape, bool)
    component[grown] = core
    volume = float(weights.sum() * float(np.prod(spacing)))
    return DetectedNodule(
        probability=float(prob[grown][core].max()),
        long_axis_mm=long_axis_mm(weights, points, spacing, volume),
        volume_mm3=volume,
        centre_index=centre_index,  # type: ignore[arg-type]
        centre_mm=centre_mm,
        component=component,
    )


@dataclass
class Candidate:
    """A nodule candidate for the second-stage reducer: measured, with its feature vector."""

    nodule: DetectedNodule
    features: np.ndarray  # nodule_candidates.FEATURES
    peak: tuple[int, int, int]  # densest voxel (slice, row, col)
    from_network: bool


def scan_candidates(
    prob: np.ndarray,
    hu: np.ndarray,
    spacing: Sequence[float],
    voxel_threshold: float = VOXEL_THRESHOLD,
    voxel_to_patient: np.ndarray | None = None,
    max_candidates: int = MAX_CANDIDATES,
    max_hu_candidates: int = MAX_HU_CANDIDATES,
) -> list[Candidate]:
    """Network components plus HU local maxima no component covers, each measured and with
    its features (``medgate.models.nodule_candidates``). A HU candidate is measured on its
    partial-volume map (nodule fraction from HU) as a network component is on probabilities."""
    if hu.shape != prob.shape:
        raise ValueError(f"HU volume {hu.shape} and probability map {prob.shape} differ")
    spacing_arr = np.asarray([float(s) for s in spacing])
    vol = hu_volumes(hu, spacing_arr)
    out: list[Candidate] = []
    covered = np.zeros(prob.shape, bool)
    network = detect_nodules(prob, spacing_arr, voxel_threshold, voxel_to_patient, max_candidates)
    for nodule in network:
        if nodule.volume_mm3 <= COVER_MAX_MM3:  # larger: not a nodule, hides no HU maximum
            covered |= nodule.component
        inside = np.argwhere(nodule.component)
        peak = inside[int(np.argmax(vol.smooth[nodule.component]))]
        features = candidate_features(vol, prob, peak, nodule.component)
        out.append(Candidate(nodule, features, tuple(int(v) for v in peak), True))  # type: ignore[arg-type]
    covered = ndimage.binary_dilation(covered, structure=np.ones((3, 3, 3), bool))
    peaks = hu_peaks(vol, exclude=covered)
    order = np.argsort(-vol.smooth[tuple(peaks.T)], kind="stable")[:max_hu_candidates]
    for peak in peaks[order]:
        frac, box = partial_volume_map(vol, peak)
        full = np.zeros(prob.shape, np.float64)
        full[box] = frac
        binary = full >= PARTIAL_VOLUME_THRESHOLD
        binary[tuple(peak)] = True
        labelled, _ = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
        one = (labelled == labelled[tuple(peak)]).astype(np.int32)
        comp_box = ndimage.find_objects(one)[0]
        if comp_box is None:
            continue
        nodule = _measure(full, one, 1, comp_box, spacing_arr, voxel_to_patient)
        features = candidate_features(vol, prob, peak, None)
        out.append(Candidate(nodule, features, tuple(int(v) for v in peak), False))  # type: ignore[arg-type]
    return out


def reducer_scores(model: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """Probabilities of the bundle's logistic-regression reducer (``extra.candidate_model``:
    ``features``, ``mean``, ``scale``, ``coef``, ``intercept``) for (N, F) features."""
    names = list(model["features"])
    if names != list(FEATURES):
        raise ValueError(f"candidate model features {names} are not {list(FEATURES)}")
    z = (np.asarray(features, np.float64) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logit = z @ np.asarray(model["coef"], np.float64) + float(model["intercept"])
    return 1.0 / (1.0 + np.exp(-logit))


def reduce_candidates(
    candidates: Sequence[Candidate],
    model: Mapping[str, Any],
    spacing: Sequence[float],
    suppress_mm: float = SUPPRESS_MM,
) -> list[DetectedNodule]:
    """Score candidates with the reducer and keep one per place: a candidate within
    ``suppress_mm`` + the kept one's radius of a better-scored one is the same nodule."""
    if not candidates:
        return []
    scores = reducer_scores(model, np.stack([c.features for c in candidates]))
    kept: list[DetectedNodule] = []
    spacing_arr = np.asarray([float(v) for v in spacing])
    for i in np.argsort(-scores, kind="stable"):
        nodule = candidates[int(i)].nodule
        nodule.probability = float(scores[int(i)])
        here = np.asarray(nodule.centre_index)
        if any(
            np.linalg.norm((here - np.asarray(k.centre_index)) * spacing_arr)
            <= suppress_mm + k.long_axis_mm / 2
            for k in kept
        ):
            continue
        kept.append(nodule)
    return kept


def find_nodules(
    prob: np.ndarray,
    spacing: Sequence[float],
    voxel_threshold: float = VOXEL_THRESHOLD,
    voxel_to_patient: np.ndarray | None = None,
    *,
    hu: np.ndarray | None = None,
    candidate_model: Mapping[str, Any] | None = None,
) -> list[DetectedNodule]:
    """Every scored nodule candidate, best first: with a ``candidate_model`` (the bundle's
    ``extra.candidate_model``) network components and HU candidates scored by the reducer,
    without one the network components scored by their peak probability."""
    if not candidate_model:
        return detect_nodules(prob, spacing, voxel_threshold, voxel_to_patient)
    if hu is None:
        raise ValueError("the candidate model needs the HU volume")
    candidates = scan_candidates(prob, hu, spacing, voxel_threshold, voxel_to_patient)
    return reduce_candidates(candidates, candidate_model, spacing)


def voxel_to_patient_affine(
    datasets: Sequence[Dataset], frame_uids: Sequence[str]
) -> np.ndarray | None:
    """4x4 affine (slice, row, col, 1) -> patient (x, y, z, 1) of a sorted single-frame series.

    ``None`` when the positions or orientation are missing (the centre is then not reported).
    """
    by_uid = {str(ds.get("SOPInstanceUID", "")): ds for ds in datasets}
    first = by_uid.get(frame_uids[0]) if frame_uids else None
    last = by_uid.get(frame_uids[-1]) if frame_uids else None
    if first is None or last is None:
        return None
    try:
        orientation = np.array(first.ImageOrientationPatient, float)
        origin = np.array(first.ImagePositionPatient, float)
        end = np.array(last.ImagePositionPatient, float)
        row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    except (AttributeError, ValueError, TypeError):
        return None
    row_dir, col_dir = orientation[:3], orientation[3:]
    n = len(frame_uids)
    slice_step = (end - origin) / (n - 1) if n > 1 else np.cross(row_dir, col_dir)
    affine = np.eye(4)
    affine[:3, 0] = slice_step
    affine[:3, 1] = col_dir * row_sp  # moving down a row follows the column direction cosine
    affine[:3, 2] = row_dir * col_sp
    affine[:3, 3] = origin
    return affine


def study_nodules(
    prob: np.ndarray,
    geometry: ImageGeometry,
    datasets: Sequence[Dataset],
    voxel_threshold: float,
    *,
    hu: np.ndarray | None = None,
    candidate_model: Mapping[str, Any] | None = None,
) -> list[DetectedNodule]:
    """``find_nodules`` on one study's probability map, placed in its patient space. With a
    ``candidate_model`` the candidates are scored by the second stage; it needs the HU volume,
    read from ``datasets`` when ``hu`` is not given."""
    affine = voxel_to_patient_affine(datasets, geometry.frame_sop_instance_uids)
    if candidate_model and hu is None:
        hu, _ = read_volume(datasets)  # the same sorted grid as the probability map
    return find_nodules(
        prob, geometry.spacing, voxel_threshold, affine, hu=hu, candidate_model=candidate_model
    )


def nodule_result(
    prob: np.ndarray,
    geometry: ImageGeometry,
    datasets: Sequence[Dataset],
    result: ModelResult,
    label: OutputLabel,
    *,
    voxel_threshold: float = VOXEL_THRESHOLD,
    candidate_model: Mapping[str, Any] | None = None,
    hu: np.ndarray | None = None,
) -> None:
    """Fill ``result``: one ``label`` finding per nodule at or above the label's threshold and a
    SEG mask volume.

    With no nodule above the threshold the result holds one absent finding whose probability is
    the highest candidate's (0 when there is none), so reports can say "no nodule".
    """
    nodules = study_nodules(
        prob, geometry, datasets, voxel_threshold, hu=hu, candidate_model=candidate_model
    )
    kept = [n for n in nodules if n.probability >= label.threshold]
    mask = np.zeros(geometry.shape, np.uint8)
    for number, nodule in enumerate(kept, start=1):
        mask[nodule.component] = 1
        frames = np.flatnonzero(nodule.component.any(axis=(1, 2)))
        sources = [geometry.frame_sop_instance_uids[int(k)] for k in frames]
        measurements = [
            Measurement(
                name=name,
                value=value,
                unit=unit,
                finding_site=label.finding_site,
                segment_number=1,
                source_sop_instance_uids=sources,
            )
            for name, value, unit in (
                (LONG_AXIS, round(nodule.long_axis_mm, 2), MM),
                (VOLUME, round(nodule.volume_mm3, 1), MM3),
            )
        ]
        result.findings.append(
            label.finding(
                nodule.probability, measurements=measurements, tracking_id=f"nodule-{number}"
            )
        )
    if not kept:
        best = nodules[0].probability if nodules else float(prob.max(initial=0.0))
        result.findings.append(label.finding(best, present=False))
    result.segmentation = SegmentationOutput(
        segments=[label.segment(1)],
        masks={"volume": mask},
        frame_sop_instance_uids=list(geometry.frame_sop_instance_uids),
    )
