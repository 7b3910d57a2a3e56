"""Helpers of the fault-injection and C-STORE fuzz suites (issue #8, "proof under faults").

They run the real pieces: ``medgate receive`` as a child process (so ``kill -9`` and RSS are
those of a real receiver), a pynetdicom SCU that sends files byte-for-byte (``store_files``),
and checks that read the store the way an auditor would: the index, the files, their sha256.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from medgate.core.config import Settings, load_settings
from medgate.dicom.net import Peer
from medgate.dicom.scu import SendReport, store_files
from medgate.store.db import Index

MEDGATE = [sys.executable, "-m", "medgate.cli.main"]
TMP_SUFFIX = ".part"

# Fault injections of the whole session by kind (every fault suite adds to it; the last test of
# test_faults_pipeline checks the minimum of the short or the long form).
INJECTIONS: dict[str, int] = {}


def count_injection(kind: str, n: int = 1) -> None:
    INJECTIONS[kind] = INJECTIONS.get(kind, 0) + n


FRACTION_ENV = "MEDGATE_TRUST_LONG_FRACTION"


def long_fraction() -> float:
    """The share of the long form to run (``MEDGATE_TRUST_LONG_FRACTION``, default 1): the long
    form takes hours on a small machine, and a measured fraction gives its rate and projection."""
    value = float(os.environ.get(FRACTION_ENV, "1") or "1")
    if not 0 < value <= 1:
        raise ValueError(f"{FRACTION_ENV} must be in (0, 1], got {value}")
    return value


def repetitions(long_count: int, short_count: int, long_run: bool) -> int:
    """How many injections / fuzz cases a test runs: the short form, or (``--long``) the long
    form scaled by ``long_fraction`` (never fewer than the short form)."""
    if not long_run:
        return short_count
    return max(short_count, math.ceil(long_count * long_fraction()))


def dataset_offset(data: bytes) -> int:
    """Where the data set starts in a Part 10 file: after preamble, 'DICM' and group 0002.

    Read from the (0002,0000) group length, which every file made here carries.
    """
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a group length first")
    (group_length,) = struct.unpack("<I", data[140:144])
    return 144 + group_length


def dataset_bytes(path: Path) -> bytes:
    """The data set bytes a byte-for-byte SCU puts on the wire for ``path``."""
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def receiver_config(
    tmp_path: Path, port: int, *, min_free_mb: int = 0, processes: int | None = None
) -> Path:
    """A TOML config for ``medgate receive`` on a loopback port with storage under tmp_path.

    ``processes`` pins ``dicom.receiver_processes``; unset, the receiver runs its default (one
    process per core), as it does in production.
    """
    config = tmp_path / "receive.toml"
    pinned = "" if processes is None else f"receiver_processes = {processes}\n"
    config.write_text(
        f"""
[dicom]
ae_title = "MEDGATE"
host = "127.0.0.1"
port = {port}
study_idle_seconds = 1.0
{pinned}
[storage]
path = "{tmp_path / "store"}"
min_free_mb = {min_free_mb}

[audit]
hash_key = "test-key"
"""
    )
    return config


def scu_settings() -> Settings:
    """Settings of the sending side (its AE title and timeouts only)."""
    return load_settings(None, dicom={"ae_title": "FAULTSCU", "network_timeout": 20.0})


def echo_ok(port: int, timeout: float = 5.0) -> bool:
    """One C-ECHO with pynetdicom: True when the peer answers success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.connection_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDGATE")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        if assoc.is_established:
            assoc.release()


class ReceiverProcess:
    """``medgate receive`` as a child process: start, wait until it answers C-ECHO, kill -9."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> ReceiverProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*MEDGATE, "receive", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.log.read_text(errors="replace")[-3000:])
            if echo_ok(self.port, timeout=2.0):
                return self
            time.sleep(0.1)
        self.kill9()
        raise AssertionError("medgate receive did not come up")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status (0 is a clean stop)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


@dataclass
class BackgroundSend:
    """``store_files`` in a thread, so a fault can be injected while it runs.

    ``pace_seconds`` waits that long after each instance, as a slow modality does: it keeps the
    run in flight long enough that a fault aimed at it cannot arrive after the last response,
    however fast the machine.
    """

    port: int
    files: list[Path]
    pace_seconds: float = 0.0
    report: SendReport = field(default_factory=SendReport)
    error: BaseException | None = None
    thread: threading.Thread | None = None
    answered: int = 0  # instances the SCU has had a response (or failure) for so far

    def start(self) -> BackgroundSend:
        def after_each() -> None:
            self.answered += 1
            if self.pace_seconds:
                time.sleep(self.pace_seconds)

        def run() -> None:
            try:
                self.report = store_files(
                    scu_settings(),
                    Peer("MEDGATE", "127.0.0.1", self.port),
                    self.files,
                    progress=after_each,
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 120.0) -> BackgroundSend:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the SCU did not finish"
        return self

    def in_flight(self) -> bool:
        """True while the SCU still has instances to send and its thread runs."""
        alive = self.thread is not None and self.thread.is_alive()
        return alive and self.answered < len(self.files)

    def acknowledged(self) -> list[Path]:
        return [p for p, code, _ in self.report.results if code is not None and code == 0]

    def statuses(self) -> dict[Path, int | None]:
        return {p: code for p, code, _ in self.report.results}


def send_all(port: int, files: list[Path], rounds: int = 3) -> list[Path]:
    """Send ``files`` and re-send what was not acknowledged, as a real SCU retries (on a loaded
    machine a response can miss the SCU's timeout); returns the files still not acknowledged."""
    rest = list(files)
    for _ in range(rounds):
        if not rest:
            break
        acknowledged = set(BackgroundSend(port, rest).start().join().acknowledged())
        rest = [p for p in rest if p not in acknowledged]
    return rest


def sop_uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def assert_store_consistent(store_root: Path, index: Index, acknowledged: list[Path]) -> int:
    """The durability promise, checked: returns the number of instance files on disk.

    * no temporary file is left (nothing half-written),
    * every stored ``.dcm`` parses,
    * every acknowledged instance has an index row whose file exists, whose sha256 matches the
      file, and whose data set bytes are exactly the bytes that were sent.
    """
    instances = store_root / "instances"
    partials = list(instances.rglob(f"*{TMP_SUFFIX}"))
    assert not partials, f"half-written files left: {partials[:3]}"
    # a pool of instance files whose owner has exited was claimed by the restart's recovery
    for lock_file in (store_root / ".pool").glob("*.lock"):
        fd = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    files = list(instances.rglob("*.dcm"))
    for path in files:
        dcmread(path, stop_before_pixels=False)
    for sent in acknowledged:
        row = index.instances.get(sop_uid(sent))
        assert row is not None, f"acknowledged instance {sent.name} has no index row"
        stored = Path(row.path).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == row.sha256, sent.name
        assert stored[dataset_offset(stored) :] == dataset_bytes(sent), sent.name
    return len(files)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / (1024 * 1024)
