"""DICOM Segmentation objects for segmentation model results (highdicom).

One SEG per model result and source series: the masks are label maps on the source grid, segment
numbers are renumbered 1..N as the standard requires, and each segment carries its SNOMED CT
category and type, the algorithm that made it and a tracking UID that the SR refers to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom import Dataset

from medgate.models.findings import ModelResult, Segment
from medgate.reports.codes import ALGORITHM_FAMILY, concept
from medgate.reports.context import (
    CHARACTER_SET,
    SERIES_NUMBERS,
    BuildContext,
    device_uid,
    model_equipment,
)
from medgate.reports.errors import ReportError


@dataclass
class SegRef:
    """Where one contract segment ended up: which SEG, which segment number, which frames."""

    dataset: Dataset
    segment_number: int
    frames: list[int]
    source_uids: list[str]
    volume: bool


@dataclass
class SegIndex:
    """Written SEGs, and (bundle name, contract segment number) -> SegRef."""

    datasets: list[Dataset] = field(default_factory=list)
    refs: dict[tuple[str, int], SegRef] = field(default_factory=dict)


def label_planes(result: ModelResult, ctx: BuildContext) -> list[tuple[list[str], np.ndarray]]:
    """The result's masks as (source uids, (frames, rows, cols) label array) per source series."""
    seg = result.segmentation
    if seg is None or not seg.masks:
        return []
    if "volume" in seg.masks:
        volume = np.asarray(seg.masks["volume"])
        uids = list(seg.frame_sop_instance_uids)
        if volume.ndim != 3 or volume.shape[0] != len(uids):
            raise ReportError(
                f"{result.bundle_name}: volume mask {volume.shape} does not match "
                f"{len(uids)} frame_sop_instance_uids"
            )
        return [(uids, volume)]
    by_series: dict[str, list[tuple[str, np.ndarray]]] = {}
    for uid, mask in seg.masks.items():
        series = str(ctx.source(uid).get("SeriesInstanceUID", ""))
        by_series.setdefault(series, []).append((uid, np.asarray(mask)))
    planes = []
    for items in by_series.values():
        for _uid, mask in items:
            if mask.ndim != 2:
                raise ReportError(f"{result.bundle_name}: 2D mask expected, got {mask.shape}")
        planes.append(([uid for uid, _ in items], np.stack([m for _, m in items])))
    return planes


def _check_grid(result: ModelResult, sources: list[Dataset], labels: np.ndarray) -> None:
    for ds, plane in zip(sources, labels, strict=True):
        if plane.shape != (int(ds.Rows), int(ds.Columns)):
            raise ReportError(
                f"{result.bundle_name}: mask {plane.shape} is not on the source grid "
                f"({ds.Rows}, {ds.Columns})"
            )


def _renumber(result: ModelResult, labels: np.ndarray) -> tuple[np.ndarray, list[Segment]]:
    assert result.segmentation is not None
    segments = sorted(result.segmentation.segments, key=lambda s: s.number)
    numbers = [s.number for s in segments]
    if len(set(numbers)) != len(numbers):
        raise ReportError(f"{result.bundle_name}: duplicate segment numbers {numbers}")
    values = {int(v) for v in np.unique(labels)} - {0}
    unknown = values - set(numbers)
    if unknown:
        raise ReportError(f"{result.bundle_name}: mask values {sorted(unknown)} have no segment")
    lookup = np.zeros(max([*numbers, *values, 0]) + 1, dtype=np.uint8)
    for new, segment in enumerate(segments, start=1):
        lookup[segment.number] = new
    return lookup[labels.astype(np.int64)], segments


def _description(
    result: ModelResult, segment: Segment, number: int, ctx: BuildContext
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label[:64],
        segmented_property_category=concept(segment.category),
        segmented_property_type=concept(segment.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=result.bundle_name[:64],
            family=ALGORITHM_FAMILY,
            version=result.bundle_version[:64],
        ),
        tracking_uid=ctx.uid(result.bundle_name, "segment", str(segment.number)),
        tracking_id=f"{result.bundle_name} {segment.label}"[:64],
        anatomic_regions=[concept(segment.finding_site)] if segment.finding_site else None,
    )


def _frames_of(seg: Dataset) -> dict[int, list[int]]:
    """Segment number -> frame numbers (the identification is per frame, or shared by all)."""
    frames: dict[int, list[int]] = {}
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        ident = item.get("SegmentIdentificationSequence") or shared
        number = int(ident[0].ReferencedSegmentNumber)
        frames.setdefault(number, []).append(index)
    return frames


def build_segmentations(ctx: BuildContext) -> SegIndex:
    """A SEG for each segmentation result with any non-empty mask, plus the SR's index to them."""
    index = SegIndex()
    for result in ctx.study.model_results:
        for part, (uids, labels) in enumerate(label_planes(result, ctx)):
            if not np.any(labels):
                continue  # nothing to show; the SR still reports the findings
            sources = [ctx.source(uid) for uid in uids]
            _check_grid(result, sources, labels)
            renumbered, segments = _renumber(result, labels)
            kind_parts = (result.bundle_name, "seg", str(part))
            try:
                seg = hd.seg.Segmentation(
                    source_images=sources,
                    pixel_array=renumbered,
                    segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=[
                        _description(result, s, n, ctx) for n, s in enumerate(segments, 1)
                    ],
                    series_instance_uid=ctx.uid(*kind_parts, "series"),
                    series_number=SERIES_NUMBERS["seg"] + part,
                    sop_instance_uid=ctx.uid(*kind_parts, "instance"),
                    instance_number=1,
                    manufacturer=ctx.config.manufacturer[:64],
                    manufacturer_model_name=result.bundle_name[:64],
                    software_versions=result.bundle_version[:64],
                    device_serial_number=device_uid(result)[:64],
                    content_label="AI_SEGMENTATION",
                    content_description=f"AI segmentation {result.bundle_name}"[:64],
                    series_description=f"AI SEG {result.bundle_name}"[:64],
                    contributing_equipment=[model_equipment(result, ctx.config)],
                    specific_character_set=CHARACTER_SET,
                )
            except (ValueError, TypeError, AttributeError) as exc:
                raise ReportError(f"{result.bundle_name}: cannot build the SEG: {exc}") from exc
            seg.InstitutionName = ctx.config.institution_name[:64]
            if "FrameOfReferenceUID" not in sources[0] and sources[0].get("PatientOrientation"):
                seg.PatientOrientation = sources[0].PatientOrientation  # type 2C for 2D images
            index.datasets.append(seg)
            frames = _frames_of(seg)
            for new, segment in enumerate(segments, start=1):
                index.refs[(result.bundle_name, segment.number)] = SegRef(
                    dataset=seg,
                    segment_number=new,
                    frames=frames.get(new, []),
                    source_uids=uids,
                    volume=len(uids) > 1,
                )
    return index
