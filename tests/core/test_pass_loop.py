"""The pass loop every queue sender runs on: passes repeat, a failing pass is retried, a kick
runs a pass at once with or without the loop, and stop ends the thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from medgate.core.pass_loop import PassLoop


class CountingLoop(PassLoop):
    """Counts its passes; the first ``failures`` of them raise."""

    interval = 30.0  # longer than any test: a second pass comes only from a wake or a kick

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.passes = 0
        self.failures = failures
        self.done = threading.Event()
        self.threads: set[str] = set()

    def run_once(self) -> int:
        self.passes += 1
        self.threads.add(threading.current_thread().name)
        self.done.set()
        if self.passes <= self.failures:
            raise RuntimeError("the database went away")
        return self.passes


def wait_for_passes(loop: CountingLoop, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while loop.passes < count:
        assert time.monotonic() < deadline, f"{loop.passes} passes, wanted {count}"
        time.sleep(0.01)


def test_a_failing_pass_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = CountingLoop(failures=1)
    loop.interval = 0.01
    with caplog.at_level(logging.ERROR, logger="medgate.core.pass_loop"):
        loop.start()
        try:
            wait_for_passes(loop, 3)
        finally:
            loop.stop()
    assert not loop.running
    assert [r.getMessage() for r in caplog.records] == ["medgate-pass-loop: pass failed"]


def test_wake_runs_the_next_pass_before_the_interval() -> None:
    loop = CountingLoop().start()
    try:
        wait_for_passes(loop, 1)
        loop.wake()
        wait_for_passes(loop, 2, timeout=2.0)
    finally:
        loop.stop()
    assert loop.passes == 2


def test_kick_without_a_loop_runs_one_pass_in_a_thread_of_its_own() -> None:
    loop = CountingLoop()
    loop.kick()
    assert loop.done.wait(5.0)
    wait_for_passes(loop, 1)
    assert not loop.running
    assert threading.current_thread().name not in loop.threads


def test_kick_with_the_loop_running_wakes_it() -> None:
    loop = CountingLoop().start()
    try:
        wait_for_passes(loop, 1)
        loop.kick()
        wait_for_passes(loop, 2, timeout=2.0)
        assert loop.threads == {"medgate-pass-loop"}
    finally:
        loop.stop()
