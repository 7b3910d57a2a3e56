"""Build every result object of one study, all or nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from PIL import Image
from pydicom import Dataset

from medgate.clinical.context import study_context
from medgate.clinical.guidance import guidance_for
from medgate.core.config import ReportsConfig
from medgate.core.logs import phi_hash
from medgate.models.findings import GuidanceStatement, StudyResult
from medgate.reports.context import BuildContext
from medgate.reports.errors import ReportError
from medgate.reports.overlay import build_overlays, render_overlays
from medgate.reports.seg import SegIndex, build_segmentations
from medgate.reports.sr import build_sr
from medgate.reports.summary import build_summary, render_summary
from medgate.reports.validate import check_object

log = logging.getLogger(__name__)

ResultKind = Literal["sr", "seg", "overlay", "summary"]


@dataclass
class ResultObject:
    """One DICOM object to send to the PACS, and what kind it is."""

    kind: ResultKind
    dataset: Dataset


@dataclass
class RenderedPages:
    """The pictures behind the overlay and summary objects (PNG previews, docs, the API)."""

    overlays: list[Image.Image]
    summary: Image.Image | None


def _guidance(study: StudyResult, sources: list[Dataset]) -> list[GuidanceStatement]:
    """The study's guidance: the pipeline's if it set some, else the rules with the header's
    context (age, projection) read by the same function the pipeline uses."""
    if study.guidance:
        return list(study.guidance)
    return guidance_for(study, context=study_context(sources))


def build_result_objects_with_pages(
    study: StudyResult, sources: list[Dataset], config: ReportsConfig
) -> tuple[list[ResultObject], RenderedPages]:
    """``build_result_objects`` plus the rendered pictures (for previews and documentation)."""
    ctx = BuildContext.create(study, sources, config)
    guidance = _guidance(study, list(ctx.sources.values()))
    segs = build_segmentations(ctx) if config.write_seg else SegIndex()
    objects = [ResultObject("sr", build_sr(ctx, segs, guidance))]
    objects += [ResultObject("seg", ds) for ds in segs.datasets]
    pictures = render_overlays(ctx) if (config.write_overlay or config.write_summary) else []
    if config.write_overlay:
        objects += [ResultObject("overlay", ds) for ds in build_overlays(ctx, pictures)]
    page = render_summary(ctx, guidance, pictures) if config.write_summary else None
    if page is not None:
        objects.append(ResultObject("summary", build_summary(ctx, page)))
    patient_id = ctx.first.get("PatientID")
    seen: set[str] = set()
    for obj in objects:
        check_object(obj.kind, obj.dataset, study.study_instance_uid, patient_id)
        uid = str(obj.dataset.SOPInstanceUID)
        if uid in seen or uid in ctx.sources:
            raise ReportError(f"{obj.kind}: SOP Instance UID collides with another object")
        seen.add(uid)
    log.info(
        "built %d result objects for study %s (%s)",
        len(objects),
        phi_hash(study.study_instance_uid),
        ", ".join(sorted({o.kind for o in objects})),
    )
    return objects, RenderedPages([p.image for p in pictures], page)


def build_result_objects(
    study: StudyResult, sources: list[Dataset], config: ReportsConfig
) -> list[ResultObject]:
    """SR, SEGs, overlays and summary for one study, validated in memory; ReportError if any
    object cannot be built, so the caller queues all of them or none."""
    try:
        objects, _ = build_result_objects_with_pages(study, sources, config)
    except ReportError:
        raise
    except Exception as exc:  # a library error must not leave the caller half-done
        raise ReportError(
            f"result objects could not be built: {type(exc).__name__}: {exc}"
        ) from exc
    return objects
