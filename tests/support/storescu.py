"""Helpers of the DICOM network tests: DCMTK binaries, storescu runs and their output."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Transfer syntax of a file -> the storescu option that proposes it (so nothing is converted).
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def dcmtk(name: str) -> str:
    """Path of DCMTK's ``name``: the venv's pynetdicom installs Python apps of the same names."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"DCMTK {name} is not installed: run `make test` (scripts/install.sh)")
    return found


def storescu(
    port: int,
    files: list[Path],
    *args: str,
    aet: str = "STORESCU",
    aec: str = "MEDGATE",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK storescu -v (one association, no halt on errors) and capture its output."""
    env = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK: no Nagle delay on small command PDUs
    return subprocess.run(
        [
            dcmtk("storescu"),
            "-v",
            "-nh",
            "-aet",
            aet,
            "-aec",
            aec,
            *args,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def storescu_successes(output: str) -> list[str]:
    """Files storescu saw acknowledged with Success, from its -v output."""
    done: list[str] = []
    current: str | None = None
    for line in output.splitlines():
        if line.startswith("I: Sending file: "):
            current = line[len("I: Sending file: ") :].strip()
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


def storescu_attempts(output: str) -> list[str]:
    """Files storescu actually sent (it skips files DCMTK itself cannot read)."""
    return [
        line[len("I: Sending file: ") :].strip()
        for line in output.splitlines()
        if line.startswith("I: Sending file: ")
    ]
