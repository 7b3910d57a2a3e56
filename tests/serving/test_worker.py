"""The worker on a real local Ray: done / not-processed / failed, idempotent re-processing."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from ray import serve
from tests.support.serving import ingest, phantom_bytes, serving_overrides, wait_for

from medgate.api.app import create_app
from medgate.core.config import load_settings
from medgate.core.ports import free_port
from medgate.pipeline.worker import Worker
from medgate.serving.deployments import APP_NAME, run_application
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.store.jobs import Job
from medgate.store.schema import jobs
from medgate.store.status import JobStatus
from medgate.store.studies import StudyRow
from medgate.trust.audit import AuditLog


def _study(index: Index, uid: str) -> StudyRow:
    row = index.studies.get(uid)
    assert row is not None, uid
    return row


def _results(index: Index, uid: str) -> dict[str, Any]:
    result = _study(index, uid).result
    assert result is not None, uid
    return result


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
    index.jobs.enqueue(uid)
    assert worker.run_once()
    return str(_study(index, uid).status)


def test_done_study_has_findings_and_one_set_of_results(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(31))
    assert _run(worker, index, uid) == "done"
    row = index.studies.get(uid)
    result = row.result
    assert row.priority in ("critical", "urgent", "routine")
    assert {f["label"] for f in result["findings"]} >= {"nodule", "pneumothorax"}
    kinds = sorted(o["kind"] for o in result["result_objects"])
    assert "sr" in kinds
    outbox = index.outbox.list(study_uid=uid)
    assert sorted(o.kind for o in outbox) == kinds
    sr_path = next(o.path for o in outbox if o.kind == "sr")
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == uid and sr.Modality == "SR"
    assert result["guidance"] and {"zh", "en"} <= set(result["guidance"][0]["text"])
    # processing again (e.g. after a crash) yields the same UIDs and queues nothing new
    first = [o["sop_instance_uid"] for o in result["result_objects"]]
    assert _run(worker, index, uid) == "done"
    again = [o["sop_instance_uid"] for o in _results(index, uid)["result_objects"]]
    assert again == first and len(index.outbox.list(study_uid=uid)) == len(first)
    events = [e["event"] for e in pipeline["audit"].trace(uid)]
    assert "model-run" in events and "result-created" in events


def test_non_matching_study_is_not_processed(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(32, BodyPartExamined="HAND"))
    assert _run(worker, index, uid) == "not-processed"
    assert "DX/HAND" in str(_study(index, uid).reason)
    assert index.outbox.list(study_uid=uid) == []


def test_broken_model_fails_study_after_retries_and_service_continues(
    pipeline: dict[str, Any],
) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    bad = ingest(store, phantom_bytes(33, SeriesDescription="BROKEN PA"))
    index.jobs.enqueue(bad)
    assert worker.run_once()
    assert _study(index, bad).status == "queued"  # attempt 1 of 2: retried ...
    assert "will retry in" in str(_study(index, bad).reason)
    assert not worker.run_once()  # ... after its back-off (0.5 s here), not at once
    wait_for(worker.run_once, 30, 0.1, "the retry after the back-off")
    row = index.studies.get(bad)
    assert row.status == "failed" and "broken_model" in row.reason
    assert "unavailable" in row.reason
    good = ingest(store, phantom_bytes(34))
    assert _run(worker, index, good) == "done"


def test_restart_requeues_jobs_left_processing(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(35))
    index.jobs.enqueue(uid)
    assert index.jobs.claim("a-worker-that-died") is not None
    assert _study(index, uid).status == "processing"
    assert worker.recover() == 1
    assert worker.run_once()
    assert _study(index, uid).status == "done"
    assert Path(index.outbox.list(study_uid=uid)[0].path).exists()


class _SlowClient:
    """The real model client, with each prediction held for ``delay`` seconds (a big study)."""

    def __init__(self, client: Any, delay: float) -> None:
        self.client, self.delay = client, delay

    def names(self) -> list[str]:
        return list(self.client.names())

    def predict(self, bundle: str, payload: list[bytes]) -> Any:
        time.sleep(self.delay)
        return self.client.predict(bundle, payload)


def test_a_study_longer_than_its_lease_keeps_its_claim(pipeline: dict[str, Any]) -> None:
    """Lease 1 s, heartbeat every 0.25 s, a study of 3 s: nobody else can claim it meanwhile."""
    index, store = pipeline["index"], pipeline["store"]
    settings = pipeline["settings"]
    short = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"job_lease_seconds": 1.0})}
    )
    slow = Worker(
        short,
        index,
        _SlowClient(pipeline["worker"].client, 3.0),
        store=store,
        audit=pipeline["audit"],
        worker_id="slow-but-alive",
    )
    uid = ingest(store, phantom_bytes(36))
    index.jobs.enqueue(uid)
    thread = threading.Thread(target=slow.run_once)
    thread.start()
    try:
        wait_for(lambda: _study(index, uid).status == "processing", 10, 0.05, "the claim")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # well past the 1 s lease
            assert index.jobs.claim("would-be-taker", lease_seconds=60) is None
            time.sleep(0.2)
    finally:
        thread.join(60)
    assert _study(index, uid).status == "done"
    assert [job.attempts for job in index.jobs.of_study(uid)] == [1]


def test_a_renewal_that_finds_the_claim_taken_stops_the_attempt(
    pipeline: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker stalls past its lease and another instance takes the job while the model
    runs: the next heartbeat finds the claim gone and the attempt stops before its results."""
    index, store = pipeline["index"], pipeline["store"]
    settings = pipeline["settings"]
    short = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"job_lease_seconds": 1.0})}
    )
    slow = Worker(
        short,
        index,
        _SlowClient(pipeline["worker"].client, 2.0),
        store=store,
        audit=pipeline["audit"],
        worker_id="stalled",
    )
    uid = ingest(store, phantom_bytes(39))
    index.jobs.enqueue(uid)
    thread = threading.Thread(target=slow.run_once)
    thread.start()
    try:
        wait_for(lambda: _study(index, uid).status == "processing", 10, 0.05, "the claim")
        with index.engine.begin() as conn:  # another instance's takeover, as after a stall
            conn.execute(
                jobs.update()
                .where(jobs.c.study_instance_uid == uid)
                .values(claimed_by="the-other-instance", attempts=jobs.c.attempts + 1)
            )
    finally:
        thread.join(60)
    stops = [r.getMessage() for r in caplog.records if "no longer held" in r.getMessage()]
    assert any("lease lost before stage" in m for m in stops), stops  # the heartbeat saw it
    assert index.outbox.list(study_uid=uid) == []
    row = _study(index, uid)
    assert row.status == "processing" and row.result is None  # the other one's to finish
    (job,) = index.jobs.of_study(uid)
    assert job.claimed_by == "the-other-instance" and job.finished_at is None
    holder = Job(job.id, uid, job.attempts, "the-other-instance")  # its holder can end it
    assert index.jobs.finish(holder, JobStatus.NOT_PROCESSED, error="ended by the test")


def test_a_worker_whose_job_was_taken_over_writes_no_results(pipeline: dict[str, Any]) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(37))
    index.jobs.enqueue(uid)
    stale = index.jobs.claim(worker.worker_id, lease_seconds=-1)  # its lease ran out ...
    assert stale is not None
    taker = index.jobs.claim("the-other-instance")  # ... and another instance took it
    assert taker is not None and taker.id == stale.id
    assert worker.process(stale) == "lost"
    assert index.outbox.list(study_uid=uid) == []
    row = index.studies.get(uid)
    assert row.status == "processing" and row.result is None
    assert worker.process(taker) == "done"  # the holder's run is the one that counts
    assert len(index.outbox.list(study_uid=uid)) == len(row_objects(index, uid))


def row_objects(index: Index, uid: str) -> list[dict[str, Any]]:
    return list(_results(index, uid)["result_objects"])


def test_the_study_json_says_when_results_were_built_and_confirmed(
    pipeline: dict[str, Any],
) -> None:
    index, store, worker = pipeline["index"], pipeline["store"], pipeline["worker"]
    uid = ingest(store, phantom_bytes(38))
    assert _run(worker, index, uid) == "done"
    api = TestClient(create_app(pipeline["settings"], index))
    detail = api.get(f"/api/v1/studies/{uid}").json()
    assert detail["status"] == "done" and detail["results_built_at"]
    objects = len(detail["result_uids"])
    assert detail["delivery"]["pacs"] == {
        "state": "pending",
        "objects": objects,
        "confirmed": 0,
        "confirmed_at": None,
    }  # done, not yet in the PACS
    for item in index.outbox.list(study_uid=uid):
        index.outbox.sent(item.id)
    pacs = api.get(f"/api/v1/studies/{uid}").json()["delivery"]["pacs"]
    assert pacs["state"] == "delivered" and pacs["confirmed"] == objects
    built = dt.datetime.fromisoformat(detail["results_built_at"])
    assert dt.datetime.fromisoformat(pacs["confirmed_at"]) >= built
