"""medgate against a real Orthanc: C-FIND + C-MOVE/C-GET pulls, results delivered, retried,
dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from tests.support.durability_cases import pacs_settings as _pacs_settings
from tests.support.durability_cases import (  # noqa: F401 - collected here on SQLite
    test_orthanc_down_then_up_delivers_once,
    test_orthanc_rejecting_dead_letters,
    test_results_delivered_to_orthanc,
)

from medgate.cli.dicom_service import DicomService
from medgate.datasets.synthetic_series import ct_series
from medgate.delivery.pacs import backoff_seconds
from medgate.dicom.orthanc import OrthancServer
from medgate.dicom.retriever import RetrieveError


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


def test_backoff_doubles_up_to_the_cap(settings_factory: Callable[..., object]) -> None:
    settings = settings_factory(pacs={"send_backoff_seconds": 1.0, "send_backoff_max_seconds": 5})
    assert [backoff_seconds(settings, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
