"""A heartbeat that keeps a lease alive while its holder works.

Leases are short (``serving.job_lease_seconds``, 20 s by default) so that a dead instance's work
is taken over quickly; the heartbeat renews the lease every quarter of it while the work runs,
so a study longer than the lease keeps its claim as long as its worker lives. When a renewal
finds the claim gone, ``lost`` is set and the holder stops without writing results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``renew`` every ``interval`` seconds in a thread, as a context manager.

    ``renew`` returns False when the claim is no longer held; an exception (the database away
    for a moment) is logged and the next beat tries again, until the lease itself runs out.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, name: str) -> None:
        self.renew = renew
        self.interval = interval
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except Exception as exc:
                log.warning(
                    "%s: lease renewal failed, next try in %.1f s: %s",
                    self._thread.name,
                    self.interval,
                    exc,
                )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
