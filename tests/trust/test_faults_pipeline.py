"""Proof under faults (issue #8): kill -9, a PACS that goes away, a full disk, a locked database.

Each test injects faults into the real running pieces and then checks the durability promise:
every instance acknowledged with C-STORE success is stored intact (the sha256 in the index
matches the file, and the file's data set is byte-for-byte what was sent), nothing is left
half-written, every stored file parses, and every study ends with exactly one set of results in
the PACS (real Orthanc, read over its REST API). Counts of injections are printed and asserted;
``--long`` raises them (>= 1,000 injections in all).
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from tests.support.faults import (
    INJECTIONS,
    BackgroundSend,
    ReceiverProcess,
    assert_store_consistent,
    count_injection,
    echo_ok,
    long_fraction,
    receiver_config,
    repetitions,
    send_all,
    sop_uid,
)

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.orthanc import OrthancServer
from medgate.store.db import Index

_count = count_injection


@pytest.fixture(scope="module", autouse=True)
def _report_injections() -> object:
    yield
    total = sum(INJECTIONS.values())
    print(f"\nfault injections: {INJECTIONS} total={total}")


def _series(folder: Path, count: int, seed: int) -> list[Path]:
    return ct_series(folder, count, rows=16, columns=16, seed=seed)


# ------------------------------------------------------------------ kill -9 of the receiver


def test_kill9_receiver_during_sends(tmp_path: Path, long_run: bool) -> None:
    """Many kill -9 of ``medgate receive`` at random moments of a C-STORE run, each followed
    by a restart and the durability checks; at the end a full re-send completes the store."""
    kills = repetitions(1000, 12, long_run)
    rng = random.Random(8)
    port = free_port()
    config = receiver_config(tmp_path, port)
    receiver = ReceiverProcess(config, port, tmp_path / "receive.log")
    files = _series(tmp_path / "series", 60, seed=1)
    acknowledged: set[Path] = set()
    index: Index | None = None
    try:
        receiver.start()
        index = Index(f"sqlite:///{tmp_path / 'store' / 'index.sqlite'}", create=False)
        for _ in range(kills):
            batch = rng.sample(files, 25)
            sender = BackgroundSend(port, batch).start()
            time.sleep(rng.uniform(0.02, 0.6))
            receiver.kill9()
            _count("kill9-receiver")
            sender.join()
            acknowledged.update(sender.acknowledged())
            receiver.start()  # recovery runs before the listener opens
            assert_store_consistent(tmp_path / "store", index, sorted(acknowledged))
        # everything, again: the rest arrives, nothing twice
        assert not send_all(port, files)
        assert index.instances.count() == len(files)
        assert assert_store_consistent(tmp_path / "store", index, files) == len(files)
        assert receiver.stop() == 0
    finally:
        receiver.kill9()
        if index is not None:
            index.close()
    assert INJECTIONS["kill9-receiver"] >= kills
    assert acknowledged, "no instance was ever acknowledged between kills"


# ------------------------------------------------------------------ disk below min_free_mb


def test_disk_below_threshold_during_sends(
    settings_factory: Callable[..., Settings], tmp_path: Path, long_run: bool
) -> None:
    """The free-disk threshold is crossed mid-run (``storage.min_free_mb`` raised above the free
    space of the running store, then lowered again): instances while 'full' get 0xA700 and are
    not stored, the acknowledged ones are intact, and a re-send after the space returns fills in
    the rest."""
    rounds = repetitions(200, 3, long_run)
    rng = random.Random(9)
    service = DicomService(settings_factory()).start()
    try:
        files = _series(tmp_path / "series", 40, seed=2)
        store = service.store
        normal = store.min_free_bytes
        acknowledged: set[Path] = set()
        refused_seen = 0
        for _ in range(rounds):
            sender = BackgroundSend(service.port, files).start()
            time.sleep(rng.uniform(0.0, 0.3))
            store.min_free_bytes = store.free_bytes() + (1 << 40)  # the disk "fills up"
            _count("disk-full")
            time.sleep(rng.uniform(0.05, 0.3))
            store.min_free_bytes = normal
            sender.join()
            statuses = sender.statuses()
            acknowledged.update(sender.acknowledged())
            refused = [p for p, code in statuses.items() if code == 0xA700]
            refused_seen += len(refused)
            assert set(statuses.values()) <= {0x0000, 0xA700}, statuses
            for path in refused:
                if path not in acknowledged:
                    assert service.index.instances.get(sop_uid(path)) is None
            assert_store_consistent(
                Path(service.settings.storage.path), service.index, sorted(acknowledged)
            )
        store.min_free_bytes = store.free_bytes() + (1 << 40)
        while_full = BackgroundSend(service.port, files[:5]).start().join()
        assert {code for _, code, _ in while_full.report.results} <= {0x0000, 0xA700}
        store.min_free_bytes = normal
        assert not send_all(service.port, files)
        assert service.index.instances.count() == len(files)
        assert echo_ok(service.port)
    finally:
        service.stop()
    assert INJECTIONS["disk-full"] >= rounds
    print(f"instances refused with 0xA700 while full: {refused_seen}")


# ------------------------------------------------------------------ the database locked


def test_database_locked_during_sends(
    settings_factory: Callable[..., Settings], tmp_path: Path, long_run: bool
) -> None:
    """Another connection holds ``BEGIN EXCLUSIVE`` on the SQLite index for a while during a
    C-STORE run: the receiver waits (busy timeout) or refuses, never acknowledges what it did not
    index, and everything acknowledged is intact afterwards."""
    rounds = repetitions(200, 3, long_run)
    rng = random.Random(10)
    service = DicomService(settings_factory()).start()
    db_path = Path(service.settings.storage.path) / "index.sqlite"
    try:
        acknowledged: set[Path] = set()
        for n in range(rounds):
            files = _series(tmp_path / f"series{n}", 20, seed=100 + n)
            sender = BackgroundSend(service.port, files).start()
            time.sleep(rng.uniform(0.0, 0.2))
            locker = sqlite3.connect(db_path, timeout=30, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            _count("db-locked")
            time.sleep(rng.uniform(0.5, 2.0))
            locker.execute("COMMIT")
            locker.close()
            sender.join()
            acknowledged.update(sender.acknowledged())
            failed = [p for p, code in sender.statuses().items() if code != 0]
            for path in failed:
                assert service.index.instances.get(sop_uid(path)) is None or path in acknowledged
            assert_store_consistent(
                Path(service.settings.storage.path), service.index, sorted(acknowledged)
            )
            # what was refused arrives when re-sent
            if failed:
                again = BackgroundSend(service.port, failed).start().join()
                acknowledged.update(again.acknowledged())
        assert echo_ok(service.port)
    finally:
        service.stop()
    assert INJECTIONS["db-locked"] >= rounds


# ------------------------------------------------------------------ the PACS stopped and restarted


def _result_sets(tmp_path: Path, service: DicomService, studies: int) -> dict[str, set[str]]:
    """Queue ``studies`` result sets (2 objects each, one study each) in the real outbox."""
    expected: dict[str, set[str]] = {}
    for n in range(studies):
        for path in _series(tmp_path / f"results{n}", 2, seed=500 + n):
            ds = dcmread(path)
            written = service.store.write_result(ds)
            study = str(ds.StudyInstanceUID)
            expected.setdefault(study, set()).add(str(ds.SOPInstanceUID))
            service.index.outbox.add([(str(ds.SOPInstanceUID), study, "sr", str(written))])
    return expected


def test_pacs_stopped_and_restarted_during_result_delivery(
    settings_factory: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
    long_run: bool,
) -> None:
    """Orthanc is stopped while the outbox delivers results and started again later: every study
    ends with exactly one set of results in the PACS, none twice, the outbox all 'sent'."""
    rounds = repetitions(100, 2, long_run)
    rng = random.Random(11)
    orthanc = orthanc_factory()
    settings = settings_factory(
        pacs={
            "ae_title": orthanc.ae_title,
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "send_backoff_seconds": 0.2,
            "send_backoff_max_seconds": 1.0,
            "send_max_attempts": 50,
        }
    )
    service = DicomService(settings).start()
    expected: dict[str, set[str]] = {}
    try:
        for n in range(rounds):
            batch = _result_sets(tmp_path / f"round{n}", service, 4)
            expected.update(batch)
            service.sender.wake()  # type: ignore[union-attr]
            time.sleep(rng.uniform(0.0, 0.4))
            orthanc.stop()
            _count("pacs-down")
            time.sleep(rng.uniform(0.5, 1.5))
            orthanc.start()

        def all_sent() -> bool:
            rows = service.index.outbox.list()
            return bool(rows) and all(r.status == "sent" for r in rows)

        deadline = time.monotonic() + 60
        while not all_sent() and time.monotonic() < deadline:
            service.sender.wake()  # type: ignore[union-attr]
            time.sleep(0.3)
        rows = service.index.outbox.list()
        assert all(r.status == "sent" for r in rows), {r.status for r in rows}
        assert len(rows) == sum(len(v) for v in expected.values())
        # queuing the same results again (a study processed twice) sends nothing more
        again = [(r.sop_instance_uid, r.study_instance_uid, r.kind, r.path) for r in rows]
        assert service.index.outbox.add(again) == 0
        for study, sops in expected.items():
            held = orthanc.study_instances(study)
            uids = [
                orthanc.get(f"/instances/{item['ID']}/simplified-tags")["SOPInstanceUID"]
                for item in held
            ]
            assert sorted(uids) == sorted(sops), study  # exactly one set, nothing twice
        assert len(orthanc.get("/instances")) == sum(len(v) for v in expected.values())
    finally:
        service.stop()
    assert INJECTIONS["pacs-down"] >= rounds


def test_injection_minimum(long_run: bool) -> None:
    """The short form injects at least 20 faults, the long form at least 1,000 (runs last; a
    fraction of the long form, see ``long_fraction``, at least that fraction of 1,000)."""
    total = sum(INJECTIONS.values())
    print(f"fault injections: {INJECTIONS} total={total}")
    assert total >= (math.ceil(1000 * long_fraction()) if long_run else 20), INJECTIONS
