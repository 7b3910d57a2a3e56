"""Serving benchmark: each figure is a ratio or difference measured in the same run.

1. backend  — ONNX Runtime vs PyTorch eager, same network and weights, same batch (goal >= 1.5x).
2. overhead — Ray Serve HTTP (``POST /api/v1/models/{name}/infer``) vs a direct in-process call
   of the same predictor on the same DICOM file; p50 / p99 overhead (goal <= 3 ms / <= 10 ms).
   The HTTP client is the lightest there is, so that the figure is the serving path's: the
   stdlib ``http.client`` on one keep-alive connection, sending the instance as an
   ``application/dicom`` body. The multipart/form-data upload sent by httpx is timed in the
   same interleaved loop and printed on its own line, for comparison. The HTTP front is the
   product's default (HAProxy, ``serving.http_ingress``); pass ``--http-ingress proxy`` for
   Serve's Python proxy.
3. batching — 16 concurrent clients on the model deployment, dynamic batching (max 16) vs
   batch size 1: throughput ratio (goal >= 2x). Beside it, measured in the same run, the
   ceiling: the network alone through the product's predictor, ms per image at batch 1 vs
   batch 16 (batching in front of a model cannot gain more than the model gains from it).
4. e2e      — a radiograph C-STOREd to medgate by Orthanc: seconds from the last instance
   received to the SR stored in Orthanc, minus the study idle timeout (goal p50 <= 5 s).

The network is the demo chest X-ray classifier (``models/cxr_classifier``, its weights loaded
into the eager module from the bundle's TorchScript file) when it exists, otherwise the same
architecture with seeded random weights (the timing does not depend on the weights).

Run: ``python bench/serving.py [--parts backend,overhead,batching,e2e] [--requests N]
[--http-ingress haproxy|proxy]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ---------------------------------------------------------------------------------- the model
def demo_network(models_path: Path) -> tuple[torch.nn.Module, int, str]:
    """(eager module, input size, where the weights came from)."""
    from medgate.models.networks import MapClassifier

    bundle_dir = models_path / "cxr_classifier"
    size = 256
    model = MapClassifier(num_labels=4)
    source = "seeded random weights (no models/cxr_classifier bundle)"
    ts = bundle_dir / "models" / "model.ts"
    if ts.exists():
        from medgate.models.bundle import Bundle

        bundle = Bundle.load(bundle_dir)
        size = int(bundle.spec.preprocessing.spatial_size[-1])
        state = torch.jit.load(str(ts), map_location="cpu").state_dict()
        labels = len(bundle.spec.labels)
        model = MapClassifier(num_labels=labels)
        try:
            model.load_state_dict(state)
            source = f"models/cxr_classifier {bundle.version} (weights from model.ts)"
        except RuntimeError:
            torch.manual_seed(0)
            model = MapClassifier(num_labels=labels)
            source = "cxr_classifier architecture, seeded weights (bundle layout differs)"
    return model.eval(), size, source


def make_bundle(root: Path, model: torch.nn.Module, size: int) -> Path:
    """A bundle around ``model`` for the serving parts (so every part uses the same network)."""
    import json

    folder = root / "bench_cxr"
    (folder / "models").mkdir(parents=True)
    (folder / "configs").mkdir(parents=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, size, size),),
        str(folder / "models" / "model.onnx"),
        input_names=["image"],
        output_names=["logits", "maps"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "maps": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    labels = ["nodule", "effusion", "pneumothorax", "cardiomegaly"]
    metadata = {
        "version": "bench",
        "monai_version": "1.6",
        "pytorch_version": torch.__version__,
        "network_data_format": {
            "inputs": {
                "image": {"type": "image", "num_channels": 1, "spatial_shape": [size, size]}
            },
            "outputs": {"pred": {"type": "probabilities", "num_channels": 4}},
        },
        "medgate": {
            "name": "bench_cxr",
            "task": "classification",
            "labels": [
                {
                    "name": n,
                    "index": i,
                    "code": {"value": str(i), "scheme": "99BENCH", "meaning": n},
                }
                for i, n in enumerate(labels)
            ],
            "preprocessing": {
                "input_kind": "radiograph",
                "spatial_size": [size, size],
                "transforms": [
                    {"name": "ScaleIntensity", "args": {"minv": 0.0, "maxv": 1.0}},
                    {"name": "Resize", "args": {"spatial_size": [size, size], "mode": "area"}},
                ],
            },
            "postprocessing": {"activation": "sigmoid", "output": "logits"},
            "extra": {"output_names": ["logits", "maps"]},
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    return folder


def radiograph_bytes(seed: int = 5) -> bytes:
    from medgate.datasets.cxr_phantom import generate_phantom
    from medgate.datasets.phantom_dicom import phantom_to_dataset

    ds = phantom_to_dataset(generate_phantom(seed), namespace="medgate-bench")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------- parts
def part_backend(model: torch.nn.Module, bundle: Path, size: int, repeats: int) -> None:
    import onnxruntime as ort

    batch = np.random.default_rng(0).random((8, 1, size, size), dtype=np.float32)
    session = ort.InferenceSession(
        str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    tensor = torch.from_numpy(batch)

    def eager() -> None:
        with torch.inference_mode():
            model(tensor)

    def onnx() -> None:
        session.run(None, {"image": batch})

    for fn in (eager, onnx):
        fn()
    timings: dict[str, list[float]] = {"eager": [], "onnx": []}
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        for name, fn in (("eager", eager), ("onnx", onnx)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    e, o = statistics.median(timings["eager"]), statistics.median(timings["onnx"])
    print(
        f"[backend] batch 8x1x{size}x{size}: PyTorch eager {e * 1000:.1f} ms, "
        f"ONNX Runtime {o * 1000:.1f} ms -> ONNX Runtime speed-up {e / o:.2f}x (goal >= 1.5x); "
        f"torch threads {torch.get_num_threads()}"
    )


def _settings(tmp: Path, bundle_root: Path, **models: Any) -> Settings:
    """Bench settings: loopback ports, temporary store, tiny Ray resource requests."""
    return load_settings(
        None,
        dicom={"host": "127.0.0.1", "port": free_port(), "study_idle_seconds": 1.0},
        storage={"path": str(tmp / "store"), "min_free_mb": 0},
        api={"host": "127.0.0.1", "port": free_port()},
        models={"path": str(bundle_root), "num_cpus": 0.1, "device": "cpu", **models},
        routing={
            "rules": [{"name": "cxr", "bundles": ["bench_cxr"], "modalities": ["DX"]}],
            "triage_bundle": "none",
        },
        audit={"hash_key": "bench"},
    )


def part_overhead(tmp: Path, bundle_root: Path, port: int, requests: int) -> None:
    """Direct call vs ``POST /infer`` over HTTP, interleaved call by call.

    The goal's HTTP path is the lightest client: one keep-alive ``http.client`` connection
    sending the instance as an ``application/dicom`` body, so the figure is the serving path,
    not a client library. The multipart/form-data upload sent by httpx (the bench's earlier
    client and body) is timed in the same loop and printed beside it."""
    import http.client

    import httpx

    from medgate.models.registry import discover_bundles
    from medgate.serving.deployments import run_application
    from medgate.serving.inference import load_predictor, predict_local

    settings = _settings(tmp / "overhead", bundle_root, max_batch_size=1, batch_wait_timeout_s=0.0)
    run_application(settings)
    data = radiograph_bytes()
    bundles, _ = discover_bundles(bundle_root)
    predictor = load_predictor(bundles[0], "cpu")
    path = "/api/v1/models/bench_cxr/infer"
    url = f"http://127.0.0.1:{port}{path}"
    # The multipart body is encoded once (by httpx, as any client would send it): the figure is
    # the serving path's overhead, not the client library's encoder re-running per request.
    encoded = httpx.Request("POST", url, files=[("files", ("a.dcm", data, "application/dicom"))])
    body, headers = encoded.read(), {"content-type": encoded.headers["content-type"]}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post_raw() -> None:
        connection.request("POST", path, body=data, headers={"Content-Type": "application/dicom"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:300]!r}")

    with httpx.Client(timeout=60) as client:

        def post_multipart() -> None:
            client.post(url, content=body, headers=headers).raise_for_status()

        for _ in range(5):
            post_raw()
            post_multipart()
            predict_local(predictor, [data])
        direct: list[float] = []
        http_raw: list[float] = []
        httpx_multipart: list[float] = []
        for number in range(requests):  # interleaved; the two HTTP calls take turns going first
            start = time.perf_counter()
            predict_local(predictor, [data])
            direct.append(time.perf_counter() - start)
            calls = ((post_raw, http_raw), (post_multipart, httpx_multipart))
            for call, timings in calls if number % 2 == 0 else calls[::-1]:
                start = time.perf_counter()
                call()
                timings.append(time.perf_counter() - start)
        from ray import serve

        from medgate.serving.deployments import deployment_name, model_app_name

        handle = serve.get_deployment_handle(
            deployment_name("bench_cxr"), app_name=model_app_name("bench_cxr")
        )
        health: list[float] = []
        hop: list[float] = []
        direct2: list[float] = []
        for _ in range(max(20, requests // 2)):
            start = time.perf_counter()
            predict_local(predictor, [data])
            direct2.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.get(f"http://127.0.0.1:{port}/healthz").raise_for_status()
            health.append(time.perf_counter() - start)
            start = time.perf_counter()
            handle.predict.remote([data]).result(timeout_s=60)
            hop.append(time.perf_counter() - start)
    connection.close()
    print(
        f"[overhead] breakdown p50: GET /healthz (HTTP front + API ingress, no model; httpx) "
        f"{percentile(health, 50) * 1000:.1f} ms; Serve handle call from this process "
        f"{percentile(hop, 50) * 1000:.1f} ms vs direct {percentile(direct2, 50) * 1000:.1f} ms"
    )
    print(
        f"[overhead] HTTP client: stdlib http.client, one keep-alive connection, the "
        f"{len(data) // 1024} KB instance as an application/dicom body"
    )
    for q in (50, 99):
        d, h = percentile(direct, q), percentile(http_raw, q)
        goal = 3 if q == 50 else 10
        print(
            f"[overhead] p{q}: direct {d * 1000:.1f} ms, Serve HTTP {h * 1000:.1f} ms -> "
            f"overhead {(h - d) * 1000:.1f} ms (goal <= {goal} ms), ratio {h / d:.2f}x"
        )
    # The same figure pair by pair (each HTTP call minus the direct call of its round):
    # less sensitive to load that comes and goes during the run.
    paired = [h - d for d, h in zip(direct, http_raw, strict=True)]
    print(
        f"[overhead] paired differences: median {percentile(paired, 50) * 1000:.1f} ms, "
        f"p99 {percentile(paired, 99) * 1000:.1f} ms over {len(paired)} pairs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    d, m = percentile(direct, 50), percentile(httpx_multipart, 50)
    paired_multipart = [h - d for d, h in zip(direct, httpx_multipart, strict=True)]
    print(
        f"[overhead] for comparison, same loop: httpx + multipart/form-data body p50 "
        f"{m * 1000:.1f} ms -> overhead {(m - d) * 1000:.1f} ms, paired median "
        f"{percentile(paired_multipart, 50) * 1000:.1f} ms"
    )


def part_batching(tmp: Path, bundle_root: Path, size: int, requests: int, rounds: int = 3) -> None:
    """Two deployments of the same bundle side by side (``max_batch_size`` 1 and 16, set with
    ``[models.bundles.<name>]``), measured in alternating rounds so machine load hits both."""
    import json
    import shutil

    from ray import serve

    from medgate.serving.deployments import deployment_name, model_app_name, run_application

    root = tmp / "batching-bundles"
    for name in ("bench_b1", "bench_b16"):
        shutil.copytree(bundle_root / "bench_cxr", root / name)
        meta_path = root / name / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["medgate"]["name"] = name
        meta_path.write_text(json.dumps(meta))
    settings = _settings(
        tmp / "batching",
        root,
        batch_wait_timeout_s=0.02,
        bundles={"bench_b1": {"max_batch_size": 1}, "bench_b16": {"max_batch_size": 16}},
    )
    run_application(settings)
    array = np.random.default_rng(1).random((1, size, size), dtype=np.float32)
    handles = {
        n: serve.get_deployment_handle(deployment_name(n), app_name=model_app_name(n))
        for n in ("bench_b1", "bench_b16")
    }
    throughput: dict[str, list[float]] = {n: [] for n in handles}
    for handle in handles.values():
        for _ in range(4):
            handle.infer_array.remote(array).result(timeout_s=60)
    for _ in range(rounds):
        for name, handle in handles.items():
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda _, h=handle: h.infer_array.remote(array).result(timeout_s=120),
                        range(requests),
                    )
                )
            throughput[name].append(requests / (time.perf_counter() - start))
    one, dyn = statistics.median(throughput["bench_b1"]), statistics.median(throughput["bench_b16"])
    print(
        f"[batching] 16 concurrent clients, {rounds} alternating rounds of {requests} requests: "
        f"batch size 1 {one:.1f} req/s, dynamic batching (max 16) {dyn:.1f} req/s -> "
        f"{dyn / one:.2f}x (goal >= 2x)"
    )
    model_only_batching(bundle_root, size)


def per_image_at_batch_1_and_16(
    infer: Callable[[np.ndarray], Any], batch: np.ndarray, rounds: int = 20
) -> tuple[float, float]:
    """Median seconds per image through ``infer`` for the 16 images of ``batch`` one by one and
    all together, interleaved round by round after a warm-up at both shapes."""
    for _ in range(3):
        infer(batch[:1])
        infer(batch)
    single: list[float] = []
    batched: list[float] = []
    for _ in range(rounds):
        for i in range(len(batch)):
            start = time.perf_counter()
            infer(batch[i : i + 1])
            single.append(time.perf_counter() - start)
        start = time.perf_counter()
        infer(batch)
        batched.append((time.perf_counter() - start) / len(batch))
    return statistics.median(single), statistics.median(batched)


def model_only_batching(bundle_root: Path, size: int) -> None:
    """The ceiling on what batching can gain here: the network alone, per image, at batch 1 and
    batch 16, through the product's own predictor (``load_predictor``: the same ONNX Runtime
    session options as a replica), in this process. If 16 images in one call cost as much per
    image as one image does, no batching in front can do better."""
    from medgate.models.registry import discover_bundles
    from medgate.serving.inference import load_predictor

    bundles, _ = discover_bundles(bundle_root)
    predictor = load_predictor(bundles[0], "cpu")
    batch = np.random.default_rng(2).random((16, 1, size, size), dtype=np.float32)
    one, sixteen = per_image_at_batch_1_and_16(predictor.infer, batch)
    print(
        f"[batching] model only (ONNX Runtime through the product's predictor and session "
        f"options, default intra-op threads, {os.cpu_count()} CPUs, this process): batch 1 "
        f"{one * 1000:.2f} ms/image, batch 16 {sixteen * 1000:.2f} ms/image -> at most "
        f"{one / sixteen:.2f}x from batching on this machine; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def part_e2e(tmp: Path, bundle_root: Path, studies: int) -> None:
    from medgate.cli.demo import demo_settings, make_studies
    from medgate.cli.gateway import Gateway
    from medgate.dicom.orthanc import OrthancServer

    # The demo's own bundles and routing when they exist (the real radiograph pipeline: classifier,
    # segmentation, triage), else the bench network.
    demo_models = ROOT / "models"
    settings = load_settings(None, models={"path": str(demo_models)})
    from medgate.serving.bundles import discover

    routed = {b for rule in settings.routing.rules for b in rule.bundles}
    found = set(discover(settings)[0]) & routed
    if not found:
        settings = _settings(tmp / "e2e-base", bundle_root)
    print(f"[e2e] bundles: {', '.join(sorted(found)) or 'bench_cxr'}")
    orthanc = OrthancServer(
        tmp / "orthanc", modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", free_port())}
    )
    orthanc.start()
    gateway: Gateway | None = None
    try:
        demo = demo_settings(settings, tmp / "e2e", orthanc)
        demo.dicom.study_idle_seconds = 1.0
        gateway = Gateway(demo).start()
        made = make_studies(studies + 1)
        latencies: list[float] = []
        for number, (data, study) in enumerate(made):
            orthanc_id = orthanc.upload(data)["ID"]
            orthanc.post(
                "/modalities/MEDGATE/store", json={"Resources": [orthanc_id], "Synchronous": True}
            )
            received = time.monotonic()  # synchronous C-STORE: medgate acknowledged it
            while time.monotonic() - received < 120:
                row = gateway.index.studies.get(study.study_uid)
                result = (row.result if row else None) or {}
                srs = [o for o in result.get("result_objects", []) if o["kind"] == "sr"]
                if srs and orthanc.find_instance(srs[0]["sop_instance_uid"]):
                    break
                if row and row.status in ("failed", "not-processed"):
                    raise RuntimeError(f"study ended {row.status}: {row.reason}")
                time.sleep(0.05)
            else:
                raise TimeoutError("no SR in Orthanc after 120 s")
            if number:  # the first study warms the replicas up
                latencies.append(time.monotonic() - received - demo.dicom.study_idle_seconds)
        print(
            f"[e2e] {len(latencies)} radiographs: last instance received -> SR in Orthanc, "
            f"minus idle timeout {demo.dicom.study_idle_seconds:.0f} s: p50 "
            f"{percentile(latencies, 50):.2f} s, max {max(latencies):.2f} s (goal p50 <= 5 s)"
        )
    finally:
        if gateway is not None:
            gateway.stop()
        orthanc.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="backend,overhead,batching,e2e")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument(
        "--http-ingress",
        choices=("haproxy", "proxy"),
        default="haproxy",
        help="Serve's HTTP front for the overhead part (serving.http_ingress; default haproxy)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    model, size, source = demo_network(ROOT / "models")
    print(f"network: {source}, input 1x{size}x{size}")
    with tempfile.TemporaryDirectory(prefix="medgate-bench-") as name:
        tmp = Path(name)
        bundle_root = tmp / "bundles"
        make_bundle(bundle_root, model, size)
        if "backend" in parts:
            part_backend(model, bundle_root / "bench_cxr", size, repeats=20)
        if parts & {"overhead", "batching"}:
            import ray
            from ray import serve

            from medgate.serving.metrics import ensure_metrics_actor
            from medgate.serving.ray_env import local_ray_environment

            port = free_port()
            with local_ray_environment(args.http_ingress) as applied:
                ray.init(
                    num_cpus=2,
                    include_dashboard=False,
                    object_store_memory=300 * 1024**2,
                    log_to_driver=False,
                    namespace="medgate-bench",
                )
            front = "HAProxy" if applied else "Serve's Python proxy"
            print(f"HTTP front: {front} (serving.http_ingress = {args.http_ingress})")
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            ensure_metrics_actor()
            try:
                if "overhead" in parts:
                    part_overhead(tmp, bundle_root, port, args.requests)
                if "batching" in parts:
                    part_batching(tmp, bundle_root, size, args.requests)
            finally:
                serve.shutdown()
                ray.shutdown()
        if "e2e" in parts:
            part_e2e(tmp, bundle_root, args.studies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
