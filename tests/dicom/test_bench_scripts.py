"""The ingest benchmarks run and print every figure they promise (tiny sizes: not a measurement).

``bench/`` holds the performance claims of docs/dicom.md; a script that broke would leave those
claims without a way to check them. Here each runs end to end on a few small instances with the
real DCMTK peers and medgate's real receiver, and its tables are parsed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(?:\.\d+)?"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_ingest_bench_prints_rates_ratios_and_cpu_per_instance() -> None:
    out = _run("ingest.py", "--count", "8", "--size", "64", "--repeat", "1", "--processes", "2")
    for associations in (1, 4):
        rates = re.search(rf"^\s+{associations}((?:\s+{NUMBER}(?:-{NUMBER})?){{9}})\s*$", out, re.M)
        assert rates, out
        # storescp/s, --fork/s, medgate/s and the ceiling are positive rates
        values = rates.group(1).split()
        assert all(float(values[i]) > 0 for i in (0, 1, 2, 7)), values
    cpu_table = out.split("CPU ms per instance", 1)[1]
    for associations in (1, 4):
        row = re.search(rf"^\s+{associations}((?:\s+-?{NUMBER}){{5}})\s*$", cpu_table, re.M)
        assert row, cpu_table


def test_durable_write_bench_compares_three_strategies() -> None:
    out = _run("durable_write.py", "--writers", "2", "--count", "3", "--size", "4096")
    for name in ("file pool (today)", "log, own flush", "log, group flush"):
        row = re.search(rf"^{re.escape(name)}\s+({NUMBER})\s+({NUMBER})\s", out, re.M)
        assert row, out
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0
    assert re.search(rf"^file pool \(today\)\s+{NUMBER}\s+1\.00\s", out, re.M), out
