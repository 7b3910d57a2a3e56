"""``medgate serve --ray-address`` as a child process, and the Ray node it joins, for the tests
that run real gateway processes on a Ray cluster (tests/serving/test_processes.py,
tests/pg/test_two_instances.py)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from tests.support.serving import wait_for

MEDGATE = [sys.executable, "-m", "medgate.cli.main"]

#: One token for every Ray node and client these tests start. Ray's token authentication needs
#: the same token on each; handing it over here keeps the tests from depending on a
#: ``~/.ray/auth_token`` that some earlier test's local cluster happened to write.
RAY_TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


class ServeProcess:
    """``medgate serve`` as a child process with its output in a log file."""

    def __init__(
        self, config: Path, ray_address: str, log: Path, ray_env: dict[str, str] | None = None
    ) -> None:
        """``ray_env``: how to reach a token-authenticated cluster; by default the token this
        machine's local clusters write to ``~/.ray/auth_token`` (this test process's own)."""
        self.args = [*MEDGATE, "serve", "--config", str(config), "--ray-address", ray_address]
        self.log = log
        self.ray_env = ray_env or {"RAY_AUTH_MODE": "token"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        env = {**os.environ, **self.ray_env}
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
