"""A store filled the way the receiver leaves one, for the export tests: pydicom's bundled
files copied byte for byte and PHI-laden synthetic instances (two studies of one patient, a
burned-in annotation, a secondary capture), each with its index row."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.uid import generate_uid
from tests.support.phi_data import synthetic_dataset

from medgate.core.config import Settings
from medgate.store.db import Index
from medgate.store.instances import InstanceRecord


@dataclass
class FilledStore:
    index: Index
    study_uids: list[str]
    files: list[Path]


def fill_store(settings: Settings, pydicom_files: list[Path]) -> FilledStore:
    """The index and the files of ``settings``' storage: ``pydicom_files`` and synthetic ones."""
    root = Path(settings.storage.path)
    root.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    originals: list[Path] = []
    sources: list[Dataset] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom_files:
            sources.append(pydicom.dcmread(path))
    shared_study = generate_uid()
    for _ in range(3):
        sources.append(synthetic_dataset(study_uid=shared_study, patient_id="MRN-0045817"))
    sources.append(synthetic_dataset(patient_id="MRN-0045817"))  # same patient, 2nd study
    sources.append(synthetic_dataset(burned_in="YES"))
    sources.append(synthetic_dataset("1.2.840.10008.5.1.4.1.1.7", burned_in=None))
    for n, ds in enumerate(sources):
        sop = str(ds.get("SOPInstanceUID", "") or f"1.2.3.{n}")
        study = str(ds.get("StudyInstanceUID", "") or f"1.2.3.9.{n}")
        target = root / "instances" / f"{n:03d}" / f"{sop}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        if n < len(pydicom_files):
            shutil.copyfile(pydicom_files[n], target)
        else:
            ds.save_as(target, enforce_file_format=True)
        originals.append(target)
        record = InstanceRecord(
            sop_instance_uid=sop,
            study_instance_uid=study,
            series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "1.2.3"),
            sop_class_uid=str(ds.get("SOPClassUID", "") or "1.2.3"),
            transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "") or "1.2.3"),
            size=target.stat().st_size,
            sha256="0" * 64,
            path=str(target),
            modality=str(ds.get("Modality", "") or ""),
        )
        index.instances.add(record)
    studies = [row.study_instance_uid for row in index.studies.list()]
    return FilledStore(index, studies, originals)
