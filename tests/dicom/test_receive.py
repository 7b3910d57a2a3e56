"""Receiving from DCMTK: C-ECHO, C-STORE of pydicom's test files, bytes kept exactly as sent."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from tests.support.pydicom_testfiles import classified, dataset_bytes
from tests.support.storescu import (
    STORESCU_PROPOSE,
    dcmtk,
    storescu,
    storescu_attempts,
    storescu_successes,
)

from medgate.api.app import create_app
from medgate.cli.dicom_service import DicomService
from medgate.core.checksums import sha256_file
from medgate.dicom.net import self_peer
from medgate.dicom.scu import store_files


def test_echoscu(service: DicomService) -> None:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aec", "MEDGATE", "127.0.0.1", str(service.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_storescu_every_valid_test_file_stored_as_sent(service: DicomService) -> None:
    valid, _ = classified()
    assert len(valid) > 100
    by_syntax: dict[str, list[Path]] = defaultdict(list)
    for path in valid:
        by_syntax[str(read_file_meta_info(path).TransferSyntaxUID)].append(path)
    first_sent: dict[str, Path] = {}
    acknowledged: set[str] = set()
    attempted: set[str] = set()
    for syntax, files in by_syntax.items():
        result = storescu(service.port, files, "-R", STORESCU_PROPOSE[syntax])
        output = result.stdout + result.stderr
        acknowledged.update(storescu_successes(output))
        attempted.update(storescu_attempts(output))
        for path in files:
            if str(path) in attempted:
                uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
                first_sent.setdefault(uid, path)
    # Every file storescu sent is acknowledged (a duplicate UID too: "already stored").
    assert attempted == acknowledged
    # DCMTK itself refuses a handful that pydicom reads leniently (odd lengths, bad VRs).
    refused_by_sender = {Path(p).name for p in {str(p) for p in valid} - attempted}
    assert len(refused_by_sender) <= 5, refused_by_sender
    index = service.index
    assert index.instances.count() == len(first_sent)
    for uid, path in first_sent.items():
        row = index.instances.get(uid)
        assert row is not None, path.name
        stored = Path(row.path)
        assert stored.name == f"{uid}.dcm"
        assert sha256_file(stored) == row.sha256
        dcmread(stored)  # a complete, readable Part 10 file
        meta = read_file_meta_info(stored)
        assert str(meta.TransferSyntaxUID) == str(read_file_meta_info(path).TransferSyntaxUID)
        assert row.transfer_syntax_uid == str(meta.TransferSyntaxUID)
    # the index and the HTTP API agree on studies and instance counts
    studies = {s.study_instance_uid: s.instances for s in index.studies.list()}
    client = TestClient(create_app(service.settings, index))
    response = client.get("/api/v1/studies")
    assert response.status_code == 200
    api = {s["study_instance_uid"]: s["instances"] for s in response.json()}
    assert api == studies
    assert sum(api.values()) == len(first_sent)
    expected_studies = {
        str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in first_sent.values()
    }
    assert set(api) == expected_studies


def test_data_set_bytes_identical_to_what_was_sent(service: DicomService) -> None:
    """Sent raw (pynetdicom streams the file's data set unchanged), stored byte for byte.

    DCMTK's storescu re-encodes data sets while sending, so the wire bytes are compared through
    a sender that does not: medgate's own ``send`` (pynetdicom, chunked file streaming).
    """
    valid, _ = classified()
    report = store_files(service.settings, self_peer(service.settings), list(valid))
    assert report.failed == 0, [r for r in report.results if r[2] != "Success"]
    first_sent: dict[str, Path] = {}
    for path in valid:
        first_sent.setdefault(str(read_file_meta_info(path).MediaStorageSOPInstanceUID), path)
    assert service.index.instances.count() == len(first_sent)
    for uid, path in first_sent.items():
        stored = service.store.path_for(uid)
        assert dataset_bytes(stored) == dataset_bytes(path), path.name
