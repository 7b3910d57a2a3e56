"""``medgate serve`` (the whole gateway: local Ray + Serve + worker + receiver) as a child process,
for the tests that kill it with -9 (tests/dicom/test_crash.py, tests/trust/test_faults_gateway.py).

``medgate serve`` starts its own local Ray here (no ``--ray-address``), so a kill -9 takes the
receiver, the worker, the HTTP API and the Ray head down at once, as a power cut would. Ray's
head processes share the fate of the process that started them; ``GatewayProcess.kill9`` checks
that nothing of the killed gateway is left running (and cleans up if something is), so that the
restart really starts from the disk alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

MEDGATE = [sys.executable, "-m", "medgate.cli.main"]

# Ray's per-node agents notice a dead raylet by polling, then try to report it to the (dead) GCS
# before they exit: measured here, they outlive a kill -9 of the gateway by more than a minute.
# They hold no medgate data and no port a restart needs; every other process (raylet,
# gcs_server, Serve proxy and replicas, workers) must be gone within ``settle`` seconds.
LINGERING_AGENTS = frozenset({"ray::DashboardAgent", "ray::RuntimeEnvAgent"})


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return "(gone)"


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class GatewayProcess:
    """``medgate serve --config FILE`` with a local Ray; start, wait until ready, kill -9."""

    def __init__(self, config: Path, api_url: str, log_dir: Path) -> None:
        self.config = config
        self.api_url = api_url
        self.log_dir = log_dir
        self.starts = 0
        self.start_seconds: list[float] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path = log_dir / "serve0.log"

    def start(self, timeout: float = 180.0) -> GatewayProcess:
        self.starts += 1
        began = time.monotonic()
        self.log = self.log_dir / f"serve{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray
        env["COLUMNS"] = "200"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*MEDGATE, "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: cleanup never hits pytest
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"medgate serve exited: {self.log.read_text(errors='replace')[-3000:]}"
                )
            return "medgate ready" in self.log.read_text(errors="replace")

        wait_for(ready, timeout, 0.25, "medgate serve to be ready")
        wait_for(lambda: _http_ok(f"{self.api_url}/healthz"), 60, 0.25, "the HTTP API")
        self.start_seconds.append(round(time.monotonic() - began, 1))
        return self

    def descendants(self) -> list[psutil.Process]:
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill9(self, settle: float = 15.0) -> list[str]:
        """SIGKILL the gateway; returns the names of its descendants that outlived it by
        ``settle`` seconds, other than Ray's per-node agents (see ``LINGERING_AGENTS``). All
        survivors are then killed, so that the next start begins from the disk alone."""
        if self.process is None or self.process.poll() is not None:
            return []
        # Frozen first, so the kill lands at the moment the caller chose: listing a gateway's
        # descendants (Ray's included) takes tens of milliseconds, in which it would go on
        # working, e.g. finish the study the kill was aimed at.
        self.process.send_signal(signal.SIGSTOP)
        family = self.descendants()
        agents = [p for p in family if _name(p) in LINGERING_AGENTS]
        others = [p for p in family if p not in agents]
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        _, alive = psutil.wait_procs(others, timeout=settle)
        survivors = [_name(p) for p in alive]
        for proc in [*alive, *agents]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs([*alive, *agents], timeout=10)
        return survivors

    def stop(self) -> int | None:
        """SIGTERM and wait (0 is a clean stop); a gateway that hangs is killed."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            family = self.descendants()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            _, alive = psutil.wait_procs(family, timeout=30)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        return self.process.returncode
