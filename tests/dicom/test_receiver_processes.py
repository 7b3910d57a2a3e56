"""Receiving in several processes (``dicom.receiver_processes``): four associations at once into
a pool of receiver processes store every instance once, byte for byte, with its row; a
``kill -9`` of the parent takes every receiver child with it; SIGTERM stops them cleanly."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from tests.support.storescu import STORESCU_PROPOSE, storescu

from medgate.cli.dicom_service import DicomService
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.receiver_pool import receiver_process_count
from medgate.store.db import Index


def _data_set(part10: bytes) -> bytes:
    """The data set of a Part 10 file: what follows the File Meta group (its length at 140)."""
    assert part10[128:132] == b"DICM"
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def _children_of(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry))
    return found


def _written_bytes(pid: int) -> int:
    """Bytes the process has written so far (``wchar`` of /proc/<pid>/io)."""
    with open(f"/proc/{pid}/io") as handle:
        fields = dict(line.split(": ") for line in handle.read().splitlines())
    return int(fields["wchar"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_default_process_count_is_one_per_core(settings_factory: Callable[..., object]) -> None:
    settings = settings_factory()
    assert receiver_process_count(settings) == len(os.sched_getaffinity(0))  # type: ignore[arg-type]
    one = settings_factory(dicom={"receiver_processes": 1})
    assert receiver_process_count(one) == 1  # type: ignore[arg-type]


def test_four_associations_into_three_processes_store_each_instance_once(
    tmp_path: Path, service_factory: Callable[..., DicomService]
) -> None:
    service = service_factory(dicom={"receiver_processes": 3})
    assert service.receiver.pool is not None and len(service.receiver.pool.pids) == 3
    series = [ct_series(tmp_path / f"s{n}", 12, rows=64, columns=64) for n in range(4)]
    before = {pid: _written_bytes(pid) for pid in service.receiver.pool.pids}
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda files: storescu(
                    service.port, files, STORESCU_PROPOSE[ExplicitVRLittleEndian]
                ),
                series,
            )
        )
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    sent = [path for files in series for path in files]
    assert service.index.instances.count() == len(sent) == 48
    for path in sent:
        row = service.index.instances.get(str(read_file_meta_info(path).MediaStorageSOPInstanceUID))
        assert row is not None, path.name
        stored = Path(row.path).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == row.sha256
        assert _data_set(stored) == _data_set(path.read_bytes())
    assert len(list(service.store.instances_dir.rglob("*.dcm"))) == 48
    # the associations were served by the children, more than one of them (a series is 100 KB)
    wrote = [_written_bytes(pid) - before[pid] for pid in service.receiver.pool.pids]
    assert sum(1 for written in wrote if written > 50_000) >= 2, wrote
    # the children audited what they received; the parent's flush waits for their entries
    service.receiver.audit_queue.flush()  # type: ignore[union-attr]
    received = [e for e in service.audit.entries() if e["event"] == "instance-received"]
    assert len(received) == 48
    assert service.audit.verify().ok


def test_sigterm_stops_the_children(service_factory: Callable[..., DicomService]) -> None:
    service = service_factory(dicom={"receiver_processes": 2})
    assert service.receiver.pool is not None
    pids = service.receiver.pool.pids
    assert all(_alive(pid) for pid in pids)
    service.receiver.stop()
    assert not any(_alive(pid) for pid in pids)


def test_a_killed_child_is_replaced_and_receiving_goes_on(
    tmp_path: Path, service_factory: Callable[..., DicomService]
) -> None:
    service = service_factory(dicom={"receiver_processes": 2})
    pool = service.receiver.pool
    assert pool is not None
    files = ct_series(tmp_path / "s", 8, rows=16, columns=16)
    assert storescu(service.port, files[:4], "-xe").returncode == 0
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (pool.restarted < 1 or victim in pool.pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.restarted == 1 and victim not in pool.pids
    assert all(_alive(pid) for pid in pool.pids) and len(pool.pids) == 2
    for _ in range(4):  # whichever child the kernel hands each association to
        result = storescu(service.port, files[4:], "-xe")
        assert result.returncode == 0, result.stderr[-2000:]
    assert service.index.instances.count() == 8
    service.receiver.audit_queue.flush()  # type: ignore[union-attr]


PARENT = textwrap.dedent(
    """
    import sys, time
    from medgate.cli.dicom_service import DicomService
    from medgate.core.config import load_settings

    settings = load_settings(
        None,
        dicom={"host": "127.0.0.1", "port": int(sys.argv[1]), "receiver_processes": 2},
        storage={"path": sys.argv[2], "min_free_mb": 0},
        audit={"hash_key": "test-key"},
    )
    service = DicomService(settings).start()
    print("started", " ".join(map(str, service.receiver.pool.pids)), flush=True)
    time.sleep(600)
    """
)


def _start_parent(port: int, store: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, str(port), str(store)], stdout=subprocess.PIPE, text=True
    )


def test_kill_9_of_the_parent_leaves_no_receiver_process(tmp_path: Path) -> None:
    port = free_port()
    parent = _start_parent(port, tmp_path / "store")
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().split()
        assert line and line[0] == "started", line
        pids = {int(pid) for pid in line[1:]}
        assert len(pids) == 2 and pids <= _children_of(parent.pid)
        files = ct_series(tmp_path / "s", 3, rows=16, columns=16)
        result = storescu(port, files, STORESCU_PROPOSE[ExplicitVRLittleEndian])
        assert result.returncode == 0, result.stderr[-2000:]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5  # they die with it, not after a clean stop
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if _alive(pid)], "orphan receiver processes"
        # a new parent takes the same port and store at once; what was acknowledged is there
        parent = _start_parent(port, tmp_path / "store")
        assert parent.stdout is not None
        assert parent.stdout.readline().startswith("started")
        more = ct_series(tmp_path / "more", 3, rows=16, columns=16)
        result = storescu(port, more, STORESCU_PROPOSE[ExplicitVRLittleEndian])
        assert result.returncode == 0, result.stderr[-2000:]
        index = Index(f"sqlite:///{tmp_path / 'store' / 'index.sqlite'}")
        try:
            assert index.instances.count() == 6
        finally:
            index.close()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
