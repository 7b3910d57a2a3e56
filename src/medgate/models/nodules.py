"""Per-nodule post-processing: a nodule probability map -> one finding per nodule.

Why: a voxel mask says little to a primary-care doctor; the follow-up guidelines (Fleischner,
Lung-RADS) work per nodule, from its size. So connected components of the thresholded nodule
probability become separate nodules, each with

- a probability (the component's highest voxel probability) compared with the label threshold,
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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from medgate.models.findings import (
    Code,
    Finding,
    Measurement,
    ModelResult,
    Segment,
    SegmentationOutput,
)
from medgate.models.images import ImageGeometry

LONG_AXIS = Code(value="103339001", scheme="SCT", meaning="Long Axis")
VOLUME = Code(value="118565006", scheme="SCT", meaning="Volume")
MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
MM3 = Code(value="mm3", scheme="UCUM", meaning="cubic millimeter")
VOXEL_THRESHOLD = 0.5
MAX_CANDIDATES = 32
ROUND_ELONGATION = 1.6


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
    spacing: Sequence[float],
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
    elongation = float(np.clip(np.sqrt(eig[-1]) / np.prod(eig) ** (1.0 / 6.0), 1.0, 3.0))
    if elongation < ROUND_ELONGATION:  # moments of a few voxels are noisy: call it round
        elongation = 1.0
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0) * elongation)


def detect_nodules(
    prob: np.ndarray,
    spacing: Sequence[float],
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
    voxel_volume = float(np.prod(spacing_arr))
    found: list[DetectedNodule] = []
    objects = ndimage.find_objects(labelled)
    if not objects:
        return []
    peaks = np.asarray(ndimage.maximum(prob, labelled, range(1, len(objects) + 1)))
    chosen = np.argsort(-peaks, kind="stable")[:max_candidates] + 1
    for index in (int(i) for i in chosen):
        box = objects[index - 1]
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, prob.shape, strict=True)
        )
        core = labelled[grown] == index
        region = ndimage.binary_dilation(core, structure=np.ones((3, 3, 3), bool))
        region &= (labelled[grown] == 0) | core  # never borrow a neighbour's voxels
        weights = prob[grown][region].astype(np.float64)
        idx = np.argwhere(region) + np.array([s.start for s in grown])
        points = idx * spacing_arr
        centre_index = tuple(float(v) for v in (weights[:, None] * idx).sum(0) / weights.sum())
        centre_mm = None
        if voxel_to_patient is not None:
            homog = voxel_to_patient @ np.array([*centre_index, 1.0])
            centre_mm = (float(homog[0]), float(homog[1]), float(homog[2]))
        component = np.zeros(prob.shape, bool)
        component[grown] = core
        volume = float(weights.sum() * voxel_volume)
        found.append(
            DetectedNodule(
                probability=float(prob[grown][core].max()),
                long_axis_mm=long_axis_mm(weights, points, spacing_arr, volume),
                volume_mm3=volume,
                centre_index=centre_index,  # type: ignore[arg-type]
                centre_mm=centre_mm,
                component=component,
            )
        )
    found.sort(key=lambda n: n.probability, reverse=True)
    return found


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


def nodule_result(
    prob: np.ndarray,
    geometry: ImageGeometry,
    datasets: Sequence[Dataset],
    result: ModelResult,
    *,
    label_name: str,
    code: Code,
    finding_site: Code | None,
    threshold: float,
    category: Code,
    voxel_threshold: float = VOXEL_THRESHOLD,
) -> None:
    """Fill ``result``: one Finding per nodule at or above ``threshold`` and a SEG mask volume.

    With no nodule above the threshold the result holds one absent ``label_name`` finding whose
    probability is the highest candidate's (0 when there is none), so reports can say "no nodule".
    """
    affine = voxel_to_patient_affine(datasets, geometry.frame_sop_instance_uids)
    nodules = detect_nodules(prob, geometry.spacing, voxel_threshold, affine)
    kept = [n for n in nodules if n.probability >= threshold]
    mask = np.zeros(geometry.shape, np.uint8)
    for number, nodule in enumerate(kept, start=1):
        mask[nodule.component] = 1
        frames = np.flatnonzero(nodule.component.any(axis=(1, 2)))
        sources = [geometry.frame_sop_instance_uids[int(k)] for k in frames]
        measurements = [
            Measurement(
                name=LONG_AXIS,
                value=round(nodule.long_axis_mm, 2),
                unit=MM,
                finding_site=finding_site,
                segment_number=1,
                source_sop_instance_uids=sources,
            ),
            Measurement(
                name=VOLUME,
                value=round(nodule.volume_mm3, 1),
                unit=MM3,
                finding_site=finding_site,
                segment_number=1,
                source_sop_instance_uids=sources,
            ),
        ]
        result.findings.append(
            Finding(
                label=label_name,
                finding_type=code,
                finding_site=finding_site,
                probability=float(np.clip(nodule.probability, 0.0, 1.0)),
                threshold=threshold,
                present=True,
                measurements=measurements,
                tracking_id=f"nodule-{number}",
            )
        )
    if not kept:
        best = nodules[0].probability if nodules else float(prob.max(initial=0.0))
        result.findings.append(
            Finding(
                label=label_name,
                finding_type=code,
                finding_site=finding_site,
                probability=float(np.clip(best, 0.0, 1.0)),
                threshold=threshold,
                present=False,
            )
        )
    result.segmentation = SegmentationOutput(
        segments=[
            Segment(
                number=1,
                label=label_name,
                category=category,
                type=code,
                finding_site=finding_site,
            )
        ],
        masks={"volume": mask},
        frame_sop_instance_uids=list(geometry.frame_sop_instance_uids),
    )
