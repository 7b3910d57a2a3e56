"""Inference backends: ONNX Runtime by default, TorchScript otherwise.

ONNX Runtime is the default because it is fast on CPU, needs no Python model code and uses the
CUDA execution provider where a GPU exists. TorchScript is the fallback for bundles that ship only
``model.ts`` (and the reference for parity checks). Both return ``{output_name: array}``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


class Backend(Protocol):
    """A loaded network: batched arrays in, named arrays out."""

    name: str
    output_names: list[str]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


class OnnxBackend:
    """ONNX Runtime session; CUDA EP when available and ``device`` allows, else CPU."""

    name = "onnx"

    def __init__(self, path: Path, device: Device = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Idle intra-op threads sleep instead of spin-waiting for the next run: replicas,
        # the receiver and the HTTP front share the CPUs, and a spinning pool steals a core
        # from them between batches (bench/serving.py measures the effect).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            log.warning("CUDA requested but onnxruntime has no CUDA provider; using CPU")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        dtype = np.int64 if "int64" in self.input_type else np.float32
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype)})
        return dict(zip(self.output_names, outputs, strict=True))


class TorchScriptBackend:
    """A ``torch.jit`` module; outputs named ``output_<i>`` unless the bundle names them."""

    name = "torchscript"

    def __init__(
        self, path: Path, device: Device = "cpu", output_names: list[str] | None = None
    ) -> None:
        import torch

        use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still works
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.output_names = list(output_names or [])
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        with self._lock, torch.inference_mode():
            result = self.module(tensor)
        if isinstance(result, dict):
            return {k: v.detach().cpu().numpy() for k, v in result.items()}
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        names = self.output_names
        if len(names) != len(items):
            names = [f"output_{i}" for i in range(len(items))]
        return {n: t.detach().cpu().numpy() for n, t in zip(names, items, strict=True)}


def open_backend(
    files: dict[str, Path],
    device: Device = "cpu",
    prefer: str | None = None,
    output_names: list[str] | None = None,
) -> Backend:
    """Open the preferred backend among a bundle's model files (ONNX unless ``prefer`` says)."""
    order = [prefer] if prefer else []
    order += ["onnx", "torchscript"]
    for name in order:
        if name in files:
            if name == "onnx":
                return OnnxBackend(files[name], device)
            return TorchScriptBackend(files[name], device, output_names)
    raise ValueError(f"no usable model file among {sorted(files)}")
