"""Audit entries written by a background thread, so that audit I/O is off the C-STORE path.

Every audit entry costs file locking and fsyncs; on the receive path that would double the time
to acknowledge an instance. The receiver's durability promise covers the instance file and its
index row (both durable before success); the audit entry follows a few milliseconds later from
this queue, in batches (one fsync for every entry waiting, ``AuditLog.record_many``). The writer
lingers up to ``LINGER_S`` after the first entry of a batch: while a series streams in, one audit
fsync per instance would compete with the instance's own fsyncs on the disk's journal.
``close()`` drains the queue, so a clean stop loses nothing; a ``kill -9`` can lose only the
entries still queued at that instant (never an instance).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)

_STOP = object()
LINGER_S = 0.25
"""How long the writer collects entries before one batched write (the most a kill -9 can lose)."""
BATCH = 256


class AuditQueue:
    """``record(...)`` like ``AuditLog.record``, but returns at once; one writer thread."""

    def __init__(self, audit: AuditLog, maxsize: int = 10_000) -> None:
        self.audit = audit
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="medgate-audit", daemon=True)
        self._thread.start()

    def record(self, event: str, **kwargs: Any) -> None:
        # A full queue blocks the caller: back-pressure instead of silently dropping entries.
        self._queue.put((event, kwargs))

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + LINGER_S
            while len(batch) < BATCH and batch[-1] is not _STOP:
                remaining = deadline - time.monotonic()
                try:  # what arrives within the linger time goes in the same write
                    batch.append(
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            items = [item for item in batch if item is not _STOP]
            try:
                self._write(items)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _write(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        if not items:
            return
        many = getattr(self.audit, "record_many", None)
        try:
            if many is not None:
                many(items)
                return
            for event, kwargs in items:
                self.audit.record(event, **kwargs)
        except Exception:
            log.exception("could not write %d audit entr(ies)", len(items))

    def flush(self) -> None:
        """Wait until every queued entry is written."""
        self._queue.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
