"""The worker on a real local Ray: done / not-processed / failed, idempotent re-processing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from helpers import ingest, phantom_bytes, serving_overrides, wait_for
from ray import serve

from medgate.core.config import load_settings
from medgate.core.ports import free_port
from medgate.pipeline.worker import Worker
from medgate.serving.deployments import APP_NAME, run_application
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.trust.audit import AuditLog


@pytest.fixture(scope="module")
def pipeline(
    ray_serve: int, bundle_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One deployment, store and worker for the module (studies differ by seed)."""
    storage = tmp_path_factory.mktemp("worker")
    settings = load_settings(
        None,
        **serving_overrides(bundle_root),
        dicom={"host": "127.0.0.1", "port": free_port()},
        storage={"path": str(storage / "store"), "min_free_mb": 0},
        api={"host": "127.0.0.1", "port": ray_serve},
        audit={"hash_key": "test-key"},
    )
    client = run_application(settings)
    serve.get_app_handle(APP_NAME)
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    store = InstanceStore(settings, index)
    audit = AuditLog(settings.audit_path, settings.audit.hash_key)
    worker = Worker(settings, index, client, store=store, audit=audit)
    yield {"settings": settings, "index": index, "store": store, "worker": worker, "audit": audit}
    worker.stop()
    index.close()


def _run(worker: Worker, index: Index, uid: str) -> str:
    index.enqueue_study(uid)
    assert worker.run_once()
    return str(index.get_study(uid)["status"])


def test_done_study_has_findings_and_one_set_of_results(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(31))
    assert _run(worker, index, uid) == "done"
    row = index.get_study(uid)
    result = row["result"]
    assert row["priority"] in ("critical", "urgent", "routine")
    assert {f["label"] for f in result["findings"]} >= {"nodule", "pneumothorax"}
    kinds = sorted(o["kind"] for o in result["result_objects"])
    assert "sr" in kinds
    outbox = index.list_outbox(study_uid=uid)
    assert sorted(o["kind"] for o in outbox) == kinds
    sr_path = next(o["path"] for o in outbox if o["kind"] == "sr")
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == uid and sr.Modality == "SR"
    assert result["guidance"] and {"zh", "en"} <= set(result["guidance"][0]["text"])
    # processing again (e.g. after a crash) yields the same UIDs and queues nothing new
    first = [o["sop_instance_uid"] for o in result["result_objects"]]
    assert _run(worker, index, uid) == "done"
    again = [o["sop_instance_uid"] for o in index.get_study(uid)["result"]["result_objects"]]
    assert again == first and len(index.list_outbox(study_uid=uid)) == len(first)
    events = [e["event"] for e in pipeline["audit"].trace(uid)]
    assert "model-run" in events and "result-created" in events


def test_non_matching_study_is_not_processed(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(32, BodyPartExamined="HAND"))
    assert _run(worker, index, uid) == "not-processed"
    assert "DX/HAND" in index.get_study(uid)["reason"]
    assert index.list_outbox(study_uid=uid) == []


def test_broken_model_fails_study_after_retries_and_service_continues(
    pipeline: dict[str, Any],
) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    bad = ingest(store, phantom_bytes(33, SeriesDescription="BROKEN PA"))
    index.enqueue_study(bad)
    assert worker.run_once()
    assert index.get_study(bad)["status"] == "queued"  # attempt 1 of 2: retried ...
    assert "will retry in" in index.get_study(bad)["reason"]
    assert not worker.run_once()  # ... after its back-off (0.5 s here), not at once
    wait_for(worker.run_once, 30, 0.1, "the retry after the back-off")
    row = index.get_study(bad)
    assert row["status"] == "failed" and "broken_model" in row["reason"]
    assert "unavailable" in row["reason"]
    good = ingest(store, phantom_bytes(34))
    assert _run(worker, index, good) == "done"


def test_restart_requeues_jobs_left_processing(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(35))
    index.enqueue_study(uid)
    assert index.claim_job("a-worker-that-died") is not None
    assert index.get_study(uid)["status"] == "processing"
    assert worker.recover() == 1
    assert worker.run_once()
    assert index.get_study(uid)["status"] == "done"
    assert Path(index.list_outbox(study_uid=uid)[0]["path"]).exists()
