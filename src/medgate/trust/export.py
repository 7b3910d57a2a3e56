"""``medgate export --deidentify``: de-identified copies of stored studies for training.

Reads the index (``db.instances.path``) and the stored Part 10 files, writes
``OUT/<study>/<series>/<instance>.dcm`` under the new (keyed) UIDs plus ``OUT/manifest.json``, and
records one audit "export" event (DICOM 110106) per study. Nothing identifying is written outside
the de-identified files: the manifest names only new UIDs and codes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from medgate.store.db import Index
from medgate.store.instances import InstanceRecord
from medgate.trust.audit import AuditLog
from medgate.trust.deidentify import Deidentifier, DeidOptions


class ExportError(ValueError):
    """An export that cannot start (unknown study, unusable output folder)."""


@dataclass
class ExportReport:
    """What one export did."""

    out: Path
    studies: int = 0
    exported: int = 0
    flagged: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"


def deidentifier_from_settings(settings: Any) -> Deidentifier:
    """The de-identifier of ``settings``: key ``deid.key``, else ``audit.hash_key``."""
    key = settings.deid.key or settings.audit.hash_key
    return Deidentifier(key, DeidOptions.from_config(settings.deid))


def export_deidentified(
    settings: Any,
    out: Path,
    study_uids: Sequence[str] | None = None,
    *,
    index: Index | None = None,
    audit: AuditLog | None = None,
    progress: bool = True,
) -> ExportReport:
    """De-identify every instance of ``study_uids`` (default: all studies) into ``out``."""
    own_index = index is None
    if index is None:
        index = Index(settings.storage.resolved_database_url())
    try:
        return _export(settings, Path(out), study_uids, index, audit, progress)
    finally:
        if own_index:
            index.close()


def _export(
    settings: Any,
    out: Path,
    study_uids: Sequence[str] | None,
    index: Index,
    audit: AuditLog | None,
    progress: bool,
) -> ExportReport:
    if study_uids:
        unknown = [uid for uid in study_uids if index.studies.get(uid) is None]
        if unknown:
            raise ExportError(f"{len(unknown)} of the given studies are not in the index")
        studies = list(dict.fromkeys(study_uids))
    else:
        studies = [row.study_instance_uid for row in index.studies.list(limit=10**9)]
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    deid = deidentifier_from_settings(settings)
    storage_root = Path(settings.storage.path)
    report = ExportReport(out=out)
    manifest: list[dict[str, Any]] = []
    work = [(uid, row) for uid in studies for row in index.instances.of_study(uid)]
    per_study: dict[str, Counter[str]] = {uid: Counter() for uid in studies}
    for study_uid, row in tqdm(work, desc="de-identifying", unit="inst", disable=not progress):
        outcome, entry = _export_one(deid, storage_root, out, row)
        per_study[study_uid][outcome] += 1
        if outcome in ("exported", "flagged"):
            report.exported += 1
            report.flagged += outcome == "flagged"
            report.files.append(out / entry["file"])
            manifest.append(entry)
        elif outcome.startswith("excluded:"):
            report.excluded[outcome.split(":", 1)[1]] += 1
        else:
            report.failed[outcome.split(":", 1)[1]] += 1
    report.studies = len(studies)
    _write_manifest(report, deid, manifest)
    if audit is not None:
        for study_uid, counts in per_study.items():
            failed = sum(v for k, v in counts.items() if k.startswith("failed:"))
            audit.record(
                "export",
                outcome="minor-failure" if failed else "success",
                actor="medgate export",
                study_uid=study_uid,
                details={
                    "kind": "deidentified",
                    "method_codes": [c["code"] for c in _codes(deid)],
                    **{k.replace(":", "_"): v for k, v in sorted(counts.items())},
                },
            )
    return report


def _export_one(
    deid: Deidentifier, root: Path, out: Path, row: InstanceRecord
) -> tuple[str, dict[str, Any]]:
    path = Path(row.path)
    if not path.is_absolute() and not path.exists():
        path = root / path
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        return "failed:missing-file", {}
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return "failed:unreadable", {}
    try:
        result = deid.deidentify(ds)
    except (ValueError, TypeError, AttributeError, KeyError):
        return "failed:deidentification-error", {}
    if result.risks and deid.options.burned_in == "exclude":
        return f"excluded:{result.risks[0]}", {}
    clean = result.dataset
    study, series, sop = (
        str(clean.get(k, "") or "unknown")
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    relative = Path(study) / series / f"{sop}.dcm"
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        clean.save_as(target, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, OverflowError):
        target.unlink(missing_ok=True)
        return "failed:write-error", {}
    entry = {
        "file": str(relative),
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": str(clean.get("SOPClassUID", "")),
        "modality": str(clean.get("Modality", "")),
        "risks": result.risks,
    }
    return ("flagged" if result.risks else "exported"), entry


def _codes(deid: Deidentifier) -> list[dict[str, str]]:
    from medgate.trust.deidentify import OPTION_CODES

    return [
        {"code": OPTION_CODES[n][0], "meaning": OPTION_CODES[n][1]}
        for n in ["basic", *deid.options.enabled()]
    ]


def _write_manifest(report: ExportReport, deid: Deidentifier, items: list[dict[str, Any]]) -> None:
    data = {
        "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "method_codes": _codes(deid),
        "table": {
            k: deid.table.meta[k] for k in ("basic_profile_edition", "option_columns_edition")
        },
        "burned_in_policy": deid.options.burned_in,
        "studies": report.studies,
        "exported": report.exported,
        "flagged": report.flagged,
        "excluded": dict(report.excluded),
        "failed": dict(report.failed),
        "instances": sorted(items, key=lambda e: e["file"]),
    }
    report.manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
