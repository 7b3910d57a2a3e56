"""Capacity model for network planners: how many nodes a region needs.

Two steps, so that the table always comes from measured figures, never typed by hand:

1. ``measure`` (a benchmark) pins itself to ONE CPU core and measures, for every image bundle
   under ``models.path``, the core-seconds one study costs (preprocessing + inference on a
   synthetic image of a typical acquisition size), and the decision-support calculators'
   requests per second per core (NEWS2 and the combined ``assess`` through the FastAPI app,
   in-process). Figures go to a JSON file (default ``bench/results/capacity.json``).
2. ``table`` reads that JSON and prints, for each scenario (clinics x studies per clinic per day
   x peak factor), the peak studies per hour, the CPU cores the models need, and the nodes of a
   given size (with headroom); the GPU column uses a measured GPU speed-up when the JSON has one
   (``gpu_speedup``), otherwise an ESTIMATED one, marked as such with its source.

Run: ``python bench/capacity.py measure`` then ``python bench/capacity.py table``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "capacity.json"
# Assumed when no GPU was measured: ONNX Runtime CUDA EP vs one CPU core on small 2D/3D CNNs.
# Typical published ratios for a data-centre GPU against one core are 20-100x; 30x is the
# conservative end. Marked "estimated" wherever it is used.
ESTIMATED_GPU_SPEEDUP = 30.0
ESTIMATED_GPU_SOURCE = (
    "estimated: 30x one CPU core (conservative end of ONNX Runtime CUDA EP vs CPU ratios for "
    "small CNNs); not measured here"
)


def _pin_to_one_core() -> int:
    """Run on a single core so that the figures are per core whatever the machine."""
    core = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {core})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    return core


def _timed(func: Any, seconds: float, min_runs: int = 3) -> float:
    """Median wall seconds of ``func`` over at least ``min_runs`` runs / ``seconds`` seconds."""
    func()  # warm-up (lazy initialisation, caches)
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while len(times) < min_runs or time.monotonic() < deadline:
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_models(models_path: Path, seconds: float, radiograph: int, volume: list[int]) -> dict:
    import numpy as np

    from medgate.models.predictor import load_predictor
    from medgate.models.registry import discover_bundles

    found = discover_bundles(models_path)
    bundles = found[0] if isinstance(found, tuple) else found
    items = bundles.items() if isinstance(bundles, dict) else ((b.name, b) for b in bundles)
    rng = np.random.default_rng(0)
    figures: dict[str, Any] = {}
    for name, bundle in sorted(items):
        try:
            predictor = load_predictor(bundle, device="cpu")
        except ValueError:
            continue  # a features (tabular) bundle: measured with the CDS figures
        kind = bundle.spec.preprocessing.input_kind
        shape = tuple(volume) if kind == "volume" else (radiograph, radiograph)
        image = rng.normal(1000, 200, size=shape).astype(np.float32)

        def one_study(predictor: Any = predictor, image: Any = image) -> None:
            predictor.infer(predictor.preprocess_array(image)[None])

        seconds_per_study = _timed(one_study, seconds)
        figures[name] = {
            "input_kind": kind,
            "input_shape": list(shape),
            "core_seconds_per_study": round(seconds_per_study, 4),
            "studies_per_hour_per_core": round(3600 / seconds_per_study, 1),
        }
        print(
            f"[models] {name}: {seconds_per_study * 1000:.1f} ms per study on one core "
            f"-> {3600 / seconds_per_study:.0f} studies/h/core",
            file=sys.stderr,
        )
    return figures


def measure_cds(seconds: float, storage: Path) -> dict:
    from fastapi.testclient import TestClient

    from medgate.api.app import create_app
    from medgate.core.config import load_settings

    settings = load_settings(
        None, storage={"path": str(storage)}, models={"path": str(ROOT / "models")}
    )
    news2 = {
        "respiratory_rate": 25,
        "spo2": 95,
        "spo2_scale": 1,
        "on_oxygen": False,
        "sbp_mmhg": 105,
        "heart_rate": 112,
        "consciousness": "A",
        "temperature_c": 38.4,
    }
    figures: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:

        def call() -> None:
            client.post("/api/v1/cds/news2", json=news2).raise_for_status()

        per_request = _timed(call, seconds, min_runs=50)
        figures["news2"] = {"requests_per_second_per_core": round(1 / per_request, 1)}
        print(
            f"[cds] news2: {per_request * 1000:.2f} ms -> {1 / per_request:.0f} req/s/core "
            "(in-process, no network)",
            file=sys.stderr,
        )
    return figures


def _relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (the JSON is committed)."""
    try:
        return str(path.resolve().relative_to(ROOT)) + "/"
    except ValueError:
        return str(path)


def command_measure(args: argparse.Namespace) -> None:
    import tempfile

    core = _pin_to_one_core()
    result: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "core": core,
            "cores_on_machine": os.cpu_count(),
            "python": platform.python_version(),
        },
        "method": "one pinned CPU core; per study = preprocessing + inference of a synthetic "
        "image (radiograph NxN, volume DxHxW); CDS in-process through the FastAPI app",
        "models_source": _relative(args.models),
        "models": measure_models(args.models, args.seconds, args.radiograph, args.volume),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["cds"] = measure_cds(args.seconds, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures written to {args.out}", file=sys.stderr)


def capacity_rows(figures: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per scenario; pure arithmetic on the measured figures."""
    models = figures.get("models") or {}
    if not models:
        raise SystemExit("no model figures in the input: run `bench/capacity.py measure` first")
    # Each study runs through the bundles its route names; planning assumes every image bundle
    # runs on every study (an upper bound for a mixed CR/DX/CT load).
    core_seconds = sum(m["core_seconds_per_study"] for m in models.values())
    gpu_speedup = figures.get("gpu_speedup") or ESTIMATED_GPU_SPEEDUP
    rows = []
    for clinics in args.clinics:
        per_day = clinics * args.studies_per_clinic
        peak_per_hour = per_day / args.working_hours * args.peak_factor
        cores = peak_per_hour * core_seconds / 3600 / args.utilisation
        cpu_nodes = max(1, math.ceil(cores / args.cores_per_node))
        gpus = peak_per_hour * core_seconds / gpu_speedup / 3600 / args.utilisation
        rows.append(
            {
                "clinics": clinics,
                "studies_per_day": per_day,
                "peak_studies_per_hour": round(peak_per_hour),
                "cpu_cores": round(cores, 1),
                "cpu_nodes": cpu_nodes,
                "gpus": round(gpus, 2),
                "gpu_nodes": max(1, math.ceil(gpus / args.gpus_per_node)),
            }
        )
    return rows


def render_table(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures and the capacity table as Markdown."""
    rows = capacity_rows(figures, args)
    lines = [
        f"Measured {figures['measured_at']} on {figures['machine']['cpu']} "
        f"({figures['machine']['cores_on_machine']} cores; per core: {figures['method']}; "
        f"bundles: {figures.get('models_source', 'models/')}).",
        "",
        "| model | input | core-seconds per study | studies per hour per core |",
        "|---|---|---:|---:|",
    ]
    for name, m in sorted(figures["models"].items()):
        shape = "x".join(str(s) for s in m["input_shape"])
        lines.append(
            f"| {name} | {m['input_kind']} {shape} | {m['core_seconds_per_study']:.3f} "
            f"| {m['studies_per_hour_per_core']:.0f} |"
        )
    for name, c in sorted((figures.get("cds") or {}).items()):
        lines.append(
            f"| CDS {name} | one request | - | {c['requests_per_second_per_core']:.0f} requests/s |"
        )
    gpu_note = (
        f"measured ({figures['gpu_speedup']}x one core, {figures.get('gpu_source', '')})"
        if figures.get("gpu_speedup")
        else ESTIMATED_GPU_SOURCE
    )
    lines += [
        "",
        f"Scenario: {args.studies_per_clinic:g} studies per clinic per day over "
        f"{args.working_hours:g} working hours, peak factor {args.peak_factor:g}, nodes of "
        f"{args.cores_per_node} cores / {args.gpus_per_node} GPU(s) kept at "
        f"{args.utilisation:.0%} load; every image model on every study. "
        f"GPU column: {gpu_note}.",
        "",
        "| clinics | studies/day | peak studies/h | CPU cores | CPU-only nodes | GPUs | "
        "GPU nodes |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clinics']} | {r['studies_per_day']:.0f} | "
            f"{r['peak_studies_per_hour']} | {r['cpu_cores']} | {r['cpu_nodes']} | "
            f"{r['gpus']} | {r['gpu_nodes']} |"
        )
    return "\n".join(lines)


DOC_START, DOC_END = "<!-- capacity-table:start -->", "<!-- capacity-table:end -->"


def replace_in_doc(text: str, table: str) -> str:
    """``text`` with the block between the capacity-table markers replaced by ``table``."""
    head, start, rest = text.partition(DOC_START)
    _, end, tail = rest.partition(DOC_END)
    if not start or not end:
        raise SystemExit(f"the document has no {DOC_START} ... {DOC_END} block")
    note = "<!-- generated by `python bench/capacity.py table --update-doc`; do not edit -->"
    return f"{head}{DOC_START}\n{note}\n\n{table}\n\n{DOC_END}{tail}"


def command_table(args: argparse.Namespace) -> None:
    if not args.inputs.exists():
        raise SystemExit(f"{args.inputs} not found: run `python bench/capacity.py measure` first")
    table = render_table(json.loads(args.inputs.read_text()), args)
    print(table)
    if args.update_doc:
        args.update_doc.write_text(replace_in_doc(args.update_doc.read_text(), table))
        print(f"\n{args.update_doc} updated", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("measure", help="measure per-core figures (writes JSON)")
    measure.add_argument("--models", type=Path, default=ROOT / "models")
    measure.add_argument("--out", type=Path, default=DEFAULT_JSON)
    measure.add_argument("--seconds", type=float, default=5.0, help="per figure")
    measure.add_argument("--radiograph", type=int, default=1024, help="radiograph side, pixels")
    measure.add_argument(
        "--volume", type=int, nargs=3, default=[96, 256, 256], metavar=("D", "H", "W")
    )
    table = sub.add_parser("table", help="print the capacity table from measured figures")
    table.add_argument("--inputs", type=Path, default=DEFAULT_JSON)
    table.add_argument("--clinics", type=int, nargs="+", default=[20, 100, 500, 2000])
    table.add_argument("--studies-per-clinic", type=float, default=30.0, help="per day")
    table.add_argument("--working-hours", type=float, default=10.0)
    table.add_argument("--peak-factor", type=float, default=3.0)
    table.add_argument("--cores-per-node", type=int, default=16)
    table.add_argument("--gpus-per-node", type=int, default=1)
    table.add_argument(
        "--utilisation",
        type=float,
        default=0.6,
        help="target load of a node (headroom for bursts and failures)",
    )
    table.add_argument(
        "--update-doc",
        type=Path,
        nargs="?",
        const=ROOT / "docs" / "deploy.md",
        help="also write the table into this document (default docs/deploy.md)",
    )
    args = parser.parse_args(argv)
    {"measure": command_measure, "table": command_table}[args.command](args)


if __name__ == "__main__":
    main()
