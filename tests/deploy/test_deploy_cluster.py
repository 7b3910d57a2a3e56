"""Two containers of the image as a Ray cluster in the KubeRay shape: the Serve application is
deployed from the RayService's own ``serveConfigV2`` and medgate's receiver / worker attach.

The head container starts ``ray start --head`` (no CPU for Ray), deploys deploy/k8s/
rayservice.yaml's ``serveConfigV2`` verbatim with ``serve deploy`` (Ray's REST API, the way the
KubeRay operator does), then runs ``medgate serve`` joined to the cluster with
``serving.deploy_app = false``: it attaches to that application instead of deploying its own.
The worker node runs ``medgate-ray-worker`` with two CPUs, so Ray Serve must place every model
replica there: Ray's own state API shows where it runs. A synthetic chest radiograph C-STOREd
to the head is then processed to ``done`` with findings, computed by the replicas on the worker.
SQLite on a volume both nodes mount is the index here (compose's stack has PostgreSQL). Both
containers, the network and the volume are removed by id.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.support.docker_deploy import Docker, http_json
from tests.support.paths import REPO

from medgate.core.ports import free_port

pytestmark = pytest.mark.timeout(1800)

STATE_SCRIPT = """
import json, ray
from ray.util.state import list_actors, list_nodes
ray.init(address="auto", log_to_driver=False)
nodes = {n.node_id: n.node_ip for n in list_nodes() if n.state == "ALIVE"}
replicas = [
    {"name": a.name, "class": a.class_name, "node_ip": nodes.get(a.node_id)}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    if a.class_name.startswith("ServeReplica")
]
print(json.dumps({"nodes": sorted(nodes.values()), "replicas": replicas}))
"""


@dataclass
class Cluster:
    head: str
    worker: str
    worker_ip: str
    http_port: int
    dicom_port: int


def _ip(docker: Docker, container: str) -> str:
    return docker.run(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()


def _serve_config() -> str:
    """The RayService's serveConfigV2, as the operator hands it to Ray."""
    (service,) = [
        doc
        for doc in yaml.safe_load_all((REPO / "deploy/k8s/rayservice.yaml").read_text())
        if doc and doc["kind"] == "RayService"
    ]
    return service["spec"]["serveConfigV2"]


def _site_config(folder: Path) -> Path:
    """/etc/medgate of the head: the TOML file serveConfigV2 names, and the Serve config."""
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(_serve_config())
    toml = Path(config["applications"][0]["args"]["config"])
    assert toml.parent == Path("/etc/medgate"), toml
    (folder / toml.name).write_text(
        '[storage]\npath = "/var/lib/medgate/storage"\n'
        '[models]\npath = "/opt/medgate-models"\n'
        "[dicom]\nstudy_idle_seconds = 1\n"
        f'[audit]\nhash_key = "{secrets.token_hex(16)}"\n'
        # the head's API listens on 0.0.0.0 in its container, published on the host's loopback
        "[api]\nallow_anonymous = true\n"
    )
    (folder / "serve.yaml").write_text(_serve_config())
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


HEAD_SCRIPT = (
    "set -e; ray start --head --port=6379 --num-cpus=0 --dashboard-host=127.0.0.1 "
    "--disable-usage-stats; serve deploy --address http://127.0.0.1:8265 /etc/medgate/serve.yaml; "
    "exec medgate serve --ray-address 127.0.0.1:6379"
)


def _test_bundles(root: Path) -> Path:
    """A small chest radiograph classifier bundle (the serving tests' one), readable by the
    image's user, mounted into both nodes: the test does not depend on which demo bundles
    models/ holds."""
    from tests.support.serving import write_bundle

    root.mkdir(parents=True, exist_ok=True)
    write_bundle(root, "cxr_classifier")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def cluster(
    docker: Docker, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    bundles = _test_bundles(tmp_path_factory.mktemp("cluster") / "models")
    bundles.parent.chmod(0o755)
    site = _site_config(bundles.parent / "etc")
    mount = ["--volume", f"{bundles}:/opt/medgate-models:ro"]
    suffix = secrets.token_hex(4)
    network = docker.run("network", "create", f"medgate-test-{suffix}").stdout.strip()
    # One storage folder for both nodes (as compose's medgate-storage volume): the HTTP ingress
    # replica may run on either node and reads the index and results from it.
    volume = docker.run("volume", "create", f"medgate-test-{suffix}").stdout.strip()
    mount += ["--volume", f"{volume}:/var/lib/medgate"]
    token = secrets.token_hex(32)
    ray_env = ["--env", "RAY_AUTH_MODE=token", "--env", f"RAY_AUTH_TOKEN={token}"]
    http_port, dicom_port = free_port(), free_port()
    started: list[str] = []
    try:
        head = docker.run(
            "run", "--detach", "--shm-size", "512m", "--network", network,
            "--network-alias", "medgate-head", "--entrypoint", "sh",
            "--publish", f"127.0.0.1:{http_port}:8000",
            "--publish", f"127.0.0.1:{dicom_port}:11112",
            "--volume", f"{site}:/etc/medgate:ro",
            "--env", "MEDGATE_CONFIG=/etc/medgate/medgate.toml",
            "--env", "MEDGATE_SERVING__DEPLOY_APP=false",
            *ray_env, *mount, image, "-c", HEAD_SCRIPT,
        ).stdout.strip()  # fmt: skip
        started.append(head)
        worker = docker.run(
            "run", "--detach", "--shm-size", "512m", "--network", network,
            # The application's build task and replicas may run here: the config too.
            "--volume", f"{site}:/etc/medgate:ro",
            "--env", "MEDGATE_CONFIG=/etc/medgate/medgate.toml",
            "--entrypoint", "medgate-ray-worker", *ray_env, *mount, image, "--num-cpus=2",
        ).stdout.strip()  # fmt: skip
        started.append(worker)
        running = Cluster(head, worker, _ip(docker, worker), http_port, dicom_port)
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            logs = docker.run("logs", head, check=False)
            if "medgate ready" in logs.stdout + logs.stderr:
                break
            state = docker.run("inspect", "--format", "{{.State.Status}}", head).stdout.strip()
            if state != "running":
                pytest.fail(f"head {state}:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")
            time.sleep(3)
        else:
            logs = docker.run("logs", "--tail", "40", head, check=False)
            pytest.fail(f"head not ready in 420 s:\n{logs.stdout}\n{logs.stderr}")
        yield running
    finally:
        for container in started:
            docker.run("rm", "--force", "--volumes", container, check=False)
        docker.run("network", "rm", network, check=False)
        docker.run("volume", "rm", volume, check=False)


def _state(docker: Docker, cluster: Cluster) -> dict:
    result = docker.run("exec", cluster.head, "python", "-c", STATE_SCRIPT, timeout=180)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_model_replicas_run_on_the_worker_node(docker: Docker, cluster: Cluster) -> None:
    state = _state(docker, cluster)
    assert cluster.worker_ip in state["nodes"] and len(state["nodes"]) == 2, state
    models = [r for r in state["replicas"] if "ingress" not in r["name"]]
    assert models, f"no model replicas: {state}"
    assert all(r["node_ip"] == cluster.worker_ip for r in models), state


def test_study_is_processed_across_nodes(docker: Docker, cluster: Cluster, tmp_path: Path) -> None:
    """C-STORE a synthetic chest radiograph to the head; its study reaches ``done`` with
    findings, which only the replicas on the worker node can have computed."""
    if shutil.which("storescu") is None:
        pytest.skip("DCMTK's storescu missing (apt-get install dcmtk)")
    import pydicom

    from medgate.datasets.cxr_phantom import generate_phantom
    from medgate.datasets.phantom_dicom import phantom_to_dataset

    dataset = phantom_to_dataset(generate_phantom(7), namespace="medgate-deploy-tests")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    path = tmp_path / "cxr.dcm"
    path.write_bytes(buffer.getvalue())
    study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
    sent = subprocess.run(
        ["storescu", "-aec", "MEDGATE", "-aet", "CLINIC1", "127.0.0.1",
         str(cluster.dicom_port), str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    deadline = time.monotonic() + 240
    body: object = None
    while time.monotonic() < deadline:
        status, body = http_json(f"http://127.0.0.1:{cluster.http_port}/api/v1/studies/{study}")
        if (
            status == 200
            and isinstance(body, dict)
            and body["status"] in ("done", "failed", "not-processed")
        ):
            break
        time.sleep(2)
    assert isinstance(body, dict) and body.get("status") == "done", json.dumps(body)[:3000]
    assert body["findings"], body
