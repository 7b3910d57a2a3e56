"""``bench/gpu.py`` on CPU: the GPU check a lent GPU machine runs (``scripts/gpu-check.sh``)
keeps working between such sessions, and the demo bundles' two model files agree: TorchScript
and ONNX Runtime give the same findings and masks as the predictor medgate loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu_and_both_backends_agree(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert gpu.main(["--device", "cpu", "--studies", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    checks = [line for line in lines if line.startswith("[cuda path]")]
    # two radiograph bundles, each with a TorchScript and an ONNX file
    assert len(checks) == 4, lines
    assert all(line.endswith("-> ok") for line in checks), checks
    assert {"torchscript", "onnxruntime"} <= {line.split(": ")[1].split()[0] for line in checks}
    assert any(line.startswith("[batching]") and "at most" in line for line in lines)
