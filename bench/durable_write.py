"""Durable write ceilings: what one acknowledged instance costs the disk, by write strategy.

The receiver may answer a C-STORE only once the instance is durable. On ext4 a durable write of
a new file costs a journal commit (its size and blocks change); ``bench/ingest.py`` shows that
this, not Python, bounds medgate's receive rate against DCMTK ``storescp`` (which never syncs).
This script measures, in one run, ``--writers`` threads each making ``--count`` instances of
``--size`` bytes durable, three ways:

* ``file pool``: medgate's write today (``FilePool.write``: a pre-made empty file, ``writev``,
  ``fdatasync``, rename), the baseline;
* ``log, own flush``: each writer ``pwrite``-s into its own slot of one pre-allocated,
  zero-filled and synced log file, then ``fdatasync``-s it: overwriting blocks that are already
  allocated changes no metadata, so no journal commit, only a device flush;
* ``log, group flush``: the same writes, but one flusher thread ``fdatasync``-s for everyone
  who wrote since its last flush (a group commit: one device flush for several instances).

It prints instances/s for each and the ratio to the file pool, the median of ``--repeat`` runs.
A ratio well above 1 says a write-ahead instance log would lift the ceiling that
``bench/ingest.py`` runs into; it does not say what the rest of the receiver would then cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from medgate.store.filepool import FilePool


def file_pool(folder: Path, payload: bytes, writers: int, count: int) -> float:
    """medgate's durable write today; seconds for ``writers`` x ``count`` instances."""
    pool = FilePool(folder)

    def work(writer: int) -> None:
        for n in range(count):
            pool.write(folder / f"{writer}-{n}.dcm", (payload,))

    try:
        return _timed(work, writers)
    finally:
        pool.close()


def _log_file(folder: Path, slot: int, slots: int) -> int:
    """A log file of ``slots`` x ``slot`` bytes, zero-filled and synced (blocks allocated)."""
    path = folder / "instances.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    zeros = bytes(1 << 20)
    remaining = slot * slots
    while remaining:
        remaining -= os.write(fd, zeros[: min(remaining, len(zeros))])
    os.fsync(fd)
    return fd


def log_own_flush(folder: Path, payload: bytes, writers: int, count: int) -> float:
    slot = len(payload)
    fd = _log_file(folder, slot, writers * count)

    def work(writer: int) -> None:
        for n in range(count):
            os.pwrite(fd, payload, (writer * count + n) * slot)
            os.fdatasync(fd)

    try:
        return _timed(work, writers)
    finally:
        os.close(fd)


class GroupFlush:
    """One thread ``fdatasync``-s the log for every write made before the flush began."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0  # writes handed over so far
        self.durable = 0  # writes known durable
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def wrote(self) -> None:
        """Call after a ``pwrite``; returns once that write is durable."""
        with self.cond:
            self.written += 1
            mine = self.written
            self.cond.notify_all()
            while self.durable < mine:
                self.cond.wait()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.written == self.durable and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
                target = self.written
            os.fdatasync(self.fd)
            with self.cond:
                self.durable = target
                self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join()


def log_group_flush(folder: Path, payload: bytes, writers: int, count: int) -> float:
    slot = len(payload)
    fd = _log_file(folder, slot, writers * count)
    flusher = GroupFlush(fd)

    def work(writer: int) -> None:
        for n in range(count):
            os.pwrite(fd, payload, (writer * count + n) * slot)
            flusher.wrote()

    try:
        return _timed(work, writers)
    finally:
        flusher.stop()
        os.close(fd)


def _timed(work: Callable[[int], None], writers: int) -> float:
    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


STRATEGIES: dict[str, Callable[[Path, bytes, int, int], float]] = {
    "file pool (today)": file_pool,
    "log, own flush": log_own_flush,
    "log, group flush": log_group_flush,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4, help="parallel writers (associations)")
    parser.add_argument("--count", type=int, default=50, help="instances per writer")
    parser.add_argument("--size", type=int, default=524_288, help="bytes per instance")
    parser.add_argument("--repeat", type=int, default=3, help="runs per strategy (medians)")
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to measure")
    args = parser.parse_args()
    payload = os.urandom(args.size)
    total = args.writers * args.count
    rates: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    ratios: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="medgate-durable-") as tmp:
        for run in range(args.repeat):
            seconds: dict[str, float] = {}
            for name, strategy in STRATEGIES.items():  # interleaved: the disk's speed drifts
                folder = Path(tmp) / f"{run}-{len(seconds)}"
                folder.mkdir()
                seconds[name] = strategy(folder, payload, args.writers, args.count)
                rates[name].append(total / seconds[name])
            for name in STRATEGIES:
                ratios[name].append(seconds["file pool (today)"] / seconds[name])
    print(
        f"{args.writers} writers x {args.count} instances of {args.size} bytes, "
        f"{args.repeat} interleaved runs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'strategy':<20} {'instances/s':>12} {'ratio to file pool':>19} {'range':>11}")
    for name in STRATEGIES:
        spread = f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}"
        print(
            f"{name:<20} {statistics.median(rates[name]):>12.0f} "
            f"{statistics.median(ratios[name]):>19.2f} {spread:>11}"
        )


if __name__ == "__main__":
    main()
