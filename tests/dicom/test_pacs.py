"""medgate against a real Orthanc: C-FIND + C-MOVE/C-GET pulls, results delivered, retried,
dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from medgate.cli.dicom_service import DicomService
from medgate.datasets.synthetic_series import ct_series
from medgate.delivery.pacs import backoff_seconds
from medgate.dicom.orthanc import OrthancServer
from medgate.dicom.retriever import RetrieveError


def _pacs_settings(orthanc: OrthancServer) -> dict:
    return {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}


def _upload_series(orthanc: OrthancServer, folder: Path, count: int) -> tuple[str, list[str]]:
    paths = ct_series(folder, count, rows=32, columns=32)
    uids = []
    for path in paths:
        orthanc.upload(path.read_bytes())
        uids.append(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    study = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    return study, uids


@pytest.mark.parametrize("method", ["move", "get"])
def test_find_and_pull_study_from_orthanc(
    method: str,
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    from medgate.core.ports import free_port

    port = free_port()
    orthanc = orthanc_factory(modalities={"medgate": ("MEDGATE", "127.0.0.1", port)})
    study, uids = _upload_series(orthanc, tmp_path / "series", 5)
    service = service_factory(
        dicom={"port": port, "retrieve_method": method, "study_idle_seconds": 0.5},
        pacs=_pacs_settings(orthanc),
    )
    found = service.retriever.find(ModalitiesInStudy="CT")
    assert [row["StudyInstanceUID"] for row in found] == [study]
    assert found[0]["NumberOfStudyRelatedInstances"] == "5"
    result = service.retriever.pull(study)
    assert result.ok, result
    assert result.completed == 5
    for uid in uids:
        row = service.index.instances.get(uid)
        assert row is not None and Path(row.path).exists()
        assert row.calling_ae == orthanc.ae_title
    # the assembler queues the study once it is idle
    deadline = time.monotonic() + 10
    while service.index.studies.get(study).status != "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.index.studies.get(study).status == "queued"
    events = [e["event"] for e in service.audit.entries()]
    assert "query" in events and "retrieve" in events and "instance-received" in events


def test_pull_from_unreachable_pacs_is_a_clear_error(
    service_factory: Callable[..., DicomService],
) -> None:
    from medgate.core.ports import free_port

    service = service_factory(pacs={"port": free_port()})
    with pytest.raises(RetrieveError, match="unreachable"):
        service.retriever.find()


def test_poll_pulls_each_new_study_once(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    from medgate.core.ports import free_port

    port = free_port()
    orthanc = orthanc_factory(modalities={"medgate": ("MEDGATE", "127.0.0.1", port)})
    study, _ = _upload_series(orthanc, tmp_path / "a", 3)
    service = service_factory(dicom={"port": port}, pacs=_pacs_settings(orthanc))
    assert service.retriever.poll_once() == [study]
    assert service.retriever.poll_once() == []  # known now: not pulled again
    assert service.index.instances.count() == 3


def _result_object(tmp_path: Path, service: DicomService) -> tuple[str, str]:
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
    service = service_factory(pacs=_pacs_settings(orthanc))
    service.sender.stop()  # drive it by hand
    uid, _ = _result_object(tmp_path, service)
    summary = service.sender.run_once()
    assert summary.sent == 1
    assert orthanc.find_instance(uid) is not None
    assert service.index.outbox.list(status="sent")[0].sop_instance_uid == uid
    assert service.sender.run_once().sent == 0  # nothing sent twice


def test_orthanc_down_then_up_delivers_once(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    orthanc = orthanc_factory()
    service = service_factory(
        pacs={
            **_pacs_settings(orthanc),
            "send_backoff_seconds": 0.2,
            "send_backoff_max_seconds": 0.4,
            "send_max_attempts": 2,
        }
    )
    orthanc.stop()
    uid, _ = _result_object(tmp_path, service)
    service.sender.wake()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = service.index.outbox.list()[0]
        if row.attempts >= 3:
            break
        time.sleep(0.1)
    row = service.index.outbox.list()[0]
    # unreachable PACS: retried beyond send_max_attempts, never dead-lettered
    assert row.status == "pending" and row.attempts >= 3 and row.refusals == 0
    assert "unreachable" in row.last_error
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
        pacs={**_pacs_settings(orthanc), "send_backoff_seconds": 0.1, "send_max_attempts": 3}
    )
    service.sender.stop()
    uid, _ = _result_object(tmp_path, service)
    for _ in range(10):
        service.sender.run_once()
        if service.index.outbox.list(status="dead"):
            break
        time.sleep(0.15)
    rows = service.index.outbox.list()
    assert rows[0].status == "dead"
    assert rows[0].attempts == 3 and rows[0].refusals == 3
    assert "PACS status 0x" in rows[0].last_error
    assert orthanc.find_instance(uid) is None
    assert service.sender.run_once().sent == 0  # no endless loop: dead stays dead
    assert any(e["event"] == "result-dead-lettered" for e in service.audit.entries())


def test_backoff_doubles_up_to_the_cap(settings_factory: Callable[..., object]) -> None:
    settings = settings_factory(pacs={"send_backoff_seconds": 1.0, "send_backoff_max_seconds": 5})
    assert [backoff_seconds(settings, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
