"""``bench/gpu.py`` on CPU: the GPU check a lent GPU machine runs (``scripts/gpu-check.sh``)
keeps working between such sessions, and the demo bundles' two model files agree: TorchScript
and ONNX Runtime give the same findings and masks as the predictor medgate loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu_and_both_backends_agree() -> None:
    # run as scripts/gpu-check.sh runs it: a script whose folder (bench/) is its import path
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--studies", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    checks = [line for line in lines if line.startswith("[cuda path]")]
    # two radiograph bundles, each with a TorchScript and an ONNX file
    assert len(checks) == 4, lines
    assert all(line.endswith("-> ok") for line in checks), checks
    assert {"torchscript", "onnxruntime"} <= {line.split(": ")[1].split()[0] for line in checks}
    assert any(line.startswith("[batching]") and "at most" in line for line in lines)
