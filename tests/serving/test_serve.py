"""The Ray Serve application on a real local Ray: HTTP ingress, model replicas, batching."""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable

import httpx
import pytest
from ray import serve
from tests.support.serving import phantom_bytes, random_input

from medgate.core.config import Settings
from medgate.serving.deployments import (
    APP_NAME,
    deployment_name,
    model_app_name,
    model_route_prefix,
    run_application,
)
from medgate.serving.metrics import FLUSH_SECONDS


@pytest.fixture
def deployed(ray_serve: int, serving_settings: Callable[..., Settings]) -> str:
    settings = serving_settings()
    run_application(settings)
    serve.get_app_handle(APP_NAME)  # waits until the application is running
    return f"http://127.0.0.1:{ray_serve}"


def test_each_bundle_is_its_own_application_behind_haproxy(deployed: str) -> None:
    """The HTTP front is Ray Serve's HAProxy, and a model's inference route belongs to the
    bundle's own application, so the request reaches the model replica directly."""
    import psutil

    status = serve.status()
    for bundle in ("tiny_cxr", "broken_model"):
        assert deployment_name(bundle) in status.applications[model_app_name(bundle)].deployments
    assert model_route_prefix("tiny_cxr") == "/api/v1/models/tiny_cxr"
    haproxies = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"]
    assert haproxies
    # every HAProxy listener is on loopback here, its stats page and exporter included (Ray's
    # template binds those two on every interface; medgate-haproxy rebinds them)
    listening = {
        (c.laddr.ip, c.laddr.port)
        for proc in haproxies
        for c in proc.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert len(listening) >= 3 and {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    # a name nobody serves falls through to the API's ingress, which says so
    data = phantom_bytes(22)
    missing = httpx.post(
        f"{deployed}/api/v1/models/nope/infer",
        files=[("files", ("a.dcm", data, "application/dicom"))],
        timeout=60,
    )
    assert missing.status_code == 404 and "tiny_cxr" in missing.json()["detail"]
    # the API's own routes still answer next to the model applications
    models = httpx.get(f"{deployed}/api/v1/models", timeout=30).json()
    assert "tiny_cxr" in {m["name"] for m in models}


def test_model_application_applies_the_api_tokens(
    ray_serve: int, serving_settings: Callable[..., Settings]
) -> None:
    """The model's own ``/infer`` checks bearer tokens exactly like the API."""
    run_application(serving_settings(api={"tokens": {"s3cret": ["results"], "cds-only": ["cds"]}}))
    serve.get_app_handle(APP_NAME)
    url = f"http://127.0.0.1:{ray_serve}/api/v1/models/tiny_cxr/infer"
    data = phantom_bytes(23)
    files = [("files", ("a.dcm", data, "application/dicom"))]
    raw = {"Content-Type": "application/dicom"}
    try:
        assert httpx.post(url, files=files, timeout=60).status_code == 401
        assert httpx.post(url, content=data, headers=raw, timeout=60).status_code == 401
        wrong = httpx.post(url, files=files, headers={"Authorization": "Bearer cds-only"})
        assert wrong.status_code == 403
        ok = httpx.post(url, files=files, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200, ok.text
        assert ok.json()["model"] == "tiny_cxr"
        ok_raw = httpx.post(
            url, content=data, headers={**raw, "Authorization": "Bearer s3cret"}, timeout=60
        )
        assert ok_raw.status_code == 200, ok_raw.text
        assert ok_raw.json() == ok.json()
    finally:
        run_application(serving_settings())  # the open settings for the other tests


def _batch_counts(text: str) -> dict[str, float]:
    """``le`` bucket -> cumulative count of the tiny_cxr batch-size histogram."""
    pattern = r'medgate_model_batch_size_bucket\{bundle="tiny_cxr",le="([^"]+)"\} ([0-9.e+]+)'
    return {le: float(count) for le, count in re.findall(pattern, text)}


def test_http_inference_and_broken_model_isolation(deployed: str) -> None:
    data = phantom_bytes(21)
    files = [("files", ("a.dcm", data, "application/dicom"))]
    response = httpx.post(f"{deployed}/api/v1/models/tiny_cxr/infer", files=files, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["result"]["findings"]) == 4
    # one instance as the raw body (as Orthanc's POST /instances takes it): the same answer
    raw = httpx.post(
        f"{deployed}/api/v1/models/tiny_cxr/infer",
        content=data,
        headers={"Content-Type": "application/dicom"},
        timeout=60,
    )
    assert raw.status_code == 200, raw.text
    assert raw.json() == response.json()
    broken = httpx.post(f"{deployed}/api/v1/models/broken_model/infer", files=files, timeout=60)
    assert broken.status_code == 502 and "unavailable" in broken.json()["detail"]
    bad = httpx.post(
        f"{deployed}/api/v1/models/tiny_cxr/infer",
        files=[("files", ("x", b"junk", "x/y"))],
        timeout=60,
    )
    assert bad.status_code == 400, bad.text
    ready = httpx.get(f"{deployed}/readyz", timeout=30).json()
    assert ready["models"] == {"broken_model": False, "tiny_cxr": True}
    assert "Protobuf" in ready["model_errors"]["broken_model"]
    assert httpx.get(f"{deployed}/healthz", timeout=10).json() == {"status": "ok"}


def test_dynamic_batching_forms_batches_seen_in_metrics(deployed: str) -> None:
    before = _batch_counts(httpx.get(f"{deployed}/metrics", timeout=30).text)
    handle = serve.get_deployment_handle(
        deployment_name("tiny_cxr"), app_name=model_app_name("tiny_cxr")
    )
    calls = 32
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outputs = list(
            pool.map(
                lambda i: handle.infer_array.remote(random_input(i)).result(timeout_s=60),
                range(calls),
            )
        )
    assert all(out["logits"].shape == (4,) for out in outputs)
    time.sleep(4 * FLUSH_SECONDS)  # the replica sends its observations every FLUSH_SECONDS
    after = _batch_counts(httpx.get(f"{deployed}/metrics", timeout=30).text)
    total = after["+Inf"] - before.get("+Inf", 0.0)
    singles = after["1"] - before.get("1", 0.0)
    assert 0 < total < calls, f"{calls} calls should form fewer batches, got {total}"
    assert singles < total, "at least one batch must hold more than one study"


def test_a_replica_ray_cannot_schedule_is_reported_not_waited_for(
    ray_serve: int, serving_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the placement: Ray's total can hold a request that no node can
    (a cluster of two 2-CPU nodes reports 4 CPUs; a 3-CPU replica fits on neither). The
    cluster is stood in for by the figure ``ray_resources`` reports: the real 2-CPU Ray then
    cannot schedule the replica, Serve says so after 30 s, and ``run_application`` returns
    without it, reporting why, while the other bundle is served."""
    import medgate.serving.deployments as deployments

    monkeypatch.setattr(deployments, "ray_resources", lambda: (4.0, 0.0))
    settings = serving_settings(models={"bundles": {"tiny_cxr": {"num_cpus": 3.0}}})
    started = time.monotonic()
    try:
        client = run_application(settings)
        took = time.monotonic() - started
        assert took < 120, took
        assert client.names() == ["broken_model"]
        assert "Ray cannot place its replica" in client.unserved["tiny_cxr"]
        ready = httpx.get(f"http://127.0.0.1:{ray_serve}/readyz", timeout=30).json()
        assert ready["models"]["tiny_cxr"] is False
        assert "not served: Ray cannot place" in ready["model_errors"]["tiny_cxr"]
        left = serve.status().applications.get(model_app_name("tiny_cxr"))
        assert left is None or left.status == "DELETING"  # deleted, not left pending
    finally:
        monkeypatch.undo()
        run_application(serving_settings())  # the open settings for the other tests
