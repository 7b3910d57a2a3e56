"""Volume assembly (3D path for CT bundles), measurements, and triage (rule and bundle paths)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medgate.clinical.triage_rules import rule_priority, rule_triage
from medgate.datasets.cxr_phantom import FINDINGS
from medgate.models.findings import Code, Finding, Measurement, ModelResult
from medgate.models.images import ImageError, read_volume
from medgate.models.measure import cardiothoracic_ratio, max_diameter_mm, measure, volume_mm3


def _slice(z: float, index: int, value: int, rows: int = 8, cols: int = 6) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = index
    ds.ImagePositionPatient = [-10.0, -20.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 5.0
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.full((rows, cols), value, "<i2").tobytes()
    return ds


def test_series_sorted_by_position_not_instance_number() -> None:
    # Instance numbers run opposite to the positions and the list is shuffled.
    slices = [_slice(z=2.5 * k, index=10 - k, value=100 * k) for k in range(5)]
    order = [3, 0, 4, 1, 2]
    volume, geometry = read_volume([slices[i] for i in order])
    assert volume.shape == (5, 8, 6)
    assert [float(v) for v in volume[:, 0, 0]] == [100 * k - 1024 for k in range(5)]
    assert geometry.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert geometry.frame_sop_instance_uids == [s.SOPInstanceUID for s in slices]
    with pytest.raises(ImageError, match="different sizes"):
        read_volume([_slice(0, 1, 0), _slice(1, 2, 0, rows=4)])


def test_multiframe_instance_uses_functional_groups() -> None:
    ds = _slice(0, 1, 0)
    ds.NumberOfFrames = 3
    frames = np.stack([np.full((8, 6), v, "<i2") for v in (30, 10, 20)])
    ds.PixelData = frames.tobytes()
    del ds.ImagePositionPatient
    per_frame = []
    for z in (6.0, 0.0, 3.0):
        group = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [0, 0, z]
        group.PlanePositionSequence = Sequence([plane])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    volume, geometry = read_volume([ds])
    assert [float(v) for v in volume[:, 0, 0]] == [10 - 1024, 20 - 1024, 30 - 1024]
    assert geometry.spacing[0] == pytest.approx(3.0)
    assert geometry.frame_sop_instance_uids == [ds.SOPInstanceUID] * 3


def test_measurements() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 10:40] = 1
    mask[20:80, 60:90] = 1
    mask[50:70, 35:65] = 2
    assert cardiothoracic_ratio(mask, 1, 2) == pytest.approx(30 / 80)
    assert measure("cardiothoracic_ratio", mask, {"lung": 1, "heart": 2}, (1, 1)) == pytest.approx(
        30 / 80
    )
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2).astype(np.uint8)
    assert max_diameter_mm(disc, 1, (0.5, 0.5)) == pytest.approx(10.5, abs=1.0)
    ball = np.stack([disc] * 4)
    assert volume_mm3(ball, 1, (2.0, 0.5, 0.5)) == pytest.approx(disc.sum() * 4 * 0.5)
    with pytest.raises(ValueError, match="unknown measurement"):
        measure("mystery", mask, {"lung": 1}, (1, 1), label="lung")


def _result(probabilities: dict[str, float], ctr: float | None = None) -> ModelResult:
    findings = [
        Finding(
            label=name,
            finding_type=Code(value=name, scheme="99TEST", meaning=name),
            probability=p,
            threshold=0.5,
            present=p >= 0.5,
        )
        for name, p in probabilities.items()
    ]
    measurements = []
    if ctr is not None:
        measurements.append(
            Measurement(
                name=Code(value="CTR", scheme="99MEDGATE", meaning="Cardiothoracic ratio"),
                value=ctr,
                unit=Code(value="1", scheme="UCUM", meaning="no units"),
            )
        )
    return ModelResult(
        bundle_name="t",
        bundle_version="1",
        task="classification",
        findings=findings,
        measurements=measurements,
    )


def test_rule_triage_without_a_bundle() -> None:
    none = dict.fromkeys(FINDINGS, 0.05)
    assert rule_triage([_result(none)]).priority == "routine"
    assert rule_triage([_result({**none, "pneumothorax": 0.9})]).priority == "critical"
    urgent = rule_triage([_result({**none, "effusion": 0.8})])
    assert urgent.priority == "urgent" and "effusion" in urgent.reasons[0]
    assert rule_triage([_result(none, ctr=0.6)]).priority == "urgent"
    assert rule_priority({}) == "routine"
