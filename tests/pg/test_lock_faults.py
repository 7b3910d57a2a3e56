"""Database faults on PostgreSQL under a running receiver, as the SQLite lock faults in
tests/trust/test_faults_pipeline.py: a statement timeout on a locked table, medgate's backends
killed (``pg_terminate_backend``) while instances stream in, the server stopped (immediate
shutdown) mid-run and started again. In each case the receiver answers a failure status for
what it could not index, loses nothing it acknowledged and recovers without a restart.

The receiver runs with its default process count (one per CPU core), so each receiver process's
own connections meet the fault.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.filereader import read_file_meta_info
from tests.support.postgres import PostgresServer

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.net import self_peer
from medgate.dicom.scu import SendReport, store_files

FAILURE_CLASSES = (0xA7, 0xA9, 0xC0)
"""DICOM failure statuses a C-STORE may get (PS3.4 B.2.3): out of resources, not understood."""


def _send(service: DicomService, files: list[Path]) -> SendReport:
    return store_files(service.settings, self_peer(service.settings), files)


def _data_set(part10: bytes) -> bytes:
    """The data set of a Part 10 file: what follows the File Meta group (its length at 140)."""
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def _assert_acknowledged_stored(service: DicomService, acknowledged: list[Path]) -> None:
    """Every acknowledged instance has its row, its file, and the bytes that were sent."""
    for path in acknowledged:
        uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        row = service.index.instances.get(uid)
        assert row is not None, f"acknowledged {path.name} has no row"
        stored = Path(row.path).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == row.sha256, path.name
        assert _data_set(stored) == _data_set(path.read_bytes()), path.name
    assert not list(service.store.instances_dir.rglob("*.part"))


def _failures_are_dicom_failures(report: SendReport) -> None:
    for path, code, meaning in report.results:
        if meaning not in ("Success", "Warning"):
            assert code is not None and (code >> 8) in FAILURE_CLASSES, (path.name, code, meaning)


def test_statement_timeout_on_a_locked_table_answers_failure_then_recovers(
    tmp_path: Path, pg_url: str, service_factory: Callable[..., DicomService]
) -> None:
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = pg_url.rsplit("/", 1)[1]
    with admin.connect() as conn:  # every session medgate opens gets a 1.5 s statement limit
        conn.exec_driver_sql(f"ALTER DATABASE {database} SET statement_timeout = '1500ms'")
    service = service_factory()
    assert service.receiver.pool is not None or os.cpu_count() == 1
    files = ct_series(tmp_path / "s", 9, rows=16, columns=16)
    first = _send(service, files[:3])
    assert first.failed == 0
    locker = admin.connect()
    try:
        locker.exec_driver_sql("BEGIN")
        locker.exec_driver_sql("LOCK TABLE instances IN EXCLUSIVE MODE")  # reads go on
        started = time.monotonic()
        blocked = _send(service, files[3:6])
        assert blocked.failed == 3, blocked.counts()
        _failures_are_dicom_failures(blocked)
        assert time.monotonic() - started < 30  # answered after the timeout, not held
        assert service.index.instances.count() == 3
    finally:
        locker.exec_driver_sql("COMMIT")
        locker.close()
    again = _send(service, files[3:])
    assert again.failed == 0, again.counts()
    _assert_acknowledged_stored(service, files)
    assert service.index.instances.count() == 9
    admin.dispose()


def _terminate_medgate_backends(pg_url: str) -> int:
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar_one()
    finally:
        engine.dispose()
    return int(killed)


def test_killed_backends_reconnect_and_lose_nothing_acknowledged(
    tmp_path: Path, pg_url: str, service_factory: Callable[..., DicomService]
) -> None:
    service = service_factory()
    files = ct_series(tmp_path / "s", 40, rows=64, columns=64)
    assert _send(service, files[:4]).failed == 0
    # between associations: every pooled connection is dead; the next sends must not notice
    assert _terminate_medgate_backends(pg_url) >= 2  # the parent's and the receivers'
    after = _send(service, files[4:8])
    assert after.failed == 0, after.counts()
    # while a series streams in: kill them again, several times
    report: list[SendReport] = []
    sender = threading.Thread(target=lambda: report.append(_send(service, files[8:])))
    sender.start()
    kills = 0
    while sender.is_alive():
        kills += _terminate_medgate_backends(pg_url)
        time.sleep(0.05)
    sender.join()
    assert kills >= 1
    streamed = report[0]
    _failures_are_dicom_failures(streamed)
    acknowledged = files[:8] + streamed.succeeded
    _assert_acknowledged_stored(service, acknowledged)
    retry = _send(service, files)  # what failed is sent again; the rest is a duplicate
    assert retry.failed == 0, retry.counts()
    _assert_acknowledged_stored(service, files)
    assert service.index.instances.count() == 40


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, since the test shuts it down."""
    # outside pytest's root-only tree, as in the session fixture
    workdir = Path(tempfile.mkdtemp(prefix="medgate-pg-restart-"))
    server = PostgresServer(workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _immediate_shutdown(server: PostgresServer) -> None:
    """``pg_ctl stop -m immediate``: SIGQUIT to the postmaster, no checkpoint (a crash for the
    clients: open transactions vanish, recovery replays the WAL at the next start)."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGQUIT)
    assert server.process is not None
    server.process.wait(timeout=30)
    server.process = None


def test_server_restarted_mid_run_answers_failures_then_recovers(
    tmp_path: Path,
    own_postgres: PostgresServer,
    settings_factory: Callable[..., Settings],
) -> None:
    service = DicomService(settings_factory(storage={"database_url": own_postgres.url})).start()
    try:
        files = ct_series(tmp_path / "s", 208, rows=64, columns=64)
        assert _send(service, files[:4]).failed == 0
        # the server goes down while a series streams in (long enough not to end first)
        report: list[SendReport] = []
        sender = threading.Thread(target=lambda: report.append(_send(service, files[4:200])))
        sender.start()
        deadline = time.monotonic() + 60
        while service.index.instances.count() < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        _immediate_shutdown(own_postgres)
        sender.join(120)
        assert not sender.is_alive()
        streamed = report[0]
        assert streamed.failed >= 1, streamed.counts()
        _failures_are_dicom_failures(streamed)
        # while it is down every C-STORE is answered, with a failure status, within bounds
        started = time.monotonic()
        down = _send(service, files[200:204])
        assert down.failed == 4, down.counts()
        _failures_are_dicom_failures(down)
        assert time.monotonic() - started < 60
        own_postgres.start()
        # back up: the same running service stores again, and kept all it acknowledged
        retry = _send(service, files)
        assert retry.failed == 0, retry.counts()
        _assert_acknowledged_stored(service, files)
        assert service.index.instances.count() == 208
        assert set(files[:4] + streamed.succeeded) <= set(retry.succeeded)
    finally:
        service.stop()
