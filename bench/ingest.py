"""Ingest benchmark: medgate's receiver against DCMTK's storescp, same files, same sender.

Generates a synthetic CT series (default 300 slices of 512x512 int16), sends it with DCMTK
``storescu`` over one association, then split over 4 parallel associations, to

* DCMTK ``storescp`` (started with TCP_NODELAY=1, writing to a temporary folder), in one process
  and with ``--fork`` (a process per association),
* medgate's receiver with its default process count (``dicom.receiver_processes``: one per CPU
  core; ``--processes`` sets it) and durable acknowledgements: the file written into a pre-made
  empty file whose name is already durable, fdatasync, rename; the index row committed; the
  audit entry queued; all before every success status,

and prints instances/s for each and medgate's ratio to storescp and to storescp ``--fork``: the
median over ``--repeat`` runs (default 3) of the ratio of each medgate run to the storescp runs
just before and just after it (their mean time), with the range of those ratios. Bracketing each
medgate run this way cancels most of the drift of this kind of machine's disk and CPU within a run.
Run: ``python bench/ingest.py [--count N] [--repeat N] [--processes N]``.

It also prints the *durable-write ceiling* of this disk: the same files written with nothing but
medgate's durable file write (``FilePool.write``: pre-made file, fdatasync, rename), one writer
per association, no network, no parsing and no index. storescp does not fsync, so on a disk
where one fsync costs more than storescp needs for a whole instance, that ceiling (not medgate's
code) bounds the ratio; medgate's share of the ceiling shows what the receiver's own overhead costs.

And the CPU each receiver spends per instance: all cores' busy time during the send (/proc/stat)
less the senders' own (their rusage). On a host with few cores, storescu shares them with the
receiver, so a receiver that needs more CPU per instance cannot keep up however it is spread
over processes.

``--breakdown`` then times medgate cut down step by step, over 1 and 4 associations: the
acceptor alone, the acceptor with only the durable file write, the full receiver in one process,
the same with no sync at all (unsafe, an upper bound that shows what durability costs), and the
full receiver with its default process count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import event

from medgate.core.config import load_settings
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.acceptor import AcceptedContext, Peer
from medgate.dicom.dimse import Command
from medgate.dicom.receiver import PREAMBLE, StorageReceiver
from medgate.dicom.receiver_pool import receiver_process_count
from medgate.store.db import Index
from medgate.store.filepool import FilePool
from medgate.trust.audit import AuditLog


def dcmtk(name: str) -> str:
    """The DCMTK binary ``name``: pynetdicom installs same-named Python apps into the venv."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if (
        found is None
        or "dcmtk"
        not in subprocess.run([found, "--version"], capture_output=True, text=True).stdout.lower()
    ):
        raise FileNotFoundError(f"DCMTK {name} is not installed (apt-get install dcmtk)")
    return found


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass(frozen=True)
class Measured:
    """One run: wall seconds, CPU seconds of the receiver and of the storescu senders."""

    seconds: float
    receiver_cpu: float
    sender_cpu: float

    @staticmethod
    def mean(a: Measured, b: Measured) -> Measured:
        return Measured(*((x + y) / 2 for x, y in zip(astuple(a), astuple(b), strict=True)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and iowait).

    The receiver's CPU is this machine-wide figure over a send minus the senders' own: storescp
    ``--fork`` waits for its association processes late or never, so their CPU is in no rusage
    a parent can read, and medgate's receiver processes are measured the same way.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def send(files: list[Path], port: int, called: str, parallel: int) -> tuple[float, float]:
    """Send ``files`` with storescu over ``parallel`` associations; return elapsed seconds and
    the senders' CPU seconds."""
    groups = [files[i::parallel] for i in range(parallel)]
    # The sender is the same for both receivers; without TCP_NODELAY DCMTK's small command PDUs
    # wait for delayed ACKs and the benchmark would measure Nagle's algorithm instead.
    env = {**os.environ, "TCP_NODELAY": "1"}
    cpu_before = _children_cpu()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                "-aet",
                "BENCH",
                "-aec",
                called,
                "127.0.0.1",
                str(port),
                *map(str, g),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for g in groups
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start, _children_cpu() - cpu_before


def bench_storescp(files: list[Path], parallel: int, workdir: Path, fork: bool) -> Measured:
    out = workdir / f"storescp-{parallel}-{'fork' if fork else 'single'}"
    out.mkdir()
    port = free_port()
    env = {**os.environ, "TCP_NODELAY": "1"}
    args = [dcmtk("storescp"), "-od", str(out), "-aet", "STORESCP"]
    if fork:
        args.append("--fork")
    proc = subprocess.Popen(
        [*args, str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port)
        before = _machine_busy()
        seconds, sender_cpu = send(files, port, "STORESCP", parallel)
        return Measured(seconds, _machine_busy() - before - sender_cpu, sender_cpu)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class AcceptOnly(StorageReceiver):
    """Breakdown: medgate's acceptor answering success without storing anything."""

    def on_store(
        self, peer: Peer, context: AcceptedContext, request: Command, data: list[memoryview]
    ) -> tuple[int, str | None]:
        self.received += 1
        return 0x0000, None


class DurableWriteOnly(StorageReceiver):
    """Breakdown: the acceptor plus the durable file write, no parse, hash, index or audit."""

    def on_store(
        self, peer: Peer, context: AcceptedContext, request: Command, data: list[memoryview]
    ) -> tuple[int, str | None]:
        self.received += 1
        uid = request.affected_sop_instance_uid
        self.store.pool.write(self.store.instances_dir / f"{uid}.dcm", (PREAMBLE, *data))
        return 0x0000, None


class NoDurability(StorageReceiver):
    """Breakdown, unsafe, an upper bound only: the full receiver with no ``fdatasync`` of the
    instance files and SQLite ``synchronous=OFF``; what the receiver's own work (parse, hash,
    write, index, audit) allows when durability costs nothing."""


@contextlib.contextmanager
def durability_off(index: Index) -> Iterator[None]:
    """No ``os.fdatasync`` in this process and ``synchronous=OFF`` on every connection of the
    index: SQLAlchemy's pool and the receiver's own ``sqlite3`` connection for instance rows
    (``store.sqlite_hot_path``), which was opened with the index."""

    def sync_off(dbapi_conn: Any, _record: Any = None) -> None:
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    event.listen(index.engine, "connect", sync_off)  # after medgate's own pragmas
    index.engine.dispose()  # pooled connections reconnect, with the listener
    hot = index.instances._hot  # the bench reaches in on purpose
    hot_setting = 0
    if hot is not None:
        hot_setting = int(hot.connection.execute("PRAGMA synchronous").fetchone()[0])
        sync_off(hot.connection)
    try:
        with mock.patch("os.fdatasync", lambda fd: None):
            yield
    finally:
        event.remove(index.engine, "connect", sync_off)
        index.engine.dispose()  # pooled connections reconnect with the index's own pragmas
        if hot is not None:
            hot.connection.execute(f"PRAGMA synchronous={hot_setting}")


def bench_medgate(
    files: list[Path],
    parallel: int,
    workdir: Path,
    receiver_class: type[StorageReceiver] = StorageReceiver,
    processes: int | None = None,
) -> Measured:
    """medgate's receiver; the cut-down breakdown classes run in this process only."""
    store = workdir / f"medgate-{parallel}-{receiver_class.__name__}"
    if receiver_class is not StorageReceiver:
        processes = 1
    settings = load_settings(
        None,
        dicom={
            "host": "127.0.0.1",
            "port": free_port(),
            "ae_title": "MEDGATE",
            "receiver_processes": processes,
        },
        storage={"path": str(store), "min_free_mb": 0},
        audit={"hash_key": "bench"},
    )
    store.mkdir()
    index = Index(settings.storage.resolved_database_url())
    unsafe = durability_off(index) if receiver_class is NoDurability else contextlib.nullcontext()
    with unsafe:
        receiver = receiver_class(settings, index, AuditLog(settings.audit_path, "bench"))
        receiver.start()
        try:
            _wait_port(receiver.port)
            before = _machine_busy()
            elapsed, sender_cpu = send(files, receiver.port, "MEDGATE", parallel)
            receiver_cpu = _machine_busy() - before - sender_cpu
        finally:
            receiver.stop()
            receiver.store.close()
    stored = index.instances.count() if receiver_class is StorageReceiver else receiver.received
    index.close()
    if stored != len(files):
        raise RuntimeError(f"medgate indexed {stored} of {len(files)} instances")
    return Measured(elapsed, receiver_cpu, sender_cpu)


def bench_durable_ceiling(files: list[Path], parallel: int, workdir: Path) -> float:
    """Write ``files`` with medgate's durable file write (``FilePool.write``) from ``parallel``
    threads, nothing else; return elapsed seconds."""
    out = workdir / f"ceiling-{parallel}"
    out.mkdir()
    pool = FilePool(out)
    payloads = [f.read_bytes() for f in files]
    groups = [list(range(i, len(files), parallel)) for i in range(parallel)]

    def write(positions: list[int]) -> None:
        for position in positions:  # medgate's own write path
            pool.write(out / f"{position}.dcm", (payloads[position],))

    threads = [threading.Thread(target=write, args=(g,)) for g in groups]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    pool.close()
    return elapsed


def bracketed(
    files: list[Path],
    parallel: int,
    workdir: Path,
    receiver_class: type[StorageReceiver] = StorageReceiver,
    processes: int | None = None,
) -> tuple[Measured, Measured, Measured]:
    """storescp and storescp --fork (each the mean of the runs just before and just after) and
    medgate."""
    (workdir / "before").mkdir()
    (workdir / "after").mkdir()
    before = [bench_storescp(files, parallel, workdir / "before", fork) for fork in (False, True)]
    medgate = bench_medgate(files, parallel, workdir, receiver_class, processes)
    after = [bench_storescp(files, parallel, workdir / "after", fork) for fork in (True, False)]
    return Measured.mean(before[0], after[1]), Measured.mean(before[1], after[0]), medgate


def breakdown(files: list[Path], repeat: int, workdir: Path, processes: int) -> None:
    """Where the receiver's time goes: medgate cut down step by step, paired storescp runs."""
    rows: list[tuple[str, type[StorageReceiver], int]] = [
        ("acceptor only, nothing stored", AcceptOnly, 1),
        ("acceptor + durable file write only", DurableWriteOnly, 1),
        ("full receiver, 1 process", StorageReceiver, 1),
        ("full receiver, no sync at all (unsafe), 1 process", NoDurability, 1),
        (f"full receiver, {processes} processes", StorageReceiver, processes),
    ]
    for parallel in (1, 4):
        print(
            f"breakdown, {parallel} association(s): median ratio to storescp and to storescp "
            "--fork (range), bracketed runs"
        )
        for label, receiver_class, count in rows:
            ratios, fork_ratios = [], []
            for run in range(repeat):
                run_dir = workdir / f"breakdown-{parallel}-{receiver_class.__name__}-{count}-{run}"
                run_dir.mkdir()
                ref, fork, mg = bracketed(files, parallel, run_dir, receiver_class, count)
                ratios.append(ref.seconds / mg.seconds)
                fork_ratios.append(fork.seconds / mg.seconds)
                shutil.rmtree(run_dir)
            print(
                f"  {label:<52} {statistics.median(ratios):>5.2f} "
                f"({min(ratios):.2f}-{max(ratios):.2f})  {statistics.median(fork_ratios):>5.2f} "
                f"({min(fork_ratios):.2f}-{max(fork_ratios):.2f})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="instances in the series")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each slice")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians are printed)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time medgate cut down step by step (acceptor alone, with only the durable "
        "file write, the full receiver in one process, the same with no sync at all: an unsafe "
        "upper bound) over 1 and 4 associations: where the receiver's time goes",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="medgate receiver processes (default: one per CPU core)",
    )
    args = parser.parse_args(argv)
    try:
        dcmtk("storescu"), dcmtk("storescp")
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="medgate-bench-") as tmp:
        workdir = Path(tmp)
        files = ct_series(workdir / "series", args.count, rows=args.size, columns=args.size)
        mb = sum(f.stat().st_size for f in files) / 1e6
        load = os.getloadavg()[0]
        print(
            f"series: {len(files)} instances, {mb:.0f} MB; {os.cpu_count()} CPUs, load {load:.1f}"
        )
        processes = args.processes or receiver_process_count(
            load_settings(None, dicom={"receiver_processes": args.processes})
        )
        print(f"medgate receiver processes: {processes}")
        print(
            f"{'associations':>12} {'storescp/s':>11} {'--fork/s':>9} {'medgate/s':>10}"
            f" {'ratio':>6} {'range':>9} {'fork ratio':>10} {'range':>9}"
            f" {'ceiling/s':>10} {'medgate/ceiling':>15}"
        )
        cpu_rows: list[str] = []
        for parallel in (1, 4):
            refs, forks, mgs, caps, ratios, fork_ratios = [], [], [], [], [], []
            cpu: dict[str, list[float]] = {"storescp": [], "fork": [], "medgate": [], "sent": []}
            for run in range(args.repeat):
                run_dir = workdir / f"run{parallel}-{run}"
                run_dir.mkdir()
                # each medgate run is bracketed by storescp runs: the disk's speed drifts
                # within minutes, and the runs see about the same disk
                runs = bracketed(files, parallel, run_dir, processes=processes)
                ref, fork, mg = (len(files) / r.seconds for r in runs)
                for key, measured in zip(("storescp", "fork", "medgate"), runs, strict=True):
                    cpu[key].append(measured.receiver_cpu / len(files) * 1e3)
                cpu["sent"].append(runs[2].sender_cpu / len(files) * 1e3)
                caps.append(len(files) / bench_durable_ceiling(files, parallel, run_dir))
                refs.append(ref)
                forks.append(fork)
                mgs.append(mg)
                ratios.append(mg / ref)
                fork_ratios.append(mg / fork)
                shutil.rmtree(run_dir)
            ref, fork, mg, cap = (statistics.median(v) for v in (refs, forks, mgs, caps))
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            fork_spread = f"{min(fork_ratios):.2f}-{max(fork_ratios):.2f}"
            print(
                f"{parallel:>12} {ref:>11.1f} {fork:>9.1f} {mg:>10.1f}"
                f" {statistics.median(ratios):>6.2f} {spread:>9}"
                f" {statistics.median(fork_ratios):>10.2f} {fork_spread:>9}"
                f" {cap:>10.1f} {mg / cap:>15.2f}"
            )
            ms = {key: statistics.median(values) for key, values in cpu.items()}
            cpu_rows.append(
                f"{parallel:>12} {ms['storescp']:>9.2f} {ms['fork']:>9.2f} {ms['medgate']:>9.2f}"
                f" {ms['sent']:>13.2f} {ms['medgate'] / ms['fork']:>17.1f}"
            )
        print(
            f"CPU ms per instance (all cores' busy time during the send, less the senders'):\n"
            f"{'associations':>12} {'storescp':>9} {'--fork':>9} {'medgate':>9}"
            f" {'storescu':>13} {'medgate/--fork':>17}"
        )
        print("\n".join(cpu_rows))
        if args.breakdown:
            breakdown(files, args.repeat, workdir, processes)
        print(
            f"load average after: {os.getloadavg()[0]:.1f} (figures on a busy machine vary a lot)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
