"""Outbox and C-STORE durability tests that run on both index databases.

tests/dicom collects them on SQLite and tests/pg collects them again on PostgreSQL: each folder's
``service_factory`` fixture picks the database, so the same checks prove both. They live here,
not in one folder's test module, so that neither folder imports the other's tests.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from tests.support.storescu import dcmtk

from medgate.cli.dicom_service import DicomService
from medgate.datasets.synthetic_series import ct_series
from medgate.delivery.pacs import ResultSender
from medgate.dicom.net import self_peer
from medgate.dicom.orthanc import OrthancServer
from medgate.dicom.scu import store_files


def sender_of(service: DicomService) -> ResultSender:
    """The service's outbox sender (both folders' service fixtures start one)."""
    assert service.sender is not None
    return service.sender


def pacs_settings(orthanc: OrthancServer) -> dict:
    return {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}


def result_object(tmp_path: Path, service: DicomService) -> tuple[str, str]:
    """A small result-like object written through the store and queued in the outbox."""
    path = ct_series(tmp_path / "result", 1, rows=8, columns=8)[0]
    ds = dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    stored = service.store.write_result(ds)
    service.index.outbox.add(
        [(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), "sr", str(stored))]
    )
    return str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)


def test_results_delivered_to_orthanc(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    orthanc = orthanc_factory()
    service = service_factory(pacs=pacs_settings(orthanc))
    sender_of(service).stop()  # drive it by hand
    uid, _ = result_object(tmp_path, service)
    summary = sender_of(service).run_once()
    assert summary.sent == 1
    assert orthanc.find_instance(uid) is not None
    assert service.index.outbox.list(status="sent")[0].sop_instance_uid == uid
    assert sender_of(service).run_once().sent == 0  # nothing sent twice


def test_orthanc_down_then_up_delivers_once(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    orthanc = orthanc_factory()
    service = service_factory(
        pacs={
            **pacs_settings(orthanc),
            "send_backoff_seconds": 0.2,
            "send_backoff_max_seconds": 0.4,
            "send_max_attempts": 2,
        }
    )
    orthanc.stop()
    uid, _ = result_object(tmp_path, service)
    sender_of(service).wake()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = service.index.outbox.list()[0]
        if row.attempts >= 3:
            break
        time.sleep(0.1)
    row = service.index.outbox.list()[0]
    # unreachable PACS: retried beyond send_max_attempts, never dead-lettered
    assert row.status == "pending" and row.attempts >= 3 and row.refusals == 0
    assert "unreachable" in (row.last_error or "")
    orthanc.start()
    deadline = time.monotonic() + 15
    while service.index.outbox.list()[0].status != "sent" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.index.outbox.list()[0].status == "sent"
    time.sleep(1.0)  # a further pass must not send it again
    assert orthanc.find_instance(uid) is not None
    assert len(orthanc.get("/instances")) == 1
    sent_events = [e for e in service.audit.entries() if e["event"] == "result-sent"]
    assert len(sent_events) == 1


# Orthanc 1.10.1 answers C-STORE *success* when ReceivedInstanceFilter returns false (it drops the
# instance silently); a filter that raises makes it answer a failure status (0xA700).
REJECT_ALL = """
function ReceivedInstanceFilter(dicom, origin, info)
  error("rejected by site policy")
end
"""


def test_orthanc_rejecting_dead_letters(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    orthanc = orthanc_factory(lua=REJECT_ALL)
    service = service_factory(
        pacs={**pacs_settings(orthanc), "send_backoff_seconds": 0.1, "send_max_attempts": 3}
    )
    sender_of(service).stop()
    uid, _ = result_object(tmp_path, service)
    for _ in range(10):
        sender_of(service).run_once()
        if service.index.outbox.list(status="dead"):
            break
        time.sleep(0.15)
    rows = service.index.outbox.list()
    assert rows[0].status == "dead"
    assert rows[0].attempts == 3 and rows[0].refusals == 3
    assert "PACS status 0x" in (rows[0].last_error or "")
    assert orthanc.find_instance(uid) is None
    assert sender_of(service).run_once().sent == 0  # no endless loop: dead stays dead
    assert any(e["event"] == "result-dead-lettered" for e in service.audit.entries())


def test_aborted_association_keeps_nothing_partial(tmp_path: Path, service: DicomService) -> None:
    files = ct_series(tmp_path / "big", 40, rows=512, columns=512)
    proc = subprocess.Popen(
        [dcmtk("storescu"), "-aec", "MEDGATE", "127.0.0.1", str(service.port), *map(str, files)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while service.index.instances.count() < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the sender dies mid-association
    proc.wait()
    time.sleep(0.5)
    stored = list(service.store.instances_dir.rglob("*.dcm"))
    assert 5 <= len(stored) < 40
    assert not list(service.store.instances_dir.rglob("*.part"))
    assert len(stored) == service.index.instances.count()
    for path in stored:
        dcmread(path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_duplicate_uid_same_or_different_bytes(
    tmp_path: Path, service_factory: Callable[..., DicomService], overwrite: bool
) -> None:
    service = service_factory(dicom={"overwrite_duplicates": overwrite})
    first = ct_series(tmp_path / "a", 1, rows=16, columns=16)[0]
    ds = dcmread(first)
    ds.SeriesDescription = "changed"
    second = tmp_path / "second.dcm"
    ds.save_as(second)
    peer = self_peer(service.settings)
    assert store_files(service.settings, peer, [first, first, second]).failed == 0
    assert service.index.instances.count() == 1
    stored = service.store.path_for(str(ds.SOPInstanceUID))
    expected = second if overwrite else first
    assert dcmread(stored).SeriesDescription == dcmread(expected).SeriesDescription
    record = service.index.instances.get(str(ds.SOPInstanceUID))
    assert record is not None
    assert record.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
