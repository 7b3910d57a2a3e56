"""Acceptance: Orthanc -> medgate (in-process gateway on the session's Ray) -> SR in Orthanc."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.support.serving import orthanc_kinds, phantom_bytes, study_uid_of, wait_for

from medgate.cli.gateway import Gateway
from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer


def test_studies_from_orthanc_end_done_not_processed_and_failed(
    ray_serve: int,
    serving_settings: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    medgate_port = free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", medgate_port)})
    settings = serving_settings(
        dicom={"port": medgate_port, "study_idle_seconds": 1.0},
        pacs={"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port},
        api={"port": ray_serve},
    )
    good, other, broken = (
        phantom_bytes(41),
        phantom_bytes(42, BodyPartExamined="ABDOMEN"),
        phantom_bytes(43, SeriesDescription="BROKEN PA"),
    )
    uids = [study_uid_of(d) for d in (good, other, broken)]
    gateway = Gateway(settings).start()
    api = f"http://127.0.0.1:{ray_serve}/api/v1"
    try:
        ids = [orthanc.upload(d)["ID"] for d in (good, other, broken)]
        orthanc.post("/modalities/MEDGATE/store", json={"Resources": ids, "Synchronous": True})

        def finished() -> bool:
            rows = [gateway.index.studies.get(u) for u in uids]
            return all(r and r.status in ("done", "failed", "not-processed") for r in rows)

        wait_for(finished, 120, what="all three studies to finish")
        detail = httpx.get(f"{api}/studies/{uids[0]}", timeout=30).json()
        assert detail["status"] == "done", detail
        assert detail["findings"] and detail["priority"] in ("critical", "urgent", "routine")
        assert detail["result_uids"]
        wait_for(
            lambda: all(orthanc.find_instance(u) for u in detail["result_uids"]),
            60,
            what="result objects in Orthanc",
        )
        assert "SR" in orthanc_kinds(orthanc, uids[0])
        assert httpx.get(f"{api}/studies/{uids[1]}", timeout=30).json()["status"] == (
            "not-processed"
        )
        failed = httpx.get(f"{api}/studies/{uids[2]}", timeout=30).json()
        assert failed["status"] == "failed" and "broken_model" in failed["reason"]
        assert orthanc_kinds(orthanc, uids[1]) == ["DX"]  # nothing sent for those two
        worklist = httpx.get(f"{api}/worklist", timeout=30).json()
        assert uids[0] in [e["study_instance_uid"] for e in worklist]

        # each process flushes its observations to the metrics actor every quarter second
        def done_in_metrics() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{ray_serve}/metrics", timeout=30).text
            return text if 'medgate_jobs_total{status="done"}' in text else None

        metrics = wait_for(done_in_metrics, 10, what="the done job in /metrics")
        assert 'medgate_stage_seconds_count{stage="reports"}' in str(metrics)
    finally:
        gateway.stop()
