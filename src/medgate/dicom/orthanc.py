"""Run Debian's Orthanc as a child process: the regional PACS of the demo and of the tests.

Orthanc listens on loopback ports with a temporary configuration and storage folder, knows medgate
as a DICOM modality (so that C-MOVE to medgate works) and is reached over its REST API with httpx.
Nothing here is a mock: it is the same Orthanc a small site runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from medgate.core import ports

ORTHANC_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "Orthanc")


def find_orthanc() -> str | None:
    for candidate in ORTHANC_BINARY_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


class OrthancServer:
    """An Orthanc child process with its own ports, config and storage.

    ``modalities`` maps a name to ``(ae_title, host, port)``; medgate's own AE goes there so that
    Orthanc can C-MOVE studies to it. ``lua`` is an optional Lua script (e.g. one that rejects
    instances, for dead-letter tests).
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        ae_title: str = "ORTHANC",
        dicom_port: int | None = None,
        http_port: int | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        lua: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.binary = find_orthanc()
        if self.binary is None:
            raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="medgate-orthanc-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.dicom_port = dicom_port or ports.free_port()
        self.http_port = http_port or ports.free_port()
        self.modalities = dict(modalities or {})
        self.lua = lua
        self.extra_config = dict(extra_config or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _write_config(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "Name": "medgate-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {
                name: [ae, host, port] for name, (ae, host, port) in self.modalities.items()
            },
            "DicomScpTimeout": 30,
            "StableAge": 2,
            "LuaScripts": [],
        }
        if self.lua:
            lua_path = self.workdir / "script.lua"
            lua_path.write_text(self.lua)
            config["LuaScripts"] = [str(lua_path)]
        config.update(self.extra_config)
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers."""
        config = self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until stop()
        self.process = subprocess.Popen(
            [str(self.binary), str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/system", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer on {self.url} within {timeout} s")

    def stop(self, graceful: bool = True) -> None:
        """Stop Orthanc (the storage stays, so ``start()`` again resumes with the same data).

        ``graceful=False`` kills it at once: for an Orthanc whose storage is thrown away next,
        which has nothing to save (a clean stop takes Orthanc about 3.4 s)."""
        if not graceful and self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def cleanup(self) -> None:
        """Stop Orthanc; delete its storage if it was a temporary folder of its own."""
        self.stop(graceful=self._tmp is None)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ REST helpers
    def get(self, path: str, **kwargs: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=30.0, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, **kwargs: Any) -> Any:
        response = httpx.post(f"{self.url}{path}", timeout=60.0, **kwargs)
        response.raise_for_status()
        return response.json()

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store one Part 10 file through the REST API (as a modality would by C-STORE)."""
        return self.post("/instances", content=data)

    def lookup(self, uid: str, level: str) -> str | None:
        """Orthanc's ID of the ``level`` (``Instance``, ``Series``, ``Study``) with this DICOM
        UID, or None (``/tools/lookup``)."""
        found = self.post(
            "/tools/lookup", content=uid.encode(), headers={"Content-Type": "text/plain"}
        )
        return next((str(item["ID"]) for item in found if item.get("Type") == level), None)

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc's ID of the instance with this SOP Instance UID, or None."""
        return self.lookup(sop_instance_uid, "Instance")

    def find_study(self, study_instance_uid: str) -> str | None:
        """Orthanc's ID of the study with this Study Instance UID, or None."""
        return self.lookup(study_instance_uid, "Study")

    def study_instances(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Every instance of a study with its main DICOM tags (empty if the study is unknown)."""
        study_id = self.find_study(study_instance_uid)
        if study_id is None:
            return []
        return list(self.get(f"/studies/{study_id}/instances"))

    def instance_file(self, orthanc_id: str) -> bytes:
        response = httpx.get(f"{self.url}/instances/{orthanc_id}/file", timeout=30.0)
        response.raise_for_status()
        return response.content
