"""A background loop of passes: ``run_once()`` every ``interval`` seconds, or at once when woken.

The senders of medgate's durable queues (the PACS outbox, the sites' deliveries, critical-result
and referral notifications) each drain their queue in passes, as do the study assembler, the PACS
poller and the metrics flusher; this is the one thread that runs the passes, so that starting,
stopping and waking work the same way for all of them. A failing pass is logged and the next one
retries.
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
        # passes never overlap: the loop's and those ``kick`` runs in threads of their own
        self._pass_lock = threading.Lock()

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the loop's thread (a running loop is left as it is); returns the loop."""
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(target=self.loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the pass in progress; waits for it up to 30 s."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Run the next pass now instead of after the interval."""
        self._wake.set()

    def kick(self) -> None:
        """Run a pass now in the background: the loop's next one when the loop runs, else one in
        a thread of its own (a process that only serves requests runs no loop)."""
        if self.running:
            self.wake()
        else:
            threading.Thread(target=self._logged_pass, name=self.thread_name, daemon=True).start()

    def loop(self) -> None:
        """Pass after pass until ``stop``, in the calling thread (``start`` runs it in its own)."""
        while not self._stop.is_set():
            self._logged_pass()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _logged_pass(self) -> None:
        with self._pass_lock:
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the loop: the next pass retries
                log.exception("%s: pass failed", self.thread_name)
