"""The Ray Serve application on a real local Ray: HTTP ingress, model replicas, batching."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable

import httpx
import pytest
from helpers import phantom_bytes, random_input
from ray import serve

from medgate.config import Settings
from medgate.serving.deployments import APP_NAME, deployment_name, run_application


@pytest.fixture
def deployed(ray_serve: int, serving_settings: Callable[..., Settings]) -> str:
    settings = serving_settings()
    run_application(settings)
    serve.get_app_handle(APP_NAME)  # waits until the application is running
    return f"http://127.0.0.1:{ray_serve}"


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
    handle = serve.get_deployment_handle(deployment_name("tiny_cxr"), app_name=APP_NAME)
    calls = 32
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outputs = list(
            pool.map(
                lambda i: handle.infer_array.remote(random_input(i)).result(timeout_s=60),
                range(calls),
            )
        )
    assert all(out["logits"].shape == (4,) for out in outputs)
    after = _batch_counts(httpx.get(f"{deployed}/metrics", timeout=30).text)
    total = after["+Inf"] - before.get("+Inf", 0.0)
    singles = after["1"] - before.get("1", 0.0)
    assert 0 < total < calls, f"{calls} calls should form fewer batches, got {total}"
    assert singles < total, "at least one batch must hold more than one study"
