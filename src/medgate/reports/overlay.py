"""Secondary-capture overlays: the mask or heat map blended on the source image, labelled.

A viewer that cannot show SEG or SR still shows a picture. Each overlay is one model result on
one source image (for a volume, the key slice: the one with the most segmented pixels), with the
words "AI OVERLAY - NOT FOR DIAGNOSIS" and the model burned in, and BurnedInAnnotation YES.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom import Dataset

from medgate.models.findings import ModelResult
from medgate.reports.context import (
    CHARACTER_SET,
    SERIES_NUMBERS,
    BuildContext,
    model_equipment,
    set_body_part,
)
from medgate.reports.errors import ReportError
from medgate.reports.imaging import (
    OVERLAY_LABEL,
    blend,
    burn_text,
    display_image,
    segment_color,
    upscale,
)

MIN_OVERLAY_SIZE = 512


@dataclass
class OverlayPicture:
    """One rendered overlay before it becomes DICOM (the summary page reuses it)."""

    result: ModelResult
    source_uid: str
    image: Image.Image


def _planes(result: ModelResult) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """(source uid, labels or None, heat map or None) to draw for one model result."""
    planes: dict[str, list[np.ndarray | None]] = {}
    seg = result.segmentation
    if seg is not None and seg.masks:
        if "volume" in seg.masks:
            volume = np.asarray(seg.masks["volume"])
            if volume.ndim == 3 and len(seg.frame_sop_instance_uids) == volume.shape[0]:
                areas = np.count_nonzero(volume.reshape(volume.shape[0], -1), axis=1)
                if areas.max() > 0:
                    key = int(np.argmax(areas))
                    planes[seg.frame_sop_instance_uids[key]] = [volume[key], None]
        else:
            for uid, mask in seg.masks.items():
                if np.any(mask):
                    planes[uid] = [np.asarray(mask), None]
    for uid, heat in result.heatmaps.items():
        planes.setdefault(uid, [None, None])[1] = np.asarray(heat)
    return [(uid, labels, heat) for uid, (labels, heat) in planes.items()]


def _patient_orientation(ds: Dataset) -> tuple[str, str] | None:
    """Row and column directions (main axis letter each), from the source; None if unknown."""
    value = ds.get("PatientOrientation")
    if value and len(value) == 2 and all(value):
        return str(value[0])[0], str(value[1])[0]
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    return _direction(np.array(iop[:3], float)), _direction(np.array(iop[3:], float))


def _direction(vector: np.ndarray) -> str:
    """The patient-orientation letter of a direction cosine's main axis (DICOM C.7.6.1.1.1)."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    axis = int(np.argmax(np.abs(vector)))
    return letters[axis][0] if vector[axis] > 0 else letters[axis][1]


def render_overlays(ctx: BuildContext) -> list[OverlayPicture]:
    """Every overlay picture of the study, in model order."""
    pictures: list[OverlayPicture] = []
    for result in ctx.study.model_results:
        for uid, labels, heat in _planes(result):
            source = ctx.source(uid)
            grey = display_image(source)
            rgb = blend(grey, labels, heat)
            image = upscale(rgb, MIN_OVERLAY_SIZE)
            lines: list[tuple[str, tuple[int, int, int]]] = [
                (OVERLAY_LABEL, (255, 64, 64)),
                (f"{result.bundle_name} {result.bundle_version}", (255, 255, 255)),
            ]
            if labels is not None and result.segmentation is not None:
                shown = {int(v) for v in np.unique(labels)} - {0}
                for segment in result.segmentation.segments:
                    if segment.number in shown:
                        lines.append((f"■ {segment.label}", segment_color(segment.number)))
            if heat is not None:
                lines.append(("heat map: red = high", (255, 200, 0)))
            pictures.append(OverlayPicture(result, uid, burn_text(image, lines)))
    return pictures


def build_overlays(ctx: BuildContext, pictures: list[OverlayPicture]) -> list[Dataset]:
    """The overlay pictures as secondary-capture instances of one new series."""
    datasets: list[Dataset] = []
    for number, picture in enumerate(pictures, start=1):
        source = ctx.source(picture.source_uid)
        orientation = _patient_orientation(source)
        try:
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=np.asarray(picture.image.convert("RGB")),
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=ctx.uid("overlay", "series"),
                series_number=SERIES_NUMBERS["overlay"],
                sop_instance_uid=ctx.uid("overlay", picture.result.bundle_name, picture.source_uid),
                instance_number=number,
                manufacturer=ctx.config.manufacturer[:64],
                patient_orientation=orientation or ("L", "P"),
                contributing_equipment=[model_equipment(picture.result, ctx.config)],
                series_description="AI overlay - not for diagnosis",
                specific_character_set=CHARACTER_SET,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ReportError(f"cannot build the overlay: {exc}") from exc
        if orientation is None:
            # type 2: unknown rather than guessed (None writes it empty; the stubs say list)
            sc.PatientOrientation = None  # type: ignore[assignment]
        set_body_part(sc, source)
        sc.BurnedInAnnotation = "YES"
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.ConversionType = "WSD"
        sc.DerivationDescription = (
            f"AI overlay of {picture.result.bundle_name} {picture.result.bundle_version}"
        )[:1024]
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.SOPClassUID
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        sc.SourceImageSequence = [ref]
        datasets.append(sc)
    return datasets
