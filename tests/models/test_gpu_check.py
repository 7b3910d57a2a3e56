"""``bench/gpu.py`` on CPU: the GPU check a lent GPU machine runs (``scripts/gpu-check.sh``)
keeps working between such sessions, and the demo bundles' two model files agree: TorchScript
and ONNX Runtime give the same findings and masks as the predictor medgate loads."""

from __future__ import annotations

import re
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


# Run in a child interpreter: refuses at import every top-level module whose distribution is
# neither in the GPU machine's image nor among the wheels gpu-check.sh carries (medgate itself
# travels as src/), then runs bench/gpu.py as the script does. The stdlib and bench/'s own
# modules pass.
_ONLY_THE_GPU_MACHINES_PACKAGES = """
import importlib.abc, importlib.metadata, re, runpy, sys
allowed = set(sys.argv[1].split(",")) | {"medgate"}  # travels as src/
owners = importlib.metadata.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
class Refuse(importlib.abc.MetaPathFinder):
    refused = set()
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {norm(d) for d in owners.get(top, ())}
        if dists and not dists & allowed and top not in sys.stdlib_module_names:
            Refuse.refused.add(top)
            raise ModuleNotFoundError(f"{name}: not on the GPU machine", name=name)
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[2:]
sys.path.insert(0, "bench")
try:
    runpy.run_path("bench/gpu.py", run_name="__main__")
finally:
    print("refused:", ",".join(sorted(Refuse.refused)))
"""


def _gpu_machine_distributions() -> set[str]:
    listed = (ROOT / "scripts" / "gpu-machine-packages.txt").read_text().splitlines()
    makefile = (ROOT / "Makefile").read_text()
    wheels = re.search(r"^GPU_WHEELS = ((?:.*\\\n)*.*)$", makefile, re.M)
    assert wheels is not None, "the Makefile names no GPU_WHEELS"
    carried = wheels.group(1).replace("\\\n", " ").split()
    names = [n for n in listed if n and not n.startswith("#")] + carried
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def test_gpu_check_needs_only_what_the_gpu_machine_has_and_the_wheels_it_carries() -> None:
    """Nothing can be fetched on the lent machine: an import outside its image and the carried
    wheels would fail the one short call a session gets there."""
    allowed = _gpu_machine_distributions()
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _ONLY_THE_GPU_MACHINES_PACKAGES,
            ",".join(sorted(allowed)),
            "bench/gpu.py",
            "--device",
            "cpu",
            "--studies",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    checks = [line for line in run.stdout.splitlines() if line.startswith("[cuda path]")]
    assert len(checks) == 4 and all(line.endswith("-> ok") for line in checks), run.stdout
    refused = run.stdout.rstrip().splitlines()[-1]
    assert refused.startswith("refused:"), run.stdout[-1000:]
    # monai's optional imports are refused here as they are absent there; medgate's own are not
    assert "highdicom" not in refused and "sqlalchemy" not in refused.split(":")[1].split(",")
