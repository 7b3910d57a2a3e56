"""``medgate serve --ray-address`` as a child process, and the Ray node it joins, for the tests
that run real gateway processes on a Ray cluster (tests/serving/test_processes.py,
tests/pg/test_two_instances.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from tests.support.serving import wait_for

MEDGATE = [sys.executable, "-m", "medgate.cli.main"]


class ServeProcess:
    """``medgate serve`` as a child process with its output in a log file."""

    def __init__(self, config: Path, ray_address: str, log: Path) -> None:
        self.args = [*MEDGATE, "serve", "--config", str(config), "--ray-address", ray_address]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        # Clients of a token-authenticated cluster say so (the token is in ~/.ray/auth_token).
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self

    def wait_ready(self, url: str, timeout: float = 120.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"medgate serve exited: {self.log.read_text()[-3000:]}")
            return "medgate ready" in self.log.read_text(errors="replace")

        wait_for(ready, timeout, 0.5, "medgate serve to be ready")
        wait_for(lambda: _get_ok(f"{url}/healthz"), 60, 0.5, "the HTTP API")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def ray_node_started(log: Path, node: subprocess.Popen[bytes]) -> bool:
    """Whether ``ray start`` (its output in ``log``) is up; raises if it exited."""
    if node.poll() is not None:
        raise AssertionError(f"ray start exited: {log.read_text(errors='replace')[-2000:]}")
    return "Ray runtime started" in log.read_text(errors="replace")
