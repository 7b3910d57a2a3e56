"""Latency tuning (and one race fix) of pynetdicom's association threads, once per process.

medgate's storage listener has its own lean acceptor (``medgate.dicom.acceptor``); pynetdicom
serves every association medgate opens itself (sending results, C-FIND/C-MOVE, and C-GET, whose
C-STORE sub-operations carry whole studies), and ``scu_ae`` applies this tuning to them.

pynetdicom moves every PDU through two polling loops: the DUL thread sleeps ``_run_loop_delay``
(1 ms) whenever its queues are empty, and the acceptor's reactor sleeps a fixed 1 ms before each
look at the DIMSE queue. A C-STORE exchange crosses both loops twice (request in, response out),
so each instance waits about 1-2 ms on sleeps alone; DCMTK's ``storescp`` needs about 1.2 ms
for a whole 512 KiB slice. The pynetdicom maintainers trade that latency for idle CPU
(pydicom/pynetdicom#120, #139, #650); a gateway receiving CT series wants the other trade while
data flows and the same idle cost when it does not.

``install()`` therefore replaces the ``time`` module seen by ``pynetdicom.association`` and
``pynetdicom.dul`` with a proxy whose ``sleep`` is *adaptive*: a polling sleep (<= 1 ms) lasts
only ``FAST_POLL_S`` while the calling thread did real work within the last ``FAST_WINDOW_S``
(detected as a gap between two polls longer than an idle loop takes), and the library's own
delay otherwise. Longer sleeps pass through unchanged.

This is behaviour-preserving: the loops, queues and state machine are pynetdicom's own; only how
long a poll waits changes. ``bench/ingest.py`` measures the effect against DCMTK's ``storescp``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

FAST_POLL_S = 50e-6
"""How long a polling sleep lasts right after activity (50 us)."""

FAST_WINDOW_S = 0.02
"""How long after the last activity polls stay fast (a peer's next C-STORE comes well within)."""

BUSY_GAP_S = 300e-6
"""A gap between two polls longer than this means the loop did work in between."""

POLL_LIMIT_S = 0.001
"""Sleeps up to this long are polls (pynetdicom's are 0.1-1 ms); longer ones are real waits."""

_installed = False
_lock = threading.Lock()


def poll_delay(
    requested: float, now: float, last_wake: float, last_activity: float
) -> tuple[float, float]:
    """How long a polling sleep of ``requested`` seconds should last, and the new time of the
    last activity. ``now``: when the thread asks to sleep; ``last_wake``: when its previous
    sleep ended (a long gap means the loop worked in between)."""
    if now - last_wake > BUSY_GAP_S:
        last_activity = now
    if now - last_activity < FAST_WINDOW_S:
        return min(requested, FAST_POLL_S), last_activity
    return requested, last_activity


class AdaptiveTime:
    """Stands in for the ``time`` module inside pynetdicom's association and DUL modules."""

    def __init__(self) -> None:
        self._state = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if seconds <= 0 or seconds > POLL_LIMIT_S:
            time.sleep(seconds)
            return
        state = self._state
        delay, state.last_activity = poll_delay(
            seconds,
            time.perf_counter(),
            getattr(state, "last_wake", 0.0),
            getattr(state, "last_activity", float("-inf")),
        )
        time.sleep(delay)
        state.last_wake = time.perf_counter()


def return_stolen_responses(serve_request: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``Association._serve_request`` so that a requestor's reactor gives back a response.

    pynetdicom's ``send_*()`` pause the association's reactor thread before sending a request
    (``_reactor_checkpoint.clear()``, then wait for ``_is_paused``), but the reactor flags itself
    paused *before* it re-checks the checkpoint, so it can pass the check an instant after the
    flag said "paused". If the peer answers within that instant (a fast SCP, threads competing
    for the GIL), the reactor dequeues the response, logs "Received unexpected C-STORE service
    message" and drops it, and ``send_c_store`` waits out the DIMSE timeout and aborts. With
    this wrapper such a response goes back on the DIMSE queue for the ``send_*()`` that waits.
    """

    def serve(assoc: Any, msg: Any, context_id: int) -> None:
        if assoc.is_requestor and msg is not None and not msg.is_valid_request:
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve_request(assoc, msg, context_id)

    serve.__wrapped__ = serve_request  # type: ignore[attr-defined]
    return serve


def install() -> None:
    """Apply the tuning to this process's pynetdicom (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        from pynetdicom import association, dul

        proxy = AdaptiveTime()
        module: ModuleType
        for module in (association, dul):
            module.time = proxy  # type: ignore[attr-defined]
        owner = association.Association
        owner._serve_request = return_stolen_responses(owner._serve_request)  # type: ignore[method-assign]
        _installed = True
