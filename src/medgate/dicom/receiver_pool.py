"""Receiving in several processes: one listening socket, N child processes accepting on it.

Why: the receive path is Python work, and one process runs it under one GIL; with several
associations at once a single receiver reached a third of DCMTK ``storescp --fork``. The parent
binds the DICOM port once (so ``dicom.port = 0`` still works and the port is known before any child
runs) and starts ``dicom.receiver_processes`` children (``python -m medgate.dicom.receiver_pool``)
that inherit the socket. Each child is a complete ``StorageReceiver`` of its own: its own index
connection, its own instance file pool (``store.filepool`` is per process, under flock), its own
audit queue (the audit trail is appended under flock), the same AE checks and TLS. The durability
rule is unchanged: a child answers success only after the file and its row are durable.

The parent talks to each child over the child's stdin/stdout: it writes the settings (one JSON
line) and the parent's index URL (the database the parent's own index uses), the child answers
``ready``; ``flush`` asks the child to write its queued audit entries
(answered ``flushed``). SIGTERM stops a child cleanly (live associations cut, the instance being
stored finished, the audit queue drained): that is how the parent stops them.

A parent that dies (``kill -9``, a crash) takes its children with it at once, as if they were its
threads: ``PR_SET_PDEATHSIG`` (Linux) SIGKILLs them, and the pipe is a second watchdog (the kernel
closes the parent's end, the child reads end-of-file and exits on the spot). Not a clean stop on
purpose: a restarted parent recovers the store (``InstanceStore.recover``) before its children
start, which is only safe once no old child can still be writing; and nothing is lost by it,
since a child acknowledges only what is durable (the peer re-sends the rest; the audit entries
still queued are lost as with a ``kill -9`` of a single-process receiver). The death signal is
set only when the child is started from the main thread, since Linux sends it when the *thread*
that forked exits; children started later (replacements) rely on the pipe.

A child that exits while the pool runs (a crash, the OOM killer) is replaced within a second; the
instances it had acknowledged are stored, what it had not acknowledged the peer sends again.

The kernel hands each incoming connection to one child blocked in ``accept``; a child already
serving associations waits a moment before accepting another, so an idle child takes it first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

from medgate.core.config import Settings
from medgate.dicom.acceptor import AssociationServer
from medgate.trust.audit import AuditLog
from medgate.trust.audit_queue import AuditQueue

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
"""A child imports medgate, opens the index and its file pool; on a loaded 2-core host ~2-5 s."""
STOP_TIMEOUT_S = 20.0
BUSY_ACCEPT_DELAY_S = 0.002
"""Per live association, how long a child lets idle siblings take a new connection first."""
SUPERVISE_INTERVAL_S = 0.5
BIND_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1


def receiver_process_count(settings: Settings) -> int:
    """``dicom.receiver_processes``, or one per CPU core this process may run on (at least 1)."""
    configured = settings.dicom.receiver_processes
    if configured is not None:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def bind_listener(host: str, port: int, wait: float = BIND_WAIT_S) -> socket.socket:
    """The DICOM port, bound once; every child accepts on this socket.

    After a ``kill -9`` of a previous parent its children still hold the port for the moment
    they take to stop; a port in use is tried again for ``wait`` seconds.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait
    while True:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as exc:
            listener.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        listener.listen(128)
        return listener


class InheritedSocketServer(AssociationServer):
    """An ``AssociationServer`` accepting on a socket it was given instead of binding one."""

    def _before_accept(self) -> None:
        with self._lock:
            live = len(self._active)
        if live:  # let an idle sibling take the next association
            self._stopping.wait(BUSY_ACCEPT_DELAY_S * min(live, 8))

    def stop(self, timeout: float = 10.0) -> None:
        """As ``AssociationServer.stop``, but the inherited socket stays open for its owner."""
        listener, self._listener = self._listener, None
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if listener is not None:
            # this process's descriptor (the parent's and siblings' stay); closed before the
            # live associations end, so that a successor can bind the port once we all have
            listener.close()
        super().stop(timeout)


class _Child:
    """One receiver child as the parent sees it: the process and its control pipe."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, answer: str, timeout: float) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().decode(errors="replace").strip() if ready else ""
        if line != answer:
            code = self.process.poll()
            raise RuntimeError(
                f"receiver process {self.pid} answered {line!r}, not {answer!r}"
                + (f" (exited with {code})" if code is not None else "")
            )


class ReceiverPool:
    """The parent's side: bind the port, start the children, flush their audit, stop them."""

    def __init__(self, settings: Settings, processes: int, database_url: str) -> None:
        self.settings = settings
        self.processes = processes
        self.database_url = database_url
        self.listener: socket.socket | None = None
        self.children: list[_Child] = []
        self.restarted = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self.listener is None:
            return self.settings.dicom.port
        return int(self.listener.getsockname()[1])

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def _spawn(self) -> _Child:
        """Start one child on the listening socket and send it the settings."""
        assert self.listener is not None
        fd = self.listener.fileno()
        main_thread = threading.current_thread() is threading.main_thread()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medgate.dicom.receiver_pool",
                str(fd),
                str(os.getpid()),
                "1" if main_thread else "0",
                str(logging.getLogger().getEffectiveLevel()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(fd,),
        )
        child = _Child(process)
        child.send(self.settings.model_dump_json())
        child.send(json.dumps(self.database_url))
        return child

    def start(self) -> ReceiverPool:
        dicom = self.settings.dicom
        self.listener = bind_listener(dicom.host, dicom.port)
        self._stopping.clear()
        try:
            for _ in range(self.processes):
                self.children.append(self._spawn())
            for child in self.children:
                child.expect("ready", READY_TIMEOUT_S)
        except Exception:
            self.stop()
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name="medgate-receiver-pool", daemon=True
        )
        self._supervisor.start()
        log.info(
            "DICOM receiver %s listening on %s:%d in %d processes",
            dicom.ae_title,
            dicom.host,
            self.port,
            self.processes,
        )
        return self

    def _supervise(self) -> None:
        """A child that exits while the pool runs (a crash, the OOM killer) is replaced, so the
        port never stays open with nobody accepting on it."""
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            for position, child in enumerate(list(self.children)):
                code = child.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.warning("receiver process %d exited with %s; starting another", child.pid, code)
                _close_pipes(child)
                try:
                    replacement = self._spawn()
                    replacement.expect("ready", READY_TIMEOUT_S)
                except Exception:
                    log.exception("could not start a receiver process; trying again")
                    continue
                self.children[position] = replacement
                self.restarted += 1

    def flush_audit(self, timeout: float = 30.0) -> None:
        """Wait until every child has written the audit entries it has queued so far."""
        for child in list(self.children):
            if child.process.poll() is not None:
                continue  # exited: what it had queued is written or lost with it
            with child.lock:
                child.send("flush")
                child.expect("flushed", timeout)

    def stop(self) -> None:
        """SIGTERM every child (a clean stop in each), wait, and close the port."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(READY_TIMEOUT_S)
            self._supervisor = None
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("receiver process %d did not stop; killing it", child.pid)
                child.process.kill()
                child.process.wait()
            _close_pipes(child)
        self.children = []
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def _close_pipes(child: _Child) -> None:
    for pipe in (child.process.stdin, child.process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class PoolAuditQueue(AuditQueue):
    """The parent's audit queue; ``flush()`` also waits for the children's queued entries."""

    def __init__(self, audit: AuditLog, pool: ReceiverPool) -> None:
        super().__init__(audit)
        self.pool = pool

    def flush(self) -> None:
        super().flush()
        self.pool.flush_audit()


# ---------------------------------------------------------------------- the child process
class _Stop(Exception):
    """SIGTERM in a child: leave the control loop and stop cleanly."""


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise _Stop


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _control_loop(control_in: IO[bytes], control_out: IO[bytes], flush: Any) -> None:
    """Answer the parent's requests until SIGTERM comes (or the parent dies)."""
    while True:
        line = control_in.readline()
        if not line:  # the parent is gone: go with it, now (see the module's docstring)
            os._exit(1)
        if line.strip() == b"flush":
            flush()
            control_out.write(b"flushed\n")
            control_out.flush()


def child_main(argv: list[str]) -> int:
    """``python -m medgate.dicom.receiver_pool FD PARENT_PID DEATHSIG LOG_LEVEL``: one receiver
    process."""
    from medgate.core.logs import configure_logging, set_hash_key
    from medgate.dicom.receiver import StorageReceiver
    from medgate.store.db import Index

    fd, parent, deathsig, level = int(argv[0]), int(argv[1]), argv[2] == "1", int(argv[3])
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    control_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the control pipe
    control_in = sys.stdin.buffer
    receiver: StorageReceiver | None = None
    index: Index | None = None
    try:
        if deathsig:
            _die_with_parent(parent)
        config, url = control_in.readline(), control_in.readline()
        if not config or not url:  # the parent died while starting us
            os._exit(1)
        settings = Settings(**json.loads(config))
        database_url = str(json.loads(url))
        configure_logging(level)
        set_hash_key(settings.audit.hash_key)
        listener = socket.socket(fileno=fd)
        index = Index(database_url)
        audit = AuditLog(settings.audit_path, settings.audit.hash_key)
        receiver = StorageReceiver(settings, index, audit)
        receiver.start_serving(listener)
        control_out.write(b"ready\n")
        control_out.flush()
        assert receiver.audit_queue is not None
        _control_loop(control_in, control_out, receiver.audit_queue.flush)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean stop is not interrupted
        if receiver is not None:
            receiver.stop()
            receiver.store.close()
        if index is not None:
            index.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
