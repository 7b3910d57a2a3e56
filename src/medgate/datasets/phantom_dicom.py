"""Write phantoms as real DICOM Digital X-Ray images (DX, For Presentation), valid for dciodvfy.

The gateway, the routing rules and the models see phantoms exactly as they would see a modality's
images: Part 10 files with the DX Image IOD's modules (patient, study, series, equipment, DX
anatomy/image/detector, VOI LUT, SOP common), BodyPartExamined CHEST, PixelSpacing and
ImagerPixelSpacing. Identifiers are fake and derived from the seed, so a study is reproducible.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from medgate.core.uids import derived_uid
from medgate.datasets.cxr_phantom import Phantom


def _uid(kind: str, seed: int, namespace: str) -> str:
    return derived_uid(namespace, kind, str(seed))


def phantom_to_dataset(
    phantom: Phantom,
    *,
    namespace: str = "medgate-cxr-phantom",
    patient_id: str | None = None,
    institution: str = "Demo Township Health Centre",
) -> Dataset:
    """A DX For Presentation data set (with file meta) for one phantom.

    ``namespace`` separates UID spaces of different data sets generated from the same seeds.
    """
    seed = phantom.seed
    rows, cols = phantom.pixels.shape
    study_date = dt.date(2024, 1, 1) + dt.timedelta(days=seed % 700)
    birth = dt.date(study_date.year - phantom.patient_age, 1 + seed % 12, 1 + seed % 28)

    ds = Dataset()
    # Patient / General Study
    ds.PatientName = f"PHANTOM^CXR{seed:07d}"
    ds.PatientID = patient_id or f"PH{seed:08d}"
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = phantom.patient_sex
    ds.PatientAge = f"{phantom.patient_age:03d}Y"
    ds.StudyInstanceUID = _uid("study", seed, namespace)
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = f"{8 + seed % 10:02d}{seed % 60:02d}00"
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"S{seed % 100000:05d}"
    ds.AccessionNumber = f"A{seed:08d}"
    ds.StudyDescription = "XR CHEST PA"
    # General Series / DX Series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = _uid("series", seed, namespace)
    ds.SeriesNumber = 1
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.SeriesDescription = "CHEST PA"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = ""
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Equipment / Enhanced equipment basics
    ds.Manufacturer = "medgate phantom"
    ds.InstitutionName = institution
    ds.ManufacturerModelName = "cxr_phantom"
    ds.SoftwareVersions = "1"
    ds.DeviceSerialNumber = "PHANTOM-0001"
    # General Image / DX Image
    ds.InstanceNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageLaterality = "U"
    ds.ViewPosition = "PA"
    ds.AnatomicRegionSequence = Sequence([CodedConcept("51185008", "SCT", "Chest")])
    ds.ViewCodeSequence = Sequence([CodedConcept("399348003", "SCT", "postero-anterior")])
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
    ds.AcquisitionContextSequence = Sequence()
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.CalibrationImage = "NO"
    ds.QualityControlImage = "NO"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.WindowCenterWidthExplanation = "FULL RANGE"
    # DX Detector
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [f"{value:.4f}" for value in phantom.pixel_spacing_mm]
    ds.PixelSpacing = list(ds.ImagerPixelSpacing)
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "phantom geometry"
    ds.DistanceSourceToDetector = 1800
    ds.DistanceSourceToPatient = 1650
    ds.EstimatedRadiographicMagnificationFactor = round(1800 / 1650, 4)
    ds.PositionerType = "NONE"
    ds.KVP = 120
    ds.ExposureTime = 10
    ds.XRayTubeCurrent = 200
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(phantom.pixels, dtype="<u2").tobytes()
    # SOP Common
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = _uid("instance", seed, namespace)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.StudyTime

    return with_file_meta(ds)


def with_file_meta(ds: Dataset) -> Dataset:
    """``ds`` with the Part 10 file meta and preamble of an Explicit VR Little Endian file, as a
    modality would write it: ready for ``dcmwrite`` or a C-STORE."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDGATE"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    return ds
