"""The file pool behind instance writes: exact bytes, no leftovers, owners that cannot collide."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from medgate.store import filepool
from medgate.store.filepool import POOL_FOLDER, FilePool, abandoned_pools, write_all


@pytest.fixture
def pool(tmp_path: Path):  # type: ignore[no-untyped-def]
    pool = FilePool(tmp_path / "store", batch=8)
    (tmp_path / "store").mkdir()
    yield pool
    pool.close()


@pytest.mark.parametrize("size", [0, 100, 64 * 1024, 524_288 + 367, 5_000_001])
def test_write_gives_the_exact_bytes_under_the_final_name(
    tmp_path: Path, pool: FilePool, size: int
) -> None:
    data = os.urandom(size)
    target = tmp_path / "store" / "x.dcm"
    pool.write(target, (data[:300], memoryview(data)[300:]))  # preamble+meta, data set view
    assert target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert pool.folder is not None and pool.folder.parent == tmp_path / "store" / POOL_FOLDER
    # the file came out of the pool: everything left there is an empty, prepared file
    assert all(p.stat().st_size == 0 for p in pool.folder.iterdir())


def test_files_are_prepared_ahead_and_refilled_in_the_background(
    tmp_path: Path, pool: FilePool
) -> None:
    first = pool.take()
    assert first.exists() and first.stat().st_size == 0  # exists before anything is written
    assert pool.folder is not None
    for _ in range(pool.batch):
        pool.take().unlink()
    deadline = time.monotonic() + 10
    while len(list(pool.folder.iterdir())) < pool.batch // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list(pool.folder.iterdir())) >= pool.batch // 2


def test_a_failed_write_leaves_neither_the_target_nor_the_taken_file(
    tmp_path: Path, pool: FilePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "store" / "x.dcm"
    taken: list[Path] = []
    take = pool.take
    monkeypatch.setattr(pool, "take", lambda: taken.append(take()) or taken[-1])

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full_disk)
    with pytest.raises(OSError):
        pool.write(target, (b"meta", b"x" * 1000))
    assert not target.exists()
    assert taken and not taken[0].exists()


def test_a_removed_target_folder_is_created_again(tmp_path: Path, pool: FilePool) -> None:
    target = tmp_path / "store" / "shard" / "x.dcm"
    pool.write(target, (b"two",))
    assert target.read_bytes() == b"two"


def test_short_writes_are_finished(
    tmp_path: Path, pool: FilePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may take part of a writev; the rest must follow, in order."""
    real = os.writev

    def partial(fd: int, buffers: list[bytes]) -> int:
        joined = b"".join(bytes(b) for b in buffers)
        return real(fd, [joined[: len(joined) // 3]])

    monkeypatch.setattr(os, "writev", partial)
    data = os.urandom(10_000)
    target = tmp_path / "store" / "x.dcm"
    pool.write(target, (data[:7], data[7:5000], data[5000:]))
    assert target.read_bytes() == data


def test_write_all_with_nothing_to_write(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, ())
    finally:
        os.close(fd)
    assert path.read_bytes() == b""


def test_many_threads_write_at_once(tmp_path: Path, pool: FilePool) -> None:
    payloads = {tmp_path / "store" / f"{n}.dcm": os.urandom(3000 + n) for n in range(200)}
    targets = list(payloads)
    errors: list[BaseException] = []

    def run(share: list[Path]) -> None:
        try:
            for target in share:
                pool.write(target, (payloads[target],))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(targets[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(target.read_bytes() == data for target, data in payloads.items())


def test_close_removes_the_pool_folder_and_its_lock(tmp_path: Path) -> None:
    root = tmp_path / "store"
    pool = FilePool(root, batch=4)
    pool.write(root / "x.dcm", (b"data",))
    pool.close()
    assert (root / "x.dcm").read_bytes() == b"data"
    assert list((root / POOL_FOLDER).iterdir()) == []
    with pytest.raises(RuntimeError):
        pool.take()


def test_a_clean_close_makes_every_rename_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovery covers a crash; a clean stop must not need it: close syncs the target folders."""
    root = tmp_path / "store"
    pool = FilePool(root, batch=4)
    for shard in ("00", "01", "00"):
        pool.write(root / "instances" / shard / f"{len(shard)}-{os.urandom(4).hex()}.dcm", (b"x",))
    synced: list[Path] = []
    real = filepool.fsync_dir
    monkeypatch.setattr(filepool, "fsync_dir", lambda path: synced.append(path) or real(path))
    pool.close()
    assert {root / "instances" / "00", root / "instances" / "01"} <= set(synced)


def test_a_store_that_never_writes_makes_no_pool(tmp_path: Path) -> None:
    FilePool(tmp_path).close()
    assert not (tmp_path / POOL_FOLDER).exists()


_OWNER = """
import os, sys, time
from pathlib import Path
from medgate.store.filepool import FilePool
pool = FilePool(Path(sys.argv[1]), batch=4)
path = pool.take()
path.write_bytes(b"half a data set")
print(pool.folder, flush=True)
time.sleep(60)
"""


def test_only_pools_of_exited_owners_are_abandoned(tmp_path: Path) -> None:
    """A running owner's pool is never touched; once it is killed, its pool can be claimed."""
    root = tmp_path / "store"
    mine = FilePool(root, batch=4)
    mine.take()
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        theirs = Path(owner.stdout.readline().strip())
        assert theirs.is_dir()
        assert list(abandoned_pools(root)) == []  # both owners alive
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        claimed = []
        for folder in abandoned_pools(root):
            claimed.append(folder)
            written = [p.read_bytes() for p in folder.iterdir() if p.stat().st_size]
            assert written == [b"half a data set"]
        assert claimed == [theirs]
        assert not theirs.exists()  # removed once looked at
        assert mine.folder is not None and mine.folder.is_dir()  # a live pool stays
        assert sorted(p.name for p in (root / POOL_FOLDER).iterdir()) == sorted(
            [mine.folder.name, f"{mine.folder.name}.lock"]
        )
    finally:
        owner.kill()
        mine.close()


def _disk_full_while(monkeypatch: pytest.MonkeyPatch, full: Callable[[], bool]) -> None:
    """Make every ``FilePool._make`` fail with ENOSPC while ``full()`` says so."""
    real_make = FilePool._make

    def make(self: FilePool, folder: Path, count: int) -> list[Path]:
        if full():
            raise OSError(28, "No space left on device")
        return real_make(self, folder, count)

    monkeypatch.setattr(FilePool, "_make", make)


def test_the_refill_survives_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool that cannot prepare files says so in the log; a take then fails with the error
    (the store answers 0xA701) and works again once there is room."""
    root = tmp_path / "store"
    pool = FilePool(root, batch=4)
    broken = threading.Event()
    _disk_full_while(monkeypatch, broken.is_set)
    try:
        pool.take()
        broken.set()
        for _ in range(8):
            try:
                pool.take()
            except OSError as exc:
                assert exc.errno == 28
                break
        else:
            pytest.fail("a take on a full disk did not fail")
        broken.clear()
        pool.write(root / "x.dcm", (b"ok",))
        assert (root / "x.dcm").read_bytes() == b"ok"
    finally:
        pool.close()


def test_a_full_disk_when_the_pool_opens_is_an_error_then_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    pool = FilePool(root, batch=4)
    calls: list[int] = []
    _disk_full_while(monkeypatch, lambda: calls.append(1) or len(calls) == 1)  # the first only
    try:
        with pytest.raises(OSError):
            pool.write(root / "x.dcm", (b"first",))
        assert pool._thread is not None and pool._thread.is_alive()  # refills later
        pool.write(root / "x.dcm", (b"second",))
        assert (root / "x.dcm").read_bytes() == b"second"
    finally:
        pool.close()
