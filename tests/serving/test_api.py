"""The HTTP API in-process (no Ray): models, inference, study detail, worklist, metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.serving import phantom_bytes

from medgate.api import routes_models
from medgate.api.app import create_app
from medgate.api.routes_models import model_app
from medgate.core.config import Settings
from medgate.models.registry import discover_bundles
from medgate.serving.deployments import LocalModelClient
from medgate.serving.inference import load_predictor
from medgate.serving.metrics import MetricsStore
from medgate.store.db import Index
from medgate.store.instances import InstanceRecord


@pytest.fixture
def api(serving_settings: Callable[..., Settings]) -> tuple[TestClient, Index, MetricsStore]:
    settings = serving_settings()
    bundles, _ = discover_bundles(settings.models.path)
    by_name = {b.name: b for b in bundles}
    client = LocalModelClient({"tiny_cxr": load_predictor(by_name["tiny_cxr"], "cpu")})
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    metrics = MetricsStore()
    app = create_app(settings, index, model_client=client, metrics=metrics, bundles=by_name)
    return TestClient(app), index, metrics


def test_models_listing_has_codes_labels_and_metrics(api: Any) -> None:
    client, _, _ = api
    models = client.get("/api/v1/models").json()
    tiny = next(m for m in models if m["name"] == "tiny_cxr")
    assert tiny["version"] == "0.0.1" and tiny["task"] == "classification"
    assert [label["name"] for label in tiny["labels"]][:2] == ["nodule", "effusion"]
    assert tiny["labels"][0]["code"]["scheme"] == "SCT"
    assert tiny["inputs"]["spatial_size"] == [64, 64]
    assert "metrics" in tiny


def test_infer_returns_findings_and_rejects_bad_input(api: Any) -> None:
    client, _, _ = api
    data = phantom_bytes(11)
    response = client.post(
        "/api/v1/models/tiny_cxr/infer", files=[("files", ("a.dcm", data, "application/dicom"))]
    )
    assert response.status_code == 200, response.text
    findings = response.json()["result"]["findings"]
    assert {f["label"] for f in findings} == {"nodule", "effusion", "pneumothorax", "cardiomegaly"}
    assert all(0.0 <= f["probability"] <= 1.0 for f in findings)
    bad = client.post("/api/v1/models/tiny_cxr/infer", files=[("files", ("x", b"nope", "x/y"))])
    assert bad.status_code == 400 and "not a DICOM" in bad.json()["detail"]
    unknown = client.post("/api/v1/models/nope/infer", files=[("files", ("a", data, "x/y"))])
    assert unknown.status_code == 404


def test_infer_accepts_one_instance_as_an_application_dicom_body(api: Any) -> None:
    """``Content-Type: application/dicom`` with the Part 10 file as the whole body (as
    Orthanc's ``POST /instances``) answers exactly what the multipart upload answers."""
    client, _, _ = api
    url = "/api/v1/models/tiny_cxr/infer"
    data = phantom_bytes(12)
    multipart = client.post(url, files=[("files", ("a.dcm", data, "application/dicom"))])
    raw = client.post(url, content=data, headers={"Content-Type": "application/dicom"})
    assert multipart.status_code == 200, multipart.text
    assert raw.status_code == 200, raw.text
    assert raw.json() == multipart.json()
    # media type parameters and letter case do not matter
    typed = client.post(
        url, content=data, headers={"Content-Type": "Application/DICOM; transfer-syntax=*"}
    )
    assert typed.status_code == 200 and typed.json() == multipart.json()


def test_infer_rejects_other_content_types_empty_and_non_dicom_bodies(api: Any) -> None:
    client, _, _ = api
    url = "/api/v1/models/tiny_cxr/infer"
    data = phantom_bytes(13)
    for content_type in ("application/octet-stream", "application/json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        wrong = client.post(url, content=data, headers=headers)
        assert wrong.status_code == 415, (content_type, wrong.text)
        detail = wrong.json()["detail"]
        assert "application/dicom" in detail and "multipart/form-data" in detail
    empty = client.post(url, content=b"", headers={"Content-Type": "application/dicom"})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    junk = client.post(url, content=b"not dicom", headers={"Content-Type": "application/dicom"})
    assert junk.status_code == 400 and "not a DICOM" in junk.json()["detail"]
    # a multipart body without ``files`` parts is still FastAPI's validation error
    missing = client.post(url, files=[("other", ("a.dcm", data, "application/dicom"))])
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "files"]


def test_infer_refuses_oversized_uploads_by_content_length(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, _ = api
    url = "/api/v1/models/tiny_cxr/infer"
    data = phantom_bytes(14)
    monkeypatch.setattr(routes_models, "MAX_UPLOAD_BYTES", len(data) - 1)
    raw = client.post(url, content=data, headers={"Content-Type": "application/dicom"})
    assert raw.status_code == 413 and "larger than" in raw.json()["detail"]
    chunked = client.post(
        url, content=iter([data[:1000], data[1000:]]), headers={"Content-Type": "application/dicom"}
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413, chunked.text
    multipart = client.post(url, files=[("files", ("a.dcm", data, "application/dicom"))])
    assert multipart.status_code == 413
    monkeypatch.setattr(routes_models, "MAX_UPLOAD_BYTES", len(data))
    fits = client.post(url, content=data, headers={"Content-Type": "application/dicom"})
    assert fits.status_code == 200, fits.text


def test_model_app_takes_the_raw_body_behind_the_token_check(
    serving_settings: Callable[..., Settings],
) -> None:
    """Each model replica's own app (``model_app``): same body handling, same bearer tokens."""
    settings = serving_settings(api={"tokens": {"s3cret": ["results"]}})
    bundles, _ = discover_bundles(settings.models.path)
    tiny = next(b for b in bundles if b.name == "tiny_cxr")
    local = LocalModelClient({"tiny_cxr": load_predictor(tiny, "cpu")})
    app = model_app(
        settings, "tiny_cxr", lambda payload: local.apredict("tiny_cxr", payload), MetricsStore()
    )
    client = TestClient(app)
    data = phantom_bytes(15)
    raw = {"Content-Type": "application/dicom"}
    assert client.post("/infer", content=data, headers=raw).status_code == 401
    token = {"Authorization": "Bearer s3cret"}
    answer = client.post("/infer", content=data, headers={**raw, **token})
    assert answer.status_code == 200, answer.text
    multipart = client.post(
        "/infer", files=[("files", ("a.dcm", data, "application/dicom"))], headers=token
    )
    assert multipart.json() == answer.json()
    wrong = client.post("/infer", content=data, headers={**token, "Content-Type": "image/png"})
    assert wrong.status_code == 415
    operation = client.get("/openapi.json").json()["paths"]["/infer"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/dicom", "multipart/form-data"}


def test_infer_openapi_describes_both_request_bodies(api: Any) -> None:
    client, _, _ = api
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/models/{name}/infer"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/dicom", "multipart/form-data"}
    assert content["multipart/form-data"]["schema"]["required"] == ["files"]
    assert {"200", "400", "413", "415"} <= set(operation["responses"])


def _study(index: Index, uid: str, minutes_ago: float, status: str, priority: str | None) -> None:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    index.instances.add(
        InstanceRecord(
            sop_instance_uid=uid + ".1",
            study_instance_uid=uid,
            series_instance_uid=uid + ".0",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size=1,
            sha256="0" * 64,
            path="/dev/null",
            received_at=when,
        )
    )
    index.studies.set_status(
        uid,
        status,
        priority=priority,
        result={
            "reasons": [f"{priority} reason"],
            "findings": [],
            "result_objects": [{"sop_instance_uid": uid + ".9", "kind": "sr"}],
        },
    )


def test_worklist_orders_by_priority_then_arrival_and_flags_overdue(api: Any) -> None:
    client, index, _ = api
    _study(index, "1.2.3.1", 5, "done", "routine")
    _study(index, "1.2.3.2", 20, "done", "critical")  # past 15 min
    _study(index, "1.2.3.3", 10, "done", "critical")
    _study(index, "1.2.3.4", 30, "done", "urgent")  # within 1 h
    entries = client.get("/api/v1/worklist").json()
    assert [e["study_instance_uid"] for e in entries] == [
        "1.2.3.2",
        "1.2.3.3",
        "1.2.3.4",
        "1.2.3.1",
    ]
    assert [e["overdue"] for e in entries] == [True, False, False, False]
    assert client.get("/api/v1/worklist?overdue_only=true").json()[0]["priority"] == "critical"
    detail = client.get("/api/v1/studies/1.2.3.2").json()
    assert detail["priority"] == "critical" and detail["result_uids"] == ["1.2.3.2.9"]
    assert client.get("/api/v1/studies/9.9").status_code == 404
    text = client.get("/metrics").text
    assert "medgate_studies_overdue 1.0" in text


def test_metrics_exposes_queue_depth_and_observations(api: Any) -> None:
    client, index, metrics = api
    _study(index, "1.2.4.1", 1, "receiving", None)
    index.jobs.enqueue("1.2.4.1")
    metrics.observe("medgate_model_batch_size", 4, ("tiny_cxr",))
    metrics.observe("medgate_stage_seconds", 0.02, ("model",))
    metrics.inc("medgate_errors_total", ("model",))
    text = client.get("/metrics").text
    assert "medgate_queue_depth 1.0" in text
    assert 'medgate_model_batch_size_bucket{bundle="tiny_cxr",le="4"} 1.0' in text
    assert 'medgate_model_batch_size_bucket{bundle="tiny_cxr",le="3"} 0.0' in text
    assert 'medgate_stage_seconds_count{stage="model"} 1.0' in text
    assert 'medgate_errors_total{stage="model"} 1.0' in text
