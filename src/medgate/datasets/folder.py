"""Labelled DICOM folders: ``labels.csv`` + DICOM files (+ optional label masks as PNG).

This is the one on-disk format that training and evaluation read, whether the studies are
phantoms (``write_phantom_folder``) or de-identified studies exported from the gateway. Paths in
``labels.csv`` are relative to the folder, so a folder can be moved or archived as a whole.

Columns: ``patient_id, study_instance_uid, file, mask`` then one 0/1 column per finding and any
number of numeric ground-truth columns (``ctr``, ``nodule_diameter_mm`` ...).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from tqdm import tqdm

from medgate.datasets.cxr_phantom import FINDINGS, generate_phantom, split_seeds
from medgate.datasets.phantom_dicom import phantom_to_dataset

LABELS_FILE = "labels.csv"


@dataclass
class LabeledStudy:
    """One row of ``labels.csv``: where the images and mask are, and the ground truth."""

    patient_id: str
    study_instance_uid: str
    files: list[Path]
    mask: Path | None
    labels: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def datasets(self) -> list[pydicom.Dataset]:
        """The study's DICOM data sets, read from disk."""
        return [pydicom.dcmread(path) for path in self.files]

    def mask_array(self) -> np.ndarray | None:
        """The label mask on the image grid (uint8), or None without a mask."""
        if self.mask is None:
            return None
        return np.asarray(Image.open(self.mask), dtype=np.uint8)


def write_phantom_folder(
    out_dir: Path,
    split: str,
    count: int,
    *,
    base: int = 0,
    progress: bool = False,
) -> Path:
    """Generate ``count`` phantoms of ``split`` into ``out_dir``; returns the labels.csv path.

    Seeds come from ``split_seeds(split, count, base)``: the train, val and test splits use
    disjoint seed ranges, hence disjoint (fake) patients.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    seeds = split_seeds(split, count, base)
    for seed in tqdm(seeds, desc=f"phantoms {split}", disable=not progress, unit="study"):
        phantom = generate_phantom(seed)
        ds = phantom_to_dataset(phantom)
        image_rel = Path("images") / f"{ds.PatientID}.dcm"
        mask_rel = Path("masks") / f"{ds.PatientID}.png"
        ds.save_as(out_dir / image_rel, enforce_file_format=True)
        Image.fromarray(phantom.mask).save(out_dir / mask_rel)
        rows.append(
            {
                "patient_id": ds.PatientID,
                "study_instance_uid": ds.StudyInstanceUID,
                "file": str(image_rel),
                "mask": str(mask_rel),
                **{name: phantom.labels[name] for name in FINDINGS},
                "ctr": round(phantom.ctr, 6),
                "nodule_diameter_mm": round(phantom.nodule_diameter_mm, 3),
                "pixel_spacing_mm": round(phantom.pixel_spacing_mm[0], 4),
                "age": phantom.patient_age,
                "seed": seed,
                "split": split,
            }
        )
    labels_path = out_dir / LABELS_FILE
    with labels_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return labels_path


_RESERVED = {"patient_id", "study_instance_uid", "file", "mask", "split"}


def read_labeled_folder(folder: Path, findings: Sequence[str] = FINDINGS) -> list[LabeledStudy]:
    """Read ``labels.csv`` of ``folder``; ``file`` may list several files separated by ``;``.

    Raises ``ValueError`` naming the folder when labels.csv is missing or a row is unusable.
    """
    folder = Path(folder)
    labels_path = folder / LABELS_FILE
    if not labels_path.is_file():
        raise ValueError(f"{folder}: no {LABELS_FILE} (expected a labelled DICOM folder)")
    studies: list[LabeledStudy] = []
    with labels_path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                files = [folder / part for part in row["file"].split(";") if part]
                mask = folder / row["mask"] if row.get("mask") else None
                labels = {name: int(row[name]) for name in findings if row.get(name, "") != ""}
                values = {}
                for key, value in row.items():
                    if key in _RESERVED or key in labels or value in ("", None):
                        continue
                    try:
                        values[key] = float(value)
                    except ValueError:
                        continue
                studies.append(
                    LabeledStudy(
                        patient_id=row["patient_id"],
                        study_instance_uid=row.get("study_instance_uid", ""),
                        files=files,
                        mask=mask,
                        labels=labels,
                        values=values,
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{labels_path}:{line}: unusable row ({exc})") from exc
    return studies


def patient_split(
    patient_ids: Iterable[str], fractions: dict[str, float], salt: str = "medgate"
) -> dict[str, str]:
    """Assign every patient to one split by a salted hash: all studies of a patient share a split.

    Deterministic and order-independent, so adding studies never moves an existing patient to
    another split (which would leak it between training and held-out data).
    """
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ValueError("split fractions must be non-negative and not all zero")
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for name, fraction in fractions.items():
        acc += fraction / total
        bounds.append((acc, name))
    assignment: dict[str, str] = {}
    for pid in patient_ids:
        digest = hashlib.sha256(f"{salt}:{pid}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        assignment[pid] = next((name for bound, name in bounds if u < bound), bounds[-1][1])
    return assignment
