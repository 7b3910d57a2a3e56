"""The adaptive polling of pynetdicom's association threads (``medgate.dicom.fastpath``).

The speed itself is measured by ``bench/ingest.py``; here: the decision rule, that the receiver
installs it, and that the proxy keeps the rest of the ``time`` module.
"""

from __future__ import annotations

import time

import pynetdicom.association
import pynetdicom.dul

from medgate.dicom import fastpath
from medgate.dicom.net import scu_ae


def test_polls_are_fast_right_after_work() -> None:
    # the previous sleep ended 5 ms ago: the loop was busy, so this poll is short
    delay, activity = fastpath.poll_delay(0.001, now=10.0, last_wake=9.995, last_activity=0.0)
    assert delay == fastpath.FAST_POLL_S
    assert activity == 10.0


def test_polls_stay_fast_within_the_window_then_back_off() -> None:
    inside = 10.0 + fastpath.FAST_WINDOW_S / 2
    delay, activity = fastpath.poll_delay(
        0.001, inside, last_wake=inside - 1e-5, last_activity=10.0
    )
    assert (delay, activity) == (fastpath.FAST_POLL_S, 10.0)
    idle = 10.0 + 2 * fastpath.FAST_WINDOW_S
    delay, activity = fastpath.poll_delay(0.001, idle, last_wake=idle - 1e-5, last_activity=10.0)
    assert (delay, activity) == (0.001, 10.0)  # idle: pynetdicom's own 1 ms, no busy loop


def test_short_requests_are_never_lengthened() -> None:
    delay, _ = fastpath.poll_delay(1e-5, now=10.0, last_wake=9.0, last_activity=0.0)
    assert delay == 1e-5


def test_scu_ae_installs_it_and_time_still_works(settings_factory) -> None:
    scu_ae(settings_factory())
    for module in (pynetdicom.association, pynetdicom.dul):
        assert isinstance(module.time, fastpath.AdaptiveTime)
        assert abs(module.time.time() - time.time()) < 1.0
    start = time.perf_counter()
    pynetdicom.association.time.sleep(0.02)  # a real wait (> 1 ms) passes through unchanged
    assert time.perf_counter() - start >= 0.02
