"""The container image, built for real and run with nothing but ``docker run``.

Built from a debootstrapped base (no registry), air-gapped from the local wheelhouse, with the
host's CA bundle as the extra CA. Checks what a site relies on: /healthz (and Docker's own
HEALTHCHECK), C-ECHO with DCMTK's echoscu, a C-STORE that lands in the index, the CDS API, the
non-root user, and that the build-only CA never reaches the final image.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from tests.support.docker_deploy import BuiltImage, Docker, Gateway, http_json

pytestmark = pytest.mark.timeout(1800)


def _wait_for_log(docker: Docker, gateway: Gateway, text: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    logs = ""
    while time.monotonic() < deadline:
        result = docker.run("logs", gateway.container, check=False)
        logs = result.stdout + result.stderr
        if text in logs:
            return logs
        time.sleep(1)
    raise AssertionError(f"{text!r} not in the container log after {seconds} s:\n{logs[-3000:]}")


def test_healthz_answers(gateway: Gateway) -> None:
    status, body = http_json(f"{gateway.url}/healthz")
    assert status == 200
    assert body == {"status": "ok"}


def test_readyz_reports_the_index(gateway: Gateway) -> None:
    status, body = http_json(f"{gateway.url}/readyz")
    assert status == 200, body
    assert isinstance(body, dict) and body["status"] == "ready"


def test_docker_healthcheck_turns_healthy(docker: Docker, gateway: Gateway) -> None:
    """The image's own HEALTHCHECK (not just our probe) reports the container healthy."""
    deadline = time.monotonic() + 90
    health = ""
    while time.monotonic() < deadline:
        health = docker.run(
            "inspect", "--format", "{{.State.Health.Status}}", gateway.container
        ).stdout.strip()
        if health == "healthy":
            break
        time.sleep(2)
    assert health == "healthy"


def test_echoscu_gets_an_answer(docker: Docker, gateway: Gateway) -> None:
    if shutil.which("echoscu") is None:
        pytest.skip("DCMTK's echoscu missing (apt-get install dcmtk)")
    _wait_for_log(docker, gateway, "medgate ready", 240)
    result = subprocess.run(
        ["echoscu", "-aec", "MEDGATE", "-aet", "DEPLOYTEST", "127.0.0.1", str(gateway.dicom_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_storescu_instance_is_indexed(docker: Docker, gateway: Gateway, tmp_path: Path) -> None:
    """A C-STORE into the container is acknowledged and shows up in the study API."""
    if shutil.which("storescu") is None:
        pytest.skip("DCMTK's storescu missing (apt-get install dcmtk)")
    _wait_for_log(docker, gateway, "medgate ready", 240)
    source = Path(str(get_testdata_file("CT_small.dcm")))
    study_uid = str(pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID)
    result = subprocess.run(
        [
            "storescu",
            "-aec",
            "MEDGATE",
            "-aet",
            "DEPLOYTEST",
            "127.0.0.1",
            str(gateway.dicom_port),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status, body = http_json(f"{gateway.url}/api/v1/studies/{study_uid}")
    assert status == 200, body
    assert isinstance(body, dict) and body["study_instance_uid"] == study_uid


def test_cds_news2_is_served(gateway: Gateway) -> None:
    body = {
        "respiratory_rate": 25,
        "spo2": 97,
        "spo2_scale": 1,
        "on_oxygen": False,
        "sbp_mmhg": 120,
        "heart_rate": 131,
        "consciousness": "V",
        "temperature_c": 37.0,
    }
    status, result = http_json(f"{gateway.url}/api/v1/cds/news2", body)
    assert status == 200, result
    assert isinstance(result, dict)
    assert (result["score"], result["risk"]) == (9, "high")
    status, problem = http_json(f"{gateway.url}/api/v1/cds/news2", {"spo2": "high"})
    assert status == 422, problem


def test_runs_as_non_root(docker: Docker, gateway: Gateway) -> None:
    """PID 1 (medgate serve) and every process in the container have a non-zero uid."""
    config_user = docker.run(
        "inspect", "--format", "{{.Config.User}}", gateway.container
    ).stdout.strip()
    assert config_user and not config_user.startswith("0") and config_user != "root"
    status = docker.run("exec", gateway.container, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids and all(uid != "0" for uid in uids), status
    top = docker.run("top", gateway.container, "-o", "uid,pid,args").stdout.splitlines()[1:]
    assert top and all(line.split()[0] != "0" for line in top), top


def test_image_metadata(docker: Docker, image: str) -> None:
    """Ports, volumes, healthcheck and entrypoint are declared by the image itself."""
    import json

    config = json.loads(docker.run("image", "inspect", image).stdout)[0]["Config"]
    assert {"8000/tcp", "11112/tcp"} <= set(config["ExposedPorts"])
    assert {"/var/lib/medgate", "/opt/medgate-models", "/etc/medgate"} <= set(config["Volumes"])
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["medgate"] and config["Cmd"] == ["serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MEDGATE_MODELS__PATH"] == "/opt/medgate-models"


def test_plain_docker_run_refuses_an_open_gateway(docker: Docker, image: str) -> None:
    """The image listens on 0.0.0.0: with no audit key and no API tokens of the site's own,
    ``medgate serve`` refuses to start and says which variables to set."""
    result = docker.run("run", "--rm", "--env", "COLUMNS=400", image, check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MEDGATE_AUDIT__HASH_KEY" in result.stderr and "MEDGATE_API__TOKENS" in result.stderr


def test_demo_bundles_are_inside(docker: Docker, built_image: BuiltImage) -> None:
    """The bundles of the build context (models/) are in the image, and those the registry
    accepts are listed by ``medgate models list`` inside it."""
    assert built_image.bundles, "no demo bundles under models/"
    listing = docker.run(
        "run", "--rm", "--entrypoint", "ls", built_image.tag, "/opt/medgate-models"
    ).stdout.split()
    assert set(built_image.bundles) <= set(listing)
    result = docker.run(
        "run", "--rm", "--env", "COLUMNS=250", built_image.tag, "models", "list",
        check=bool(built_image.valid_bundles),
    )  # fmt: skip
    for name in built_image.valid_bundles:
        assert name in result.stdout, result.stdout


def test_build_ca_is_not_in_the_image(docker: Docker, image: str) -> None:
    """The extra CA bundle is used by the builder stage only."""
    result = docker.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "test ! -e /build && ! find / -xdev -name host-ca.crt 2>/dev/null | grep -q .",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    history = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "build-ca" not in history and "pip-ca.pem" not in history


def test_every_module_imports_in_the_image(docker: Docker, image: str) -> None:
    """Every medgate module imports, and the HTTP app builds, with the image's dependencies: a
    package used in the code but missing from pyproject.toml fails here, not at a site."""
    script = (
        "import importlib, pkgutil, medgate\n"
        "bad = {}\n"
        "for m in pkgutil.walk_packages(medgate.__path__, 'medgate.'):\n"
        "    if m.name.endswith('.migrations.env'):\n"
        "        continue  # an Alembic env script: runs only under alembic\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except Exception as exc:\n"
        "        bad[m.name] = repr(exc)\n"
        "try:\n"
        "    from medgate.core.config import load_settings\n"
        "    from medgate.api.app import create_app\n"
        "    create_app(load_settings())\n"
        "except Exception as exc:\n"
        "    bad['create_app'] = repr(exc)\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    result = docker.run("run", "--rm", "--entrypoint", "python", image, "-c", script, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cjk_font_is_in_the_image(docker: Docker, image: str) -> None:
    """Result images carry Chinese guidance text: a font the report writers look for is there."""
    script = (
        "import sys\n"
        "from medgate.reports.imaging import CJK_FONT_CANDIDATES as fonts\n"
        "found = [str(p) for p in fonts if p.is_file()]\n"
        "print(found or [str(p) for p in fonts])\n"
        "sys.exit(0 if found else 1)\n"
    )
    result = docker.run("run", "--rm", "--entrypoint", "python", image, "-c", script, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
