"""From DICOM data sets to arrays with geometry: one radiograph, or a volume from a series.

A series of single-frame slices is sorted along the slice normal by ImagePositionPatient (not by
InstanceNumber, which modalities do not always fill in consistently); the slice spacing comes from
the positions. A multi-frame instance (enhanced CT/MR) is read per frame from its functional
groups. Modality LUT (rescale slope/intercept) is applied; MONOCHROME1 radiographs are inverted so
that dense structures are bright for every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset


class ImageError(ValueError):
    """Input data sets that cannot become a model input (the message says which and why)."""


@dataclass
class ImageGeometry:
    """Where the model input's pixels are: the source grid and the source instances."""

    shape: tuple[int, ...]  # (rows, cols) or (frames, rows, cols)
    spacing: tuple[float, ...]  # mm, same order as shape
    frame_sop_instance_uids: list[str] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)  # distinct, in frame order

    @property
    def is_volume(self) -> bool:
        return len(self.shape) == 3


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value:
            return float(value[0]), float(value[1])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures and measures[0].get("PixelSpacing"):
            sp = measures[0].PixelSpacing
            return float(sp[0]), float(sp[1])
    return 1.0, 1.0


def _rescale(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def _pixels(ds: Dataset) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise ImageError(f"pixel data cannot be decoded: {exc}") from exc


def read_radiograph(datasets: Sequence[Dataset]) -> tuple[np.ndarray, ImageGeometry]:
    """The first single-frame image of a study as (rows, cols) float32, dense = bright."""
    if not datasets:
        raise ImageError("no data sets given")
    ds = datasets[0]
    if "PixelData" not in ds:
        raise ImageError("the data set has no pixel data")
    pixels = _pixels(ds)
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        pixels = pixels[0]
    elif pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    image = _rescale(ds, pixels)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = image.max() + image.min() - image
    uid = str(ds.SOPInstanceUID)
    geometry = ImageGeometry(
        shape=tuple(image.shape),
        spacing=_pixel_spacing(ds),
        frame_sop_instance_uids=[uid],
        sop_instance_uids=[uid],
    )
    return image, geometry


def orientation_cosines(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The row and column direction cosines of a single-frame image or of an enhanced
    multi-frame's shared functional groups; an axial plane where neither says."""
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared and shared[0].get("PlaneOrientationSequence"):
            orientation = shared[0].PlaneOrientationSequence[0].ImageOrientationPatient
    if orientation is None:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    return np.array(orientation[:3], float), np.array(orientation[3:], float)


def _normal(ds: Dataset) -> np.ndarray:
    return np.cross(*orientation_cosines(ds))


def _slice_spacing(positions: list[float], ds: Dataset) -> float:
    if len(positions) > 1:
        steps = np.diff(np.sort(np.asarray(positions)))
        steps = steps[steps > 1e-6]
        if steps.size:
            return float(np.median(steps))
    return float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 1.0)) or 1.0)


def _multiframe_volume(ds: Dataset) -> tuple[np.ndarray, ImageGeometry]:
    frames = _pixels(ds)
    if frames.ndim == 2:
        frames = frames[None]
    normal = _normal(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    positions: list[float] = []
    slopes: list[tuple[float, float]] = []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    for index in range(frames.shape[0]):
        group = per_frame[index] if index < len(per_frame) else Dataset()
        plane = group.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        pos = np.array(plane[0].ImagePositionPatient, float) if plane else np.array([0, 0, index])
        positions.append(float(pos @ normal))
        trans = group.get("PixelValueTransformationSequence") or shared.get(
            "PixelValueTransformationSequence"
        )
        if trans:
            slopes.append((float(trans[0].RescaleSlope), float(trans[0].RescaleIntercept)))
        else:
            slopes.append((float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))))
    order = np.argsort(positions, kind="stable")
    volume = np.stack([frames[i].astype(np.float32) * slopes[i][0] + slopes[i][1] for i in order])
    uid = str(ds.SOPInstanceUID)
    row_sp, col_sp = _pixel_spacing(ds)
    geometry = ImageGeometry(
        shape=tuple(volume.shape),
        spacing=(_slice_spacing([positions[i] for i in order], ds), row_sp, col_sp),
        frame_sop_instance_uids=[uid] * volume.shape[0],
        sop_instance_uids=[uid],
    )
    return volume, geometry


def read_volume(datasets: Sequence[Dataset]) -> tuple[np.ndarray, ImageGeometry]:
    """A series as (frames, rows, cols) float32 sorted along the slice normal.

    One multi-frame instance is read by its functional groups; several single-frame instances
    must share rows/columns and are sorted by ImagePositionPatient projected on the normal.
    """
    if not datasets:
        raise ImageError("no data sets given")
    with_pixels = [ds for ds in datasets if "PixelData" in ds]
    if not with_pixels:
        raise ImageError("no data set has pixel data")
    if len(with_pixels) == 1 and int(with_pixels[0].get("NumberOfFrames", 1) or 1) > 1:
        return _multiframe_volume(with_pixels[0])
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in with_pixels}
    if len(shapes) != 1:
        raise ImageError(f"slices of different sizes cannot form a volume: {sorted(shapes)}")
    normal = _normal(with_pixels[0])
    keyed = []
    for index, ds in enumerate(with_pixels):
        position = ds.get("ImagePositionPatient")
        where = float(np.array(position, float) @ normal) if position else float(index)
        keyed.append((where, int(ds.get("InstanceNumber", index) or index), ds))
    keyed.sort(key=lambda item: (item[0], item[1]))
    volume = np.stack([_rescale(ds, _pixels(ds)) for _, _, ds in keyed])
    uids = [str(ds.SOPInstanceUID) for _, _, ds in keyed]
    row_sp, col_sp = _pixel_spacing(with_pixels[0])
    geometry = ImageGeometry(
        shape=tuple(volume.shape),
        spacing=(_slice_spacing([k[0] for k in keyed], with_pixels[0]), row_sp, col_sp),
        frame_sop_instance_uids=uids,
        sop_instance_uids=uids,
    )
    return volume, geometry
