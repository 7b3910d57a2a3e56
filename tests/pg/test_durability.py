"""The foundation's durability tests with the index, job queue and outbox on PostgreSQL.

The outbox tests (delivery, PACS down then up, dead letter) are tests/dicom's own functions,
collected here again: this folder's ``service_factory`` puts ``storage.database_url`` on a fresh
PostgreSQL database. The kill -9 test is tests/dicom/test_crash.py's scenario with the same
helpers and a PostgreSQL URL in the config.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from pydicom import dcmread

from dicom.helpers import dcmtk, storescu, storescu_successes
from dicom.test_crash import _start
from dicom.test_faults import (  # noqa: F401 - collected here with the PostgreSQL fixtures
    test_aborted_association_keeps_nothing_partial,
    test_duplicate_uid_same_or_different_bytes,
)
from dicom.test_pacs import (  # noqa: F401 - collected here with the PostgreSQL fixtures
    test_orthanc_down_then_up_delivers_once,
    test_orthanc_rejecting_dead_letters,
    test_results_delivered_to_orthanc,
)
from medgate.db import Index
from medgate.dicom.orthanc import free_port
from medgate.dicom.synthetic import ct_series


def _config(tmp_path: Path, port: int, database_url: str) -> Path:
    config = tmp_path / "medgate.toml"
    config.write_text(
        f"""
[dicom]
ae_title = "MEDGATE"
host = "127.0.0.1"
port = {port}
study_idle_seconds = 1.0

[storage]
path = "{tmp_path / "store"}"
min_free_mb = 0
database_url = "{database_url}"

[audit]
hash_key = "test-key"
"""
    )
    return config


def test_kill_9_mid_run_loses_nothing_acknowledged_on_postgres(tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    config = _config(tmp_path, port, pg_url)
    log = tmp_path / "receive.log"
    files = ct_series(tmp_path / "series", 300, rows=64, columns=64)
    uid_of = {str(p): str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    index = Index(pg_url)
    proc = _start(config, log, port)
    sender = subprocess.Popen(
        [dcmtk("storescu"), "-v", "-aec", "MEDGATE", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while index.count_instances() < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        output, _ = sender.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    acknowledged = storescu_successes(output)
    assert 90 <= len(acknowledged) < 300, len(acknowledged)
    assert not (tmp_path / "store" / "index.sqlite").exists()  # the index really is PostgreSQL

    proc = _start(config, log, port)
    try:
        instances = tmp_path / "store" / "instances"
        assert not list(instances.rglob("*.part"))
        for path in instances.rglob("*.dcm"):
            dcmread(path)
        for name in acknowledged:
            row = index.get_instance(uid_of[name])
            assert row is not None, name
            assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
        result = storescu(port, files)
        assert len(storescu_successes(result.stdout + result.stderr)) == 300
        assert index.count_instances() == 300
        assert len(list(instances.rglob("*.dcm"))) == 300
        studies = index.list_studies()
        assert len(studies) == 1 and studies[0]["instances"] == 300
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        index.close()
