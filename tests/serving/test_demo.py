"""``medgate demo`` end to end as a user runs it (its own Ray and Orthanc), on a tiny bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.serving import write_bundle


def test_demo_runs_the_whole_chain_and_stops_cleanly(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_bundle(models, "cxr_classifier")  # the name the default routing rules expect
    env = {
        **os.environ,
        "MEDGATE_MODELS__PATH": str(models),
        "MEDGATE_MODELS__NUM_CPUS": "0.2",
        "MEDGATE_AUDIT__HASH_KEY": "demo-test",
        "COLUMNS": "200",
    }
    env.pop("MEDGATE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "medgate.cli.main", "demo", "--studies", "2", "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=tmp_path,
    )
    out = done.stdout
    report = out[-4000:] + "\n--- stderr ---\n" + done.stderr[-4000:]
    assert done.returncode == 0, report
    assert "2/2 studies done" in out, report
    assert out.count("status done") == 2, report
    assert "guidance [zh]" in out and "guidance [en]" in out, report
    assert "priority" in out and "/app/explorer.html#study?uuid=" in out, report
    assert "sr" in out.split("in the PACS", 1)[1].split("\n", 1)[0], report
