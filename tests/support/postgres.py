"""Run Debian's PostgreSQL as a child process: the shared index of multi-instance deployments
in tests and benchmarks (the same server a site runs, started on loopback in a temp folder)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from medgate.core.ports import free_port


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port.

    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` system user
    that Debian's package creates.
    """

    def __init__(self, workdir: str | Path | None = None) -> None:
        found = find_pg_bin()
        if found is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin: Path = found
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="medgate-pg-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.datadir = self.workdir / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self._user, "--", *args] if self._user else args

    def start(self, timeout: float = 30.0) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        if not self.datadir.exists():
            made = subprocess.run(
                self._run_as(
                    [
                        str(self.bin / "initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                    ]
                ),
                capture_output=True,
                text=True,
            )
            if made.returncode != 0:
                raise RuntimeError(f"initdb failed: {made.stderr.strip()[-1000:]}")
        log = self.workdir / "postgres.log"
        self.process = subprocess.Popen(
            self._run_as(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.workdir),
                    "-c",
                    "fsync=on",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),  # noqa: SIM115 - the child writes to it
        )
        deadline = time.monotonic() + timeout
        ready = [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')[-2000:]}")
            if subprocess.run(ready, capture_output=True).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("PostgreSQL did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
