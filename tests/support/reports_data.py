"""Synthetic sources and realistic StudyResults for the reports tests.

A DX chest radiograph (Chinese patient name in GB18030, so character sets are exercised) and a
small chest CT series with a spherical nodule are made with pydicom; StudyResults mimic what the
chest-radiograph and chest-CT bundles emit (codes, probabilities, UCUM measurements, label masks
on the source grid, a heat map).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from medgate.models.findings import (
    Code,
    Finding,
    Measurement,
    ModelResult,
    Segment,
    SegmentationOutput,
    StudyResult,
    TriageResult,
)

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"

SCT = "SCT"
LUNG = Code(value="39607008", scheme=SCT, meaning="Lung")
HEART = Code(value="80891009", scheme=SCT, meaning="Heart")
ORGAN = Code(value="91772007", scheme=SCT, meaning="Organ")
ABNORMAL = Code(value="49755003", scheme=SCT, meaning="Morphologically Abnormal Structure")
NODULE = Code(value="27925004", scheme=SCT, meaning="Nodule")
PNEUMOTHORAX = Code(value="36118008", scheme=SCT, meaning="Pneumothorax")
EFFUSION = Code(value="60046008", scheme=SCT, meaning="Pleural effusion")
CARDIOMEGALY = Code(value="287272002", scheme=SCT, meaning="Cardiomegaly")
DIAMETER = Code(value="81827009", scheme=SCT, meaning="Diameter")
CTR = Code(value="59076-0", scheme="LN", meaning="Cardiothoracic Area Ratio")
MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
ONE = Code(value="1", scheme="UCUM", meaning="no units")


def _file_meta(ds: Dataset) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _patient_study(ds: Dataset, study_uid: str) -> None:
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = "张^三"
    ds.PatientID = "SYN-0042"
    ds.PatientBirthDate = "19600315"
    ds.PatientSex = "M"
    ds.PatientAge = "064Y"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20240601"
    ds.StudyTime = "093000"
    ds.AccessionNumber = "ACC42"
    ds.StudyID = "42"
    ds.ReferringPhysicianName = "李^医生"
    ds.InstitutionName = "Township Health Centre"


def make_dx(size: int = 256, seed: int = 1) -> Dataset:
    """A PA chest radiograph: two darker lung fields, a brighter heart, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 2600 + 300 * rng.standard_normal((size, size))
    lungs = ((xx - 0.3) ** 2 / 0.03 + (yy - 0.5) ** 2 / 0.12 < 1) | (
        (xx - 0.7) ** 2 / 0.03 + (yy - 0.5) ** 2 / 0.12 < 1
    )
    heart = (xx - 0.55) ** 2 / 0.02 + (yy - 0.65) ** 2 / 0.015 < 1
    image[lungs] -= 1500
    image[heart] += 900
    ds = Dataset()
    _patient_study(ds, generate_uid())
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [1.4, 1.4]
    ds.PixelSpacing = [1.4, 1.4]
    ds.Manufacturer = "Synthetic DR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.clip(image, 0, 4095).astype(np.uint16).tobytes()
    _file_meta(ds)
    ds._masks = {"lungs": lungs, "heart": heart}
    return ds


def make_ct(slices: int = 12, size: int = 64, seed: int = 2) -> list[Dataset]:
    """A small axial chest CT with a 7 mm spherical nodule in the right lung."""
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(slices):
        yy, xx = np.mgrid[0:size, 0:size]
        hu = -850 + 40 * rng.standard_normal((size, size))
        c = size / 2
        hu[(xx - c) ** 2 / (0.22 * size**2) + (yy - c) ** 2 / (0.15 * size**2) > 1] = 40
        ds = Dataset()
        _patient_study(ds, study)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic CT"
        ds.BodyPartExamined = "CHEST"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-22.4, -22.4, float(k) * 1.5]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 1.5
        ds.PixelSpacing = [0.7, 0.7]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds._hu = hu
        out.append(ds)
    # a sphere of radius 3.5 mm in the right lung (image left), mid-series
    zz, yy, xx = np.mgrid[0:slices, 0:size, 0:size]
    cx, cy, cz = 0.32 * size, 0.45 * size, slices // 2
    nodule = ((xx - cx) * 0.7) ** 2 + ((yy - cy) * 0.7) ** 2 + ((zz - cz) * 1.5) ** 2 <= 3.5**2
    for k, ds in enumerate(out):
        hu = ds._hu
        hu[nodule[k]] = 30
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        del ds._hu
        _file_meta(ds)
    out[0]._nodule = nodule
    return out


def cxr_study(dx: Dataset, *, effusion: bool = True, ctr: float = 0.56) -> StudyResult:
    """Classifier (with heat map) + lung/heart segmentation with CTR, as the CXR bundles emit."""
    uid = str(dx.SOPInstanceUID)
    masks = dx._masks
    labels = np.zeros((dx.Rows, dx.Columns), dtype=np.uint8)
    labels[masks["lungs"]] = 1
    labels[masks["heart"]] = 2
    yy, xx = np.mgrid[0 : dx.Rows, 0 : dx.Columns] / dx.Rows
    heat = np.exp(-(((xx - 0.7) ** 2 + (yy - 0.8) ** 2) / 0.01))
    classifier = ModelResult(
        bundle_name="cxr_classifier",
        bundle_version="1.2.0",
        task="classification",
        device_uid="2.25.1234567890123456789",
        source_sop_instance_uids=[uid],
        findings=[
            Finding(
                label="pneumothorax",
                finding_type=PNEUMOTHORAX,
                finding_site=LUNG,
                probability=0.08,
                threshold=0.4,
                present=False,
            ),
            Finding(
                label="effusion",
                finding_type=EFFUSION,
                finding_site=LUNG,
                probability=0.81 if effusion else 0.1,
                present=effusion,
            ),
            Finding(
                label="cardiomegaly",
                finding_type=CARDIOMEGALY,
                finding_site=HEART,
                probability=0.74,
                present=ctr > 0.5,
            ),
        ],
        heatmaps={uid: heat},
    )
    segmenter = ModelResult(
        bundle_name="cxr_lung_heart_seg",
        bundle_version="0.3.1",
        task="segmentation",
        source_sop_instance_uids=[uid],
        segmentation=SegmentationOutput(
            segments=[
                Segment(number=1, label="lungs", category=ORGAN, type=LUNG),
                Segment(number=2, label="heart", category=ORGAN, type=HEART),
            ],
            masks={uid: labels},
        ),
        measurements=[
            Measurement(
                name=CTR,
                value=ctr,
                unit=ONE,
                finding_site=HEART,
                segment_number=2,
                source_sop_instance_uids=[uid],
            )
        ],
    )
    return StudyResult(
        study_instance_uid=str(dx.StudyInstanceUID),
        model_results=[classifier, segmenter],
        triage=TriageResult(priority="urgent", reasons=["pleural effusion p=0.81"]),
    )


def ct_study(ct: list[Dataset], diameter: float = 7.0) -> StudyResult:
    """A nodule segmentation with its diameter, as the chest-CT bundle emits."""
    nodule = ct[0]._nodule
    uids = [str(ds.SOPInstanceUID) for ds in ct]
    result = ModelResult(
        bundle_name="ct_nodule_seg",
        bundle_version="2.0.0",
        task="segmentation",
        source_sop_instance_uids=uids,
        findings=[
            Finding(
                label="nodule",
                finding_type=NODULE,
                finding_site=LUNG,
                probability=0.93,
                present=True,
                tracking_id="nodule 1",
                measurements=[
                    Measurement(
                        name=DIAMETER,
                        value=diameter,
                        unit=MM,
                        finding_site=LUNG,
                        segment_number=1,
                    )
                ],
            )
        ],
        segmentation=SegmentationOutput(
            segments=[Segment(number=1, label="nodule", category=ABNORMAL, type=NODULE)],
            masks={"volume": nodule.astype(np.uint8)},
            frame_sop_instance_uids=uids,
        ),
    )
    return StudyResult(study_instance_uid=str(ct[0].StudyInstanceUID), model_results=[result])
