"""Test data of the trust suite: PHI-laden synthetic instances, pydicom's bundled files, and
the reading of identifying values out of a data set (what de-identification must remove)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_files
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UID_dictionary, generate_uid


def pydicom_test_files() -> list[Path]:
    """pydicom's bundled files that read as Part 10 (real vendor files, several syntaxes)."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(get_testdata_files("*.dcm")):
            try:
                pydicom.dcmread(name, stop_before_pixels=True)
            except Exception:
                continue
            found.append(Path(name))
    return found


SYNTHETIC_PHI = {
    "PatientName": "Zhang^Weiguo^^Dr",
    "PatientID": "MRN-0045817",
    "PatientBirthDate": "19610314",
    "OtherPatientIDs": "ALT-99102233",
    "AccessionNumber": "ACC20240615X",
    "InstitutionName": "Qingshan Township Health Centre",
    "InstitutionAddress": "12 Riverside Road, Qingshan",
    "ReferringPhysicianName": "Li^Mingxia",
    "PerformingPhysicianName": "Wang^Haoran",
    "OperatorsName": "Chen^Jiayi",
    "StationName": "QSCR-ROOM2",
    "DeviceSerialNumber": "SN-7731-AB",
    "StudyID": "STUDY8812",
    "PatientAddress": "Flat 3, 88 Orchard Lane",
    "PatientTelephoneNumbers": "+86-13900004521",
    "RequestingPhysician": "Zhou^Yanping",
}


def synthetic_dataset(
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1.1",
    *,
    burned_in: str | None = "NO",
    study_uid: str | None = None,
    patient_id: str | None = None,
) -> Dataset:
    """A small DX instance full of identifying values, nested sequences and private tags."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in SYNTHETIC_PHI.items():
        setattr(ds, keyword, value)
    if patient_id:
        ds.PatientID = patient_id
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.PatientWeight = "58.5"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyDate = "20240615"
    ds.SeriesDate = "20240615"
    ds.ContentDate = "20240615"
    ds.AcquisitionDateTime = "20240615093012.123456+0800"
    ds.StudyTime = "093000"
    ds.ContentTime = "093012"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "ACME Imaging"
    ds.StudyDescription = "Chest PA for Zhang Weiguo 2024-06-15"
    ds.SeriesDescription = "PA erect MRN-0045817"
    ds.ImageComments = "Patient Zhang reports cough"
    ds.PatientComments = "lives alone"
    ds.InstanceNumber = 1
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedStudySequence = Sequence([ref])
    request = Dataset()
    request.AccessionNumber = SYNTHETIC_PHI["AccessionNumber"]
    request.RequestedProcedureID = "RP-553311"
    request.StudyInstanceUID = ds.StudyInstanceUID
    request.RequestingPhysician = SYNTHETIC_PHI["RequestingPhysician"]
    ds.RequestAttributesSequence = Sequence([request])
    other = Dataset()
    other.PatientID = SYNTHETIC_PHI["OtherPatientIDs"]
    other.IssuerOfPatientID = "Qingshan Hospital Registry"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0041, "ACME PHI STORE", create=True)
    block.add_new(0x10, "LO", "Zhang Weiguo private copy")
    block.add_new(0x11, "LO", "kept private value")
    ds.add_new(0x60004000, "LT", "overlay note: Zhang Weiguo")
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(64))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "QSCR-ROOM2"
    ds.file_meta = meta
    return ds


PHI_KEYWORDS = {
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "StudyID",
    "RequestedProcedureID",
    "IssuerOfPatientID",
    "PersonName",
    "ContentCreatorName",
    "VerifyingObserverName",
    "VerifyingOrganization",
    "PhysiciansOfRecord",
    "PatientBirthName",
}


def phi_values(ds: Dataset) -> set[str]:
    """Identifying values of a data set, at any depth, long enough not to match by chance."""
    found: set[str] = set()

    def walk(item: Dataset) -> None:
        for elem in item:
            if elem.VR == "SQ":
                for sub in elem.value or []:
                    walk(sub)
                continue
            if elem.keyword in PHI_KEYWORDS or elem.VR in ("PN", "UI"):
                values = elem.value if elem.VM > 1 else [elem.value]
            else:
                continue
            for value in values:
                text = str(value or "").strip().rstrip("\x00")
                if elem.VR == "UI" and (
                    text in UID_dictionary or elem.keyword == "ImplementationClassUID"
                ):
                    continue
                if len(text) >= 6 and len(set(text)) >= 3:  # "000000" matches by chance
                    found.add(text)

    walk(ds)
    if ds.get("file_meta") is not None:
        walk(ds.file_meta)
    return found
