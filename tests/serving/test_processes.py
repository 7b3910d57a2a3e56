"""Acceptance with real processes: ``medgate serve`` killed with -9 mid-processing and restarted;
``medgate serve --ray-address`` joining a real two-node local Ray cluster (``ray start``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.configs import settings_to_toml
from tests.support.serve_process import RAY_TOKEN_ENV, ServeProcess
from tests.support.serve_process import ray_node_started as _started
from tests.support.serving import orthanc_kinds, phantom_bytes, study_uid_of, wait_for

from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer
from medgate.store.db import Index


def _config(settings: Settings, path: Path) -> Path:
    path.write_text(settings_to_toml(settings))
    return path


def _gateway_settings(
    serving_settings: Callable[..., Settings],
    orthanc: OrthancServer,
    medgate_port: int,
    api_port: int,
) -> Settings:
    return serving_settings(
        dicom={"port": medgate_port, "study_idle_seconds": 1.0},
        pacs={"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port},
        api={"port": api_port},
        routing={"max_attempts": 3},
    )


def test_kill9_mid_processing_then_restart_gives_one_set_of_results(
    ray_serve: int,
    serving_settings: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
) -> None:
    import ray

    medgate_port = free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", medgate_port)})
    settings = _gateway_settings(serving_settings, orthanc, medgate_port, ray_serve)
    config = _config(settings, tmp_path / "medgate.toml")
    address = ray.get_runtime_context().gcs_address
    url = f"http://127.0.0.1:{ray_serve}"
    data = [phantom_bytes(50 + i) for i in range(3)]
    uids = [study_uid_of(d) for d in data]
    child = ServeProcess(config, address, tmp_path / "serve.log").start()
    try:
        child.wait_ready(url)
        index = Index(settings.storage.resolved_database_url())
        ids = [orthanc.upload(d)["ID"] for d in data]
        orthanc.post("/modalities/MEDGATE/store", json={"Resources": ids, "Synchronous": True})

        def processing() -> bool:
            return any(getattr(index.studies.get(u), "status", None) == "processing" for u in uids)

        # frozen (SIGSTOP) as soon as a study is seen in processing, then looked at: between a
        # bare check and the kill the study could finish; if it did, thaw and wait for the next
        assert child.process is not None
        while True:
            wait_for(processing, 60, 0.01, "a study in processing")
            child.process.send_signal(signal.SIGSTOP)
            killed = [u for u in uids if index.studies.get(u).status == "processing"]
            if killed:
                break
            child.process.send_signal(signal.SIGCONT)
        child.kill9()
        assert all(index.studies.get(u).status == "processing" for u in killed)

        child = ServeProcess(config, address, tmp_path / "serve2.log").start()
        child.wait_ready(url)

        def all_done() -> bool:
            rows = [index.studies.get(u) for u in uids]
            return all(r.status == "done" for r in rows)

        wait_for(all_done, 120, 0.5, "all studies done after the restart")
        for uid in uids:
            objects = index.studies.get(uid).result["result_objects"]
            wait_for(
                lambda objs=objects: all(
                    orthanc.find_instance(o["sop_instance_uid"]) for o in objs
                ),
                60,
                0.5,
                "results in Orthanc",
            )
            kinds = orthanc_kinds(orthanc, uid)
            assert kinds.count("SR") == 1, kinds
            assert len(kinds) == 1 + len(objects), kinds  # the radiograph + one set of results
        assert any(job.attempts >= 2 for u in killed for job in index.jobs.of_study(u))
        index.close()
    finally:
        child.stop()


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[str]:
    """A real two-node local Ray cluster: ``ray start --head`` and a second ``ray start
    --address`` node, each a foreground (``--block``) child stopped by SIGTERM afterwards."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray_bin, "the ray CLI is not installed in the virtualenv"
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths must stay under 108 bytes: a short folder, not pytest's tmp_path.
    ray_tmp = Path(tempfile.mkdtemp(prefix="mgray-", dir="/tmp"))
    common = [
        "--block",
        "--num-cpus=1",
        "--object-store-memory=100000000",
        "--disable-usage-stats",
        f"--temp-dir={ray_tmp}",
    ]
    head_only = ["--include-dashboard=false", f"--ray-client-server-port={free_port()}"]
    nodes: list[subprocess.Popen[bytes]] = []
    # Token authentication (Ray's default for new clusters) on both nodes and for every client,
    # with the token handed to each.
    # A short drain on SIGTERM: nothing routes to this cluster once the test is over.
    env = {
        **os.environ,
        "RAY_ADDRESS": "",
        **RAY_TOKEN_ENV,
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",
    }
    try:
        with open(tmp_path / "ray-head.log", "ab") as out:
            nodes.append(
                subprocess.Popen(
                    [
                        ray_bin,
                        "start",
                        "--head",
                        f"--port={port}",
                        "--node-ip-address=127.0.0.1",
                        f"--dashboard-agent-listen-port={free_port()}",
                        *head_only,
                        *common,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        wait_for(lambda: _started(tmp_path / "ray-head.log", nodes[0]), 90, 0.5, "Ray head")
        with open(tmp_path / "ray-worker.log", "ab") as out:
            nodes.append(
                subprocess.Popen(
                    [
                        ray_bin,
                        "start",
                        f"--address={address}",
                        "--node-ip-address=127.0.0.1",
                        f"--dashboard-agent-listen-port={free_port()}",
                        *common,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        wait_for(lambda: _started(tmp_path / "ray-worker.log", nodes[1]), 90, 0.5, "Ray node 2")
        yield address
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(10)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_serve_joins_a_two_node_ray_cluster(
    ray_cluster: str,
    serving_settings: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
) -> None:
    medgate_port = free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", medgate_port)})
    settings = _gateway_settings(serving_settings, orthanc, medgate_port, free_port())
    config = _config(settings, tmp_path / "medgate.toml")
    url = f"http://127.0.0.1:{settings.api.port}"
    child = ServeProcess(config, ray_cluster, tmp_path / "serve.log", RAY_TOKEN_ENV).start()
    try:
        child.wait_ready(url)
        nodes = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import ray; ray.init(address={ray_cluster!r}, "
                "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **RAY_TOKEN_ENV},
        )
        assert nodes.stdout.strip().splitlines()[-1] == "2", nodes.stderr[-2000:]
        data = phantom_bytes(61)
        uid = study_uid_of(data)
        orthanc.post(
            "/modalities/MEDGATE/store",
            json={"Resources": [orthanc.upload(data)["ID"]], "Synchronous": True},
        )

        def done() -> dict[str, object] | None:
            body = httpx.get(f"{url}/api/v1/studies/{uid}", timeout=30)
            return (
                body.json()
                if body.status_code == 200 and body.json()["status"] == ("done")
                else None
            )

        detail = wait_for(done, 180, 0.5, "the study to be done on the cluster")
        assert detail["findings"]  # type: ignore[index]
        wait_for(lambda: "SR" in orthanc_kinds(orthanc, uid), 60, 0.5, "the SR in Orthanc")
    finally:
        assert child.stop() == 0, (tmp_path / "serve.log").read_text()[-3000:]
