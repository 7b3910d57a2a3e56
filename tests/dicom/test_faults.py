"""Bad input and bad luck: rejected AEs, malformed data sets, a full disk, aborted associations."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from tests.support.durability_cases import (  # noqa: F401 - collected here on SQLite
    test_aborted_association_keeps_nothing_partial,
    test_duplicate_uid_same_or_different_bytes,
)
from tests.support.pydicom_testfiles import STORAGE_CLASSES, classified
from tests.support.storescu import STORESCU_PROPOSE, dcmtk, storescu

from medgate.cli.dicom_service import DicomService
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.net import self_peer
from medgate.dicom.scu import store_files


def _echo(
    port: int, aet: str = "ECHOSCU", aec: str = "MEDGATE"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", aet, "-aec", aec, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unknown_calling_ae_and_wrong_called_ae_rejected(
    service_factory: Callable[..., DicomService],
) -> None:
    service = service_factory(dicom={"allowed_calling_aes": ["MODALITY1"]})
    rejected = _echo(service.port, aet="INTRUDER")
    assert rejected.returncode != 0
    assert "Calling AE Title Not Recognized" in rejected.stderr + rejected.stdout
    wrong_called = _echo(service.port, aet="MODALITY1", aec="SOMEONEELSE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr + wrong_called.stdout
    assert _echo(service.port, aet="MODALITY1").returncode == 0
    service.receiver.audit_queue.flush()
    alerts = [e for e in service.audit.entries() if e["event"] == "security-alert"]
    assert len(alerts) == 2


def _wrap(
    body: bytes,
    folder: Path,
    name: str,
    sop_class: str = CTImageStorage,
    syntax: str = ExplicitVRLittleEndian,
) -> Path:
    """A Part 10 file with a correct File Meta around an arbitrary data set body."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = generate_uid()
    path = folder / name
    with open(path, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(handle, meta, enforce_standard=True)
        handle.write(body)
    return path


def _malformed_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    _, invalid = classified()
    for path, _why in invalid:
        try:
            meta = read_file_meta_info(path)
            sendable = (
                str(meta.get("MediaStorageSOPClassUID", "")) in STORAGE_CLASSES
                and "TransferSyntaxUID" in meta
                and "MediaStorageSOPInstanceUID" in meta
            )
        except Exception:
            sendable = False
        if sendable:
            files.append(path)
        else:  # no usable File Meta: send its bytes as the data set of a CT instance
            name = f"wrapped-{len(files)}-{path.name}"
            files.append(_wrap(path.read_bytes()[:200_000], folder, name))
    good = ct_series(folder / "good", 1, rows=16, columns=16)[0]
    data = good.read_bytes()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 200])
    files.append(truncated)
    files.append(_wrap(os.urandom(4096), folder, "random.dcm"))
    files.append(_wrap(b"", folder, "empty.dcm"))
    return files


def test_malformed_data_sets_get_failure_status_and_service_keeps_serving(
    tmp_path: Path, service: DicomService
) -> None:
    files = _malformed_files(tmp_path / "bad")
    report = store_files(service.settings, self_peer(service.settings), files)
    outcomes = {path.name: (code, meaning) for path, code, meaning in report.results}
    wrong = {name: o for name, o in outcomes.items() if o[1] != "Failure"}
    # every malformed object is refused with a DICOM failure status, not acknowledged
    assert not wrong, wrong
    assert all(
        code is not None and (code >> 8) in (0xA7, 0xA9, 0xC0) for code, _ in outcomes.values()
    )
    assert len(report.results) == len(files) >= 30
    assert service.index.instances.count() == 0
    assert not list(service.store.instances_dir.rglob("*.dcm"))
    # ... and the next association works
    assert _echo(service.port).returncode == 0
    good = ct_series(tmp_path / "ok", 2, rows=16, columns=16)
    assert store_files(service.settings, self_peer(service.settings), good).failed == 0
    assert service.index.instances.count() == 2
    service.receiver.audit_queue.flush()
    rejected = [e for e in service.audit.entries() if e["event"] == "instance-rejected"]
    assert len(rejected) == len(files)


def test_low_disk_answers_out_of_resources(
    tmp_path: Path, service_factory: Callable[..., DicomService]
) -> None:
    service = service_factory(storage={"min_free_mb": 10**9})
    files = ct_series(tmp_path / "s", 3, rows=16, columns=16)
    result = storescu(service.port, files, "-R", STORESCU_PROPOSE[ExplicitVRLittleEndian])
    output = result.stdout + result.stderr
    assert output.count("Received Store Response (Refused: OutOfResources)") == 3, output[-2000:]
    report = store_files(service.settings, self_peer(service.settings), files[:1])
    assert report.results[0][1] == 0xA700
    assert service.index.instances.count() == 0
    assert not [p for p in service.store.instances_dir.rglob("*") if p.is_file()]


def test_recover_after_crash_artifacts(
    tmp_path: Path, settings_factory: Callable[..., object]
) -> None:
    """What a crash mid-store can leave is cleaned when the service starts again."""
    from medgate.store.instances import InstanceRecord

    settings = settings_factory()
    service = DicomService(settings)  # not started: the crash state is set up first
    files = ct_series(tmp_path / "s", 2, rows=8, columns=8)
    uids = [str(dcmread(f).SOPInstanceUID) for f in files]
    study = str(dcmread(files[0]).StudyInstanceUID)
    # 1: row committed, file never renamed into place (temp file left)
    ghost = service.store.path_for(uids[0])
    ghost.parent.mkdir(parents=True, exist_ok=True)
    partial = ghost.with_name(f".{ghost.name}.1.1.part")
    partial.write_bytes(b"half")
    service.index.instances.add(
        InstanceRecord(
            uids[0], study, "1.2.3", CTImageStorage, ExplicitVRLittleEndian, 4, "0" * 64, str(ghost)
        )
    )
    service.start()
    try:
        assert not partial.exists()
        assert service.index.instances.get(uids[0]) is None
        assert service.index.studies.get(study) is None
        # the peer never got success, re-sends: stored and indexed once
        report = store_files(settings, self_peer(settings), files)
        assert report.failed == 0
        assert service.index.instances.count() == 2
    finally:
        service.stop()
