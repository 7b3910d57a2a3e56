"""The CT phantom generator: deterministic, valid DICOM, geometry that reads back exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
from tests.support.ct_data import series_from_bytes
from tests.support.tools import require_tool

from medgate.datasets.ct_phantom import (
    GROUND_TRUTH_FILE,
    generate_ct_phantom,
    split_seeds,
    write_ct_folder,
    write_ct_series,
)
from medgate.models.images import read_volume


def test_same_seed_same_phantom_and_different_seeds_differ() -> None:
    a, b, c = generate_ct_phantom(11), generate_ct_phantom(11), generate_ct_phantom(12)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.mask, b.mask)
    assert a.spacing == b.spacing and a.nodules == b.nodules
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)
    uids_a = [ds.SOPInstanceUID for ds in series_from_bytes(a)]
    assert uids_a == [ds.SOPInstanceUID for ds in series_from_bytes(b)]


def test_phantom_content_is_plausible() -> None:
    p = generate_ct_phantom(3, nodules=2)
    assert 24 <= p.shape[0] <= 40 and p.shape[1:] == (96, 96)
    assert 3.0 <= p.spacing[1] <= 3.6 and 2.5 <= p.spacing[0] <= 5.0
    assert len(p.nodules) == 2
    for nodule in p.nodules:
        assert 4.0 <= nodule.diameter_mm <= 15.0
        x, y, z = p.voxel_centres()
        k = int(np.argmin(np.abs(z - nodule.center_mm[2])))
        r = int(np.argmin(np.abs(y - nodule.center_mm[1])))
        c = int(np.argmin(np.abs(x - nodule.center_mm[0])))
        assert -150 < p.hu[k, r, c] < 200  # solid tissue density at the nodule centre
    lung = p.hu[(p.hu > -920) & (p.hu < -780)]
    assert lung.size > 5000 and abs(float(np.median(lung)) + 850) < 20


def test_splits_are_disjoint() -> None:
    train, val, test = (set(split_seeds(s, 500)) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)


def test_dciodvfy_reports_no_errors(tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    phantom = generate_ct_phantom(21, nodules=1)
    files = write_ct_series(phantom, tmp_path / "s")
    for path in (files[0], files[len(files) // 2], files[-1]):
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        text = run.stdout + run.stderr
        assert "CTImage" in text
        assert "Error" not in text, text


def test_series_reads_back_with_geometry_and_hu(tmp_path: Path) -> None:
    phantom = generate_ct_phantom(33, nodules=1)
    files = write_ct_series(phantom, tmp_path / "s")
    datasets = [pydicom.dcmread(f) for f in reversed(files)]  # order must not matter
    volume, geometry = read_volume(datasets)
    assert np.array_equal(volume, phantom.hu.astype(np.float32))
    assert np.allclose(geometry.spacing, phantom.spacing, atol=1e-3)
    first = datasets[-1]
    assert first.Modality == "CT" and first.BodyPartExamined == "CHEST"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_folder_has_ground_truth(tmp_path: Path) -> None:
    phantoms = write_ct_folder(tmp_path, "test", 2)
    rows = (tmp_path / GROUND_TRUTH_FILE).read_text().strip().splitlines()
    assert len(rows) - 1 == sum(len(p.nodules) for p in phantoms)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
