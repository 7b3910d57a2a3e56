"""Benchmark of the decision-support API over real HTTP (not a test).

Measures, in one run and on one server, ``POST /api/v1/cds/assess`` against a trivial FastAPI
endpoint mounted on the same app: added latency p50/p99 with one client, throughput at 32
concurrent clients, and ONNX Runtime vs scikit-learn single-row prediction.

    python bench/cds.py                       # starts uvicorn on loopback itself
    python bench/cds.py --serve               # the same app behind a Ray Serve ingress
    python bench/cds.py --base-url http://127.0.0.1:8000 --trivial-path /healthz   # existing

Goals (issue #7): p50 <= +5 ms, p99 <= +15 ms, throughput >= 0.5x trivial, ONNX >= 5x sklearn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ASSESS_BODY: dict[str, Any] = {
    "age": 58,
    "sex": "male",
    "region": "north",
    "residence": "urban",
    "conditions": ["hypertension", "type2_diabetes"],
    "current_smoker": False,
    "family_history_ascvd": False,
    "on_bp_treatment": True,
    "sbp_mmhg": 146,
    "dbp_mmhg": 88,
    "heart_rate": 84,
    "respiratory_rate": 18,
    "spo2": 97,
    "on_oxygen": False,
    "consciousness": "A",
    "temperature_c": 36.8,
    "waist_cm": 92,
    "bmi": 26.5,
    "fasting_glucose_mmol_l": 7.8,
    "total_cholesterol_mmol_l": 5.4,
    "hdl_cholesterol_mmol_l": 1.1,
    "ldl_cholesterol_mmol_l": 3.4,
    "triglycerides_mmol_l": 2.0,
}


def make_app() -> Any:
    """The medgate app plus a trivial endpoint, on temporary storage (uvicorn --factory)."""
    from fastapi import FastAPI

    from medgate.api.app import create_app
    from medgate.core.config import load_settings

    storage = os.environ["MEDGATE_BENCH_STORAGE"]
    settings = load_settings(
        None,
        storage={"path": storage, "min_free_mb": 0},
        models={"path": str(REPO / "models")},
        audit={"hash_key": "bench"},
    )
    app: FastAPI = create_app(settings)

    @app.post("/bench/trivial")
    def trivial(body: dict[str, Any]) -> dict[str, bool]:
        return {"ok": True}

    return app


def free_port() -> int:
    from medgate.core.ports import free_port as fp

    return fp()


def start_server(storage: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "MEDGATE_BENCH_STORAGE": storage, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.cds:make_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("uvicorn did not start within 60 s")


def start_serve(storage: str) -> str:
    """The same app (medgate + trivial endpoint) behind a Ray Serve ingress on a local Ray,
    as ``medgate serve`` deploys it: both endpoints pay the same proxy and replica hops."""
    import ray
    from ray import serve

    os.environ["MEDGATE_BENCH_STORAGE"] = storage
    env = {"MEDGATE_BENCH_STORAGE": storage, "PYTHONPATH": str(REPO)}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200)
    @serve.ingress()
    class BenchIngress:
        def __serve_build_asgi_app__(self) -> Any:
            # Imported by name in the replica (not pickled from __main__), so that FastAPI
            # resolves the endpoint's annotations.
            from bench.cds import make_app as build

            return build()

    serve.run(BenchIngress.bind(), name="cds-bench", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def latency(client: httpx.Client, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.post(path, json=ASSESS_BODY)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def throughput(base: str, path: str, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                (await client.post(path, json=ASSESS_BODY)).raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - start)


def onnx_vs_sklearn(n: int = 2000) -> dict[str, float]:
    from medgate.models.tabular import TabularPredictor
    from medgate.training import tabular

    config = tomllib.loads((REPO / "configs/train/cds_diabetes_risk.toml").read_text())
    fit = tabular.fit(config)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = TabularPredictor(tabular.write_bundle(fit, Path(tmp)))
        row = fit.x[:1]
        for func in (lambda: predictor.predict_proba(row), lambda: fit.pipeline.predict_proba(row)):
            for _ in range(50):
                func()
        results = {}
        for name, func in (
            ("onnx_us", lambda: predictor.predict_proba(row)),
            ("sklearn_us", lambda: fit.pipeline.predict_proba(row)),
        ):
            times = []
            for _ in range(n):
                start = time.perf_counter()
                func()
                times.append((time.perf_counter() - start) * 1e6)
            results[name] = statistics.median(times)
    results["speedup"] = results["sklearn_us"] / results["onnx_us"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an already running medgate API (default: start one)")
    parser.add_argument(
        "--serve", action="store_true", help="serve the app through Ray Serve (as medgate serve)"
    )
    parser.add_argument(
        "--trivial-path", default="/bench/trivial", help="trivial POST endpoint on the same server"
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    proc = None
    tmp = tempfile.TemporaryDirectory()
    base = args.base_url
    if base is None and args.serve:
        base = start_serve(tmp.name)
    elif base is None:
        proc, base = start_server(tmp.name)
    try:
        figures: dict[str, Any] = {
            "base_url": base,
            "via": "ray-serve" if args.serve else "uvicorn",
        }
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in (args.trivial_path, "/api/v1/cds/assess"):
                latency(client, path, 50)  # warm-up
            trivial = latency(client, args.trivial_path, args.requests)
            assess = latency(client, "/api/v1/cds/assess", args.requests)
        for name, values in (("trivial", trivial), ("assess", assess)):
            figures[f"{name}_p50_ms"] = round(pct(values, 50), 3)
            figures[f"{name}_p99_ms"] = round(pct(values, 99), 3)
        figures["added_p50_ms"] = round(figures["assess_p50_ms"] - figures["trivial_p50_ms"], 3)
        figures["added_p99_ms"] = round(figures["assess_p99_ms"] - figures["trivial_p99_ms"], 3)
        figures["trivial_rps"] = round(
            asyncio.run(throughput(base, args.trivial_path, args.clients, args.seconds)), 1
        )
        figures["assess_rps"] = round(
            asyncio.run(throughput(base, "/api/v1/cds/assess", args.clients, args.seconds)), 1
        )
        figures["throughput_ratio"] = round(figures["assess_rps"] / figures["trivial_rps"], 3)
        figures.update({k: round(v, 2) for k, v in onnx_vs_sklearn().items()})
        figures["goals_met"] = {
            "p50_added_le_5ms": figures["added_p50_ms"] <= 5,
            "p99_added_le_15ms": figures["added_p99_ms"] <= 15,
            "throughput_ge_0.5x": figures["throughput_ratio"] >= 0.5,
            "onnx_ge_5x_sklearn": figures["speedup"] >= 5,
        }
        text = json.dumps(figures, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if args.serve:
            stop_serve()
        tmp.cleanup()


if __name__ == "__main__":
    main()
