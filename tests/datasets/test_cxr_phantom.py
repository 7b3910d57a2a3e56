"""Chest radiograph phantoms: deterministic, valid DICOM (dciodvfy), true labels, clean splits."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.support.tools import require_tool

from medgate.datasets.cxr_phantom import (
    CTR_THRESHOLD,
    FINDINGS,
    cardiothoracic_ratio,
    generate_phantom,
    split_seeds,
)
from medgate.datasets.folder import patient_split, read_labeled_folder, write_phantom_folder
from medgate.datasets.phantom_dicom import phantom_to_dataset


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_same_seed_same_phantom_and_same_dicom_bytes() -> None:
    a, b = generate_phantom(1234), generate_phantom(1234)
    assert np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(a.mask, b.mask)
    assert a.labels == b.labels and a.ctr == b.ctr
    assert _bytes(phantom_to_dataset(a)) == _bytes(phantom_to_dataset(b))
    c = generate_phantom(1235)
    assert not np.array_equal(a.pixels, c.pixels) or a.pixels.shape != c.pixels.shape
    assert phantom_to_dataset(a).SOPInstanceUID != phantom_to_dataset(c).SOPInstanceUID


def test_phantoms_vary_and_labels_match_the_anatomy() -> None:
    phantoms = [generate_phantom(seed) for seed in range(60)]
    shapes = {p.pixels.shape for p in phantoms}
    spacings = {round(p.pixel_spacing_mm[0], 2) for p in phantoms}
    assert len(shapes) > 3 and len(spacings) > 20
    for name in FINDINGS:
        rate = np.mean([p.labels[name] for p in phantoms])
        assert 0.05 < rate < 0.6, (name, rate)
    for p in phantoms:
        assert p.pixels.dtype == np.uint16 and p.pixels.max() <= 4095
        assert set(np.unique(p.mask)) <= {0, 1, 2}
        # The cardiomegaly label agrees with the CTR measured on the ground-truth mask.
        assert (p.ctr > CTR_THRESHOLD) == bool(p.labels["cardiomegaly"]), (p.seed, p.ctr)
        assert (p.nodule_diameter_mm > 0) == bool(p.labels["nodule"])
        assert cardiothoracic_ratio(p.mask) == pytest.approx(p.ctr)


def test_forced_findings_are_rendered() -> None:
    clear = generate_phantom(7, findings=dict.fromkeys(FINDINGS, False))
    full = generate_phantom(7, findings=dict.fromkeys(FINDINGS, True))
    assert not any(clear.labels.values()) and all(full.labels.values())
    assert full.nodule_center is not None and 12 <= full.nodule_diameter_mm <= 40
    assert (full.mask == 1).sum() < (clear.mask == 1).sum()  # the effusion hides lung
    with pytest.raises(ValueError, match="unknown finding"):
        generate_phantom(7, findings={"fracture": True})


def test_dicom_is_a_valid_dx_for_presentation(tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    for seed in (0, 11):
        phantom = generate_phantom(seed, findings=dict.fromkeys(FINDINGS, seed == 11))
        ds = phantom_to_dataset(phantom)
        path = tmp_path / f"{seed}.dcm"
        ds.save_as(path, enforce_file_format=True)
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        report = run.stdout + run.stderr
        assert "DXImageForPresentation" in report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], errors
        back = pydicom.dcmread(path)
        assert back.Modality == "DX" and back.BodyPartExamined == "CHEST"
        assert back.PresentationIntentType == "FOR PRESENTATION"
        assert float(back.PixelSpacing[0]) == pytest.approx(phantom.pixel_spacing_mm[0], abs=1e-4)
        assert back.ImagerPixelSpacing == back.PixelSpacing
        assert np.array_equal(back.pixel_array, phantom.pixels)


def test_folder_round_trip_and_disjoint_splits(tmp_path: Path) -> None:
    write_phantom_folder(tmp_path / "train", "train", 6)
    write_phantom_folder(tmp_path / "test", "test", 4)
    train = read_labeled_folder(tmp_path / "train")
    test = read_labeled_folder(tmp_path / "test")
    assert len(train) == 6 and len(test) == 4
    assert not {s.patient_id for s in train} & {s.patient_id for s in test}
    assert not set(split_seeds("train", 10_000)) & set(split_seeds("test", 10_000))
    study = test[0]
    ds = study.datasets()[0]
    assert ds.PatientID == study.patient_id and ds.StudyInstanceUID == study.study_instance_uid
    mask = study.mask_array()
    assert mask is not None and mask.shape == (ds.Rows, ds.Columns)
    assert set(study.labels) == set(FINDINGS)
    assert study.values["ctr"] == pytest.approx(cardiothoracic_ratio(mask), abs=1e-5)
    with pytest.raises(ValueError, match=r"no labels\.csv"):
        read_labeled_folder(tmp_path)


def test_patient_level_split_keeps_each_patient_in_one_split() -> None:
    # 300 patients with 1-4 studies each: every study of a patient lands in the same split.
    studies = [(f"P{p:04d}", f"S{p}-{k}") for p in range(300) for k in range(1 + p % 4)]
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    assignment = patient_split([pid for pid, _ in studies], fractions)
    by_split: dict[str, set[str]] = {}
    for pid, _ in studies:
        by_split.setdefault(assignment[pid], set()).add(pid)
    names = list(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not by_split[a] & by_split[b]
    assert 0.6 < len(by_split["train"]) / 300 < 0.8
    # Order-independent and stable when patients are added.
    again = patient_split(reversed([pid for pid, _ in studies] + ["NEW1"]), fractions)
    assert all(again[pid] == assignment[pid] for pid in assignment)
    with pytest.raises(ValueError):
        patient_split(["a"], {"train": 0.0})
