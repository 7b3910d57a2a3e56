"""A background loop of passes: ``run_once()`` every ``interval`` seconds, or at once when woken.

The senders of medgate's durable queues (the PACS outbox, the sites' deliveries) each drain their
queue in passes; this is the one thread that runs the passes, so that starting, stopping and
waking work the same way for every queue. A failing pass is logged and the next one retries.
"""

from __future__ import annotations

import logging
import threading
from typing import Self

log = logging.getLogger(__name__)


class PassLoop:
    """Subclasses implement ``run_once()`` and set ``interval`` (seconds between passes)."""

    interval: float = 1.0
    thread_name: str = "medgate-pass-loop"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the loop's thread (a running loop is left as it is); returns the loop."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the pass in progress; waits for it up to 30 s."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Run the next pass now instead of after the interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("%s: pass failed", self.thread_name)
            self._wake.wait(self.interval)
            self._wake.clear()
