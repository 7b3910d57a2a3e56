"""GPU check: the product's CUDA path, and what dynamic batching can gain on a GPU.

Written for a session that is lent a GPU machine (the ``device`` tool), as one short call; it
also runs on CPU (``--device cpu``), which is how it is kept working between such sessions.

1. cuda path — each radiograph demo bundle through medgate's own ``Predictor`` with its
   TorchScript model on the device (``TorchScriptBackend``), and with ONNX Runtime where that
   has a CUDA execution provider (``onnxruntime-gpu``); the same phantom studies through the
   CPU predictor; prints the backend, the largest difference in finding probabilities and
   whether every finding's present/absent call agrees.
2. batching — the classifier network alone on the device, through medgate's TorchScript
   backend (numpy in, numpy out, as a replica calls it), ms per image at batch 1 and batch 16
   (interleaved rounds, the same timing as ``bench/serving.py``'s model-only line): the most
   that dynamic batching in front of it can gain there. ``bench/serving.py`` measures the
   serving path's ratio against the same ceiling on CPU, where it is about 1.25x.

Run: ``python bench/gpu.py [--device cuda|cpu] [--studies N]``. Exit status 1 when a CUDA
result disagrees with the CPU one beyond ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# the same timing as bench/serving.py's model-only line (this folder is on sys.path when run)
from serving import per_image_at_batch_1_and_16

ROOT = Path(__file__).resolve().parent.parent
RADIOGRAPH_BUNDLES = ("cxr_classifier", "cxr_lung_heart_seg")


def _predictors(bundle: Any, device: str) -> list[tuple[str, Any]]:
    """(label, predictor) for each backend that can run ``bundle`` on ``device``."""
    from medgate.models.backends import OnnxBackend, TorchScriptBackend
    from medgate.models.predictor import Predictor

    names = bundle.spec.extra.get("output_names")
    found: list[tuple[str, Any]] = []
    files = bundle.model_files
    if "torchscript" in files:
        backend = TorchScriptBackend(files["torchscript"], device, output_names=names)  # type: ignore[arg-type]
        found.append((f"torchscript on {backend.device}", Predictor(bundle, backend)))
    if "onnx" in files:
        onnx = OnnxBackend(files["onnx"], device)  # type: ignore[arg-type]
        if device == "cpu" or "CUDAExecutionProvider" in onnx.providers:
            found.append((f"onnxruntime {onnx.providers[0]}", Predictor(bundle, onnx)))
    return found


def _probabilities(result: Any) -> dict[str, tuple[float, bool]]:
    return {f.label: (f.probability, f.present) for f in result.findings}


def _mask_agreement(got: Any, want: Any) -> float:
    """Fraction of pixels whose label agrees (1.0 without segmentation)."""
    if want.segmentation is None or got.segmentation is None:
        return 1.0 if want.segmentation is got.segmentation else 0.0
    agree, total = 0, 0
    for key, mask in want.segmentation.masks.items():
        other = got.segmentation.masks.get(key)
        if other is None or other.shape != mask.shape:
            return 0.0
        agree += int(np.count_nonzero(other == mask))
        total += mask.size
    return agree / total if total else 1.0


def check_cuda_path(device: str, studies: int, tolerance: float) -> bool:
    """Part 1; True when every backend on ``device`` agrees with the CPU predictor."""
    from medgate.cli.demo import make_studies
    from medgate.models.predictor import load_predictor
    from medgate.models.registry import discover_bundles
    from medgate.serving.inference import predict_local

    bundles, _ = discover_bundles(ROOT / "models")
    payloads = [data for data, _ in make_studies(studies)]
    ok = True
    for bundle in (b for b in bundles if b.name in RADIOGRAPH_BUNDLES):
        reference = load_predictor(bundle, device="cpu")
        expected = [predict_local(reference, [p]) for p in payloads]
        for label, predictor in _predictors(bundle, device):
            worst, calls_agree, pixels = 0.0, True, 1.0
            start = time.perf_counter()
            for payload, reference_result in zip(payloads, expected, strict=True):
                result = predict_local(predictor, [payload])
                got, want = _probabilities(result), _probabilities(reference_result)
                calls_agree &= {k: v[1] for k, v in got.items()} == {
                    k: v[1] for k, v in want.items()
                }
                worst = max([worst, *(abs(got[k][0] - want[k][0]) for k in want if k in got)])
                pixels = min(pixels, _mask_agreement(result, reference_result))
            seconds = (time.perf_counter() - start) / len(payloads)
            agrees = calls_agree and worst <= tolerance and pixels >= 1.0 - tolerance
            ok &= agrees
            print(
                f"[cuda path] {bundle.name}: {label}: {len(payloads)} studies, "
                f"{seconds * 1000:.1f} ms/study, largest probability difference to CPU "
                f"{worst:.2e}, present/absent calls {'agree' if calls_agree else 'DIFFER'}, "
                f"mask pixels agreeing {pixels:.4%} -> {'ok' if agrees else 'FAILED'}"
            )
    return ok


def batching_ceiling(device: str) -> None:
    """Part 2: the classifier network alone, per image, batch 1 vs batch 16, through medgate's
    TorchScript backend on ``device`` (it copies each result back, so each call is complete)."""
    from medgate.models.backends import TorchScriptBackend
    from medgate.models.bundle import Bundle

    bundle = Bundle.load(ROOT / "models" / "cxr_classifier")
    size = int(bundle.spec.preprocessing.spatial_size[-1])
    backend = TorchScriptBackend(bundle.model_files["torchscript"], device)  # type: ignore[arg-type]
    batch = np.random.default_rng(2).random((16, 1, size, size), dtype=np.float32)
    one, sixteen = per_image_at_batch_1_and_16(backend.run, batch)
    name = "CPU"
    if backend.device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(backend.device)
    print(
        f"[batching] cxr_classifier network alone on {name} (TorchScript): batch 1 "
        f"{one * 1000:.3f} ms/image, batch 16 {sixteen * 1000:.3f} ms/image -> at most "
        f"{one / sixteen:.2f}x from batching (the serving bench's goal is >= 2x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--studies", type=int, default=4, help="phantom radiographs per bundle")
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="largest probability difference accepted"
    )
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch; run with --device cpu", file=sys.stderr)
        return 2
    np.random.seed(0)
    ok = check_cuda_path(args.device, args.studies, args.tolerance)
    batching_ceiling(args.device)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
