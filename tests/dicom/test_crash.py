"""kill -9 of ``medgate serve`` in the middle of a storescu run loses nothing acknowledged,
with the index in SQLite and in PostgreSQL (``database_url`` runs the test on both).

``medgate serve`` is the whole gateway (receiver, worker, API and the local Ray it starts); the
test SIGKILLs it (``GatewayProcess.kill9``, shared with the trust suite's fault injections) and
checks that nothing of it but Ray's two per-node agents outlives the kill.

Also: patient names and IDs never reach the logs (the subprocess's output and caplog).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from tests.support.gateway_process import GatewayProcess
from tests.support.storescu import dcmtk, storescu, storescu_successes

from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.store.db import Index

PATIENT_NAME = "Zhang^Xiuying"
PATIENT_ID = "PID-7718-2024"


def _config(tmp_path: Path, port: int, api_port: int, database_url: str) -> Path:
    store = tmp_path / "store"
    bundles = tmp_path / "no-bundles"  # the receive path is under test: no model to load
    bundles.mkdir(exist_ok=True)
    config = tmp_path / "medgate.toml"
    config.write_text(
        f"""
[dicom]
ae_title = "MEDGATE"
host = "127.0.0.1"
port = {port}
study_idle_seconds = 1.0

[storage]
path = "{store}"
min_free_mb = 0
database_url = "{database_url}"

[api]
host = "127.0.0.1"
port = {api_port}

[models]
path = "{bundles}"

[audit]
hash_key = "test-key"
"""
    )
    return config


def test_kill_9_mid_run_loses_nothing_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    port, api_port = free_port(), free_port()
    config = _config(tmp_path, port, api_port, database_url)
    gateway = GatewayProcess(config, f"http://127.0.0.1:{api_port}", tmp_path)
    files = ct_series(
        tmp_path / "series",
        300,
        rows=64,
        columns=64,
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
    )
    uid_of = {str(p): str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    gateway.start()
    index = Index(database_url)
    sender = subprocess.Popen(
        [dcmtk("storescu"), "-v", "-aec", "MEDGATE", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while index.instances.count() < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        survivors = gateway.kill9()
        output, _ = sender.communicate(timeout=60)
    finally:
        gateway.kill9()  # a no-op unless the wait above failed
    assert survivors == []  # nothing of the gateway (Ray included) outlived the kill
    acknowledged = storescu_successes(output)
    # the kill lands between an index commit and its response at most once
    assert 90 <= len(acknowledged) < 300, len(acknowledged)

    # restart: every acknowledged instance is there, complete, with the indexed sha256
    gateway.start()
    try:
        instances = tmp_path / "store" / "instances"
        assert not list(instances.rglob("*.part"))  # partial writes cleaned up
        for path in instances.rglob("*.dcm"):
            dcmread(path)  # every file parses
        for name in acknowledged:
            row = index.instances.get(uid_of[name])
            assert row is not None, name
            assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256
        # re-send everything: the rest arrives, nothing twice
        result = storescu(port, files)
        assert len(storescu_successes(result.stdout + result.stderr)) == 300
        assert index.instances.count() == 300
        assert len(list(instances.rglob("*.dcm"))) == 300
        studies = index.studies.list()
        assert len(studies) == 1 and studies[0].instances == 300
    finally:
        code = gateway.stop()
        index.close()
    assert code == 0  # clean stop on SIGTERM

    # no patient identifier in the service's log output or in this process's log records
    logs = [log.read_text(errors="replace") for log in sorted(tmp_path.glob("serve*.log"))]
    text = "\n".join(logs) + "\n".join(r.getMessage() for r in caplog.records)
    assert "medgate ready" in text
    for secret in (PATIENT_NAME, PATIENT_ID, "Zhang", *list(uid_of.values())[:20]):
        assert secret not in text
    audit = (tmp_path / "store" / "audit.jsonl").read_text()
    assert PATIENT_NAME not in audit and PATIENT_ID not in audit
    assert next(iter(uid_of.values())) not in audit
