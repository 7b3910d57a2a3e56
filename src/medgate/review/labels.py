"""Verdicts back to the data scientists: reviewed studies as a labelled training folder.

``export_labels`` de-identifies every reviewed study with the Annex E export
(``medgate.trust.export``) and writes ``labels.csv`` in the folder format ``medgate train``
reads (``medgate.datasets.folder``): one row per study, the de-identified patient and study, the
image files, and one 0/1 column per finding label.

A finding's label is the radiologist's: ``confirmed`` keeps the AI's call, ``rejected`` turns it
over, ``modified`` means present (the corrected value goes into ``<label>_value``). A finding the
reviewer gave no verdict keeps the AI's call, which the signed (verified) report carries
unchanged; the ``explicit`` column lists the labels with an explicit verdict, so a data scientist
can keep only those.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgate.datasets.folder import LABELS_FILE
from medgate.store.db import Index
from medgate.store.reviews import ReviewRow, ReviewStore
from medgate.trust.audit import AuditLog
from medgate.trust.export import deidentifier_from_settings, export_deidentified

#: Modalities of medgate's own objects and of other non-image instances: not training images.
NOT_IMAGES = {"SR", "SEG", "KO", "PR", "OT", "DOC"}


@dataclass
class LabelExport:
    """What ``export_labels`` wrote."""

    out: Path
    studies: int = 0
    images: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> Path:
        return self.out / LABELS_FILE


def radiologist_labels(review: ReviewRow, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """label -> 0/1 for every finding of the study, from the verdicts (see module doc); plus
    ``<label>_value`` for modified findings and ``explicit``."""
    verdicts = {v["finding"]: v for v in review.verdicts}
    row: dict[str, Any] = {}
    explicit: list[str] = []
    for finding in findings:
        label = str(finding["label"])
        ai_present = bool(finding.get("present"))
        verdict = verdicts.get(label)
        if verdict is None:
            row[label] = int(ai_present)
            continue
        explicit.append(label)
        if verdict["verdict"] == "confirmed":
            row[label] = int(ai_present)
        elif verdict["verdict"] == "rejected":
            row[label] = int(not ai_present)
        else:
            row[label] = 1
            if verdict.get("value") is not None:
                row[f"{label}_value"] = float(verdict["value"])
    row["explicit"] = ";".join(sorted(explicit))
    return row


def export_labels(
    settings: Any, out: Path, *, index: Index | None = None, audit: AuditLog | None = None
) -> LabelExport:
    """Write the reviewed studies, de-identified, with the radiologist's labels into ``out``."""
    own = index is None
    if index is None:
        index = Index(settings.storage.resolved_database_url())
    try:
        return _export(settings, Path(out), index, audit)
    finally:
        if own:
            index.close()


def _export(settings: Any, out: Path, index: Index, audit: AuditLog | None) -> LabelExport:
    reviews = {r.study_instance_uid: r for r in ReviewStore(index.engine).current()}
    report = LabelExport(out=out)
    if not reviews:
        raise ValueError("no reviewed studies to export (review some on /review first)")
    exported = export_deidentified(
        settings, out, sorted(reviews), index=index, audit=audit, progress=False
    )
    manifest = json.loads(exported.manifest.read_text())
    deid = deidentifier_from_settings(settings)
    files: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest.get("instances", manifest.get("files", [])):
        if entry.get("modality", "") in NOT_IMAGES:
            continue
        files.setdefault(entry["study_instance_uid"], []).append(entry)
    rows: list[dict[str, Any]] = []
    for uid, review in sorted(reviews.items()):
        study = index.studies.get(uid)
        findings = list(((study.result if study else None) or {}).get("findings") or [])
        images = sorted(files.get(deid.uid(uid), []), key=lambda e: e["file"])
        if not findings or not images:
            reason = "no findings" if not findings else "no exported image"
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            continue
        rows.append(
            {
                "patient_id": _patient_id(out / images[0]["file"]),
                "study_instance_uid": deid.uid(uid),
                "file": ";".join(e["file"] for e in images),
                "mask": "",
                **radiologist_labels(review, findings),
                "review_revision": review.revision,
                "split": "train",
            }
        )
        report.images += len(images)
    if not rows:
        raise ValueError("none of the reviewed studies has findings and exportable images")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with report.labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    report.studies = len(rows)
    return report


def _patient_id(path: Path) -> str:
    """The de-identified file's Patient ID (the export's pseudonym)."""
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID", ""))
