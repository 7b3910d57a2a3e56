"""The deployment files stay true to the code: the RayService names an import path that exists
and builds medgate's application; compose and Kubernetes use the image's ports, user and the
real configuration keys. No docker needed here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from medgate.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _rayservice() -> dict[str, Any]:
    (service,) = [d for d in _documents(K8S / "rayservice.yaml") if d["kind"] == "RayService"]
    return service


def test_rayservice_import_paths_build_the_applications(tmp_path: Path) -> None:
    """Import each path exactly as Ray would and build (not run) every application from it: the
    API at / and one application per demo image bundle, named and routed as medgate serve does."""
    from medgate.serving.deployments import (
        APP_NAME,
        image_bundles,
        model_app_name,
        model_route_prefix,
    )

    config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    ServeDeploySchema.parse_obj(config)  # the schema Ray checks serveConfigV2 against
    toml = tmp_path / "medgate.toml"
    toml.write_text(
        f'[storage]\npath = "{tmp_path / "storage"}"\n[models]\npath = "{REPO / "models"}"\n'
        '[audit]\nhash_key = "deploy-test-key"\n'
        '[api]\ntokens = { "deploy-test-token" = ["admin"] }\n'
    )
    routes = {}
    for application in config["applications"]:
        module_name, _, attribute = application["import_path"].partition(":")
        builder = getattr(importlib.import_module(module_name), attribute)
        app = builder({**application.get("args", {}), "config": str(toml)})
        assert isinstance(app, serve.Application)
        routes[application["name"]] = application["route_prefix"]
    bundles = image_bundles(Settings(models={"path": str(REPO / "models")}))
    open_toml = tmp_path / "open.toml"  # no tokens, the public audit key: refused, as serve does
    open_toml.write_text(f'[storage]\npath = "{tmp_path / "storage"}"\n')
    for application in config["applications"]:
        module_name, _, attribute = application["import_path"].partition(":")
        builder = getattr(importlib.import_module(module_name), attribute)
        with pytest.raises(ValueError, match=r"audit\.hash_key.*api\.tokens"):
            builder({**application.get("args", {}), "config": str(open_toml)})
    expected = {APP_NAME: "/", **{model_app_name(b): model_route_prefix(b) for b in bundles}}
    assert routes == expected


def test_rayservice_config_file_lives_where_the_configmap_mounts() -> None:
    service = _rayservice()
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    path = Path(config["applications"][0]["args"]["config"])
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert str(path.parent) in mounts
    (configmap,) = [d for d in _documents(K8S / "config.yaml") if d["kind"] == "ConfigMap"]
    import tomllib

    Settings(**tomllib.loads(configmap["data"][path.name]))  # valid medgate configuration


def test_rayservice_pods_run_as_the_image_user() -> None:
    spec = _rayservice()["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        security = group["template"]["spec"]["securityContext"]
        assert security["runAsUser"] == 10001 and security["runAsNonRoot"] is True


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())


def test_compose_has_the_stack_the_design_names() -> None:
    services = _compose()["services"]
    assert {"orthanc", "postgres", "medgate-head", "medgate-worker"} <= set(services)
    head, worker = services["medgate-head"], services["medgate-worker"]
    assert head["entrypoint"] == ["medgate-ray-head"]
    assert (REPO / "deploy/docker/ray-head.sh").read_text().count("medgate serve")
    assert worker["entrypoint"] == ["medgate-ray-worker"]
    assert worker["environment"]["MEDGATE_RAY_HEAD"].startswith("medgate-head:")
    assert 'ray start --address="$head"' in (REPO / "deploy/docker/ray-worker.sh").read_text()


def test_compose_images_and_ports_are_variables() -> None:
    """Sites name their own images (no Docker Hub) and may bind ports to one address."""
    text = (REPO / "deploy" / "compose.yaml").read_text()
    for variable in (
        "MEDGATE_IMAGE",
        "ORTHANC_IMAGE",
        "POSTGRES_IMAGE",
        "MEDGATE_DICOM_PUBLISH",
        "MEDGATE_HTTP_PUBLISH",
        "ORTHANC_HTTP_PUBLISH",
        "ORTHANC_DICOM_PUBLISH",
    ):
        assert "${" + variable + ":-" in text, variable


@pytest.mark.parametrize("service", ["medgate-head", "medgate-worker"])
def test_compose_environment_uses_real_config_keys(service: str) -> None:
    """Every MEDGATE_<SECTION>__<KEY> in compose.yaml is a key Settings knows."""
    environment = _compose()["services"][service].get("environment", {})
    keys = [k for k in environment if k.startswith("MEDGATE_") and "__" in k]
    assert keys
    fields = Settings.model_fields
    for key in keys:
        section, _, name = key.removeprefix("MEDGATE_").lower().partition("__")
        assert section in fields, key
        model = fields[section].annotation
        assert name in model.model_fields, key  # type: ignore[union-attr]


def test_capacity_table_in_docs_comes_from_the_script() -> None:
    """docs/deploy.md shows exactly what bench/capacity.py prints from the committed figures."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("capacity", REPO / "bench" / "capacity.py")
    assert spec is not None and spec.loader is not None
    capacity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capacity)
    figures = json.loads((REPO / "bench" / "results" / "capacity.json").read_text())
    assert figures["models"], "no measured model figures"
    args = capacity.argparse.Namespace(
        clinics=[20, 100, 500, 2000],
        studies_per_clinic=30.0,
        working_hours=10.0,
        peak_factor=3.0,
        cores_per_node=16,
        gpus_per_node=1,
        utilisation=0.6,
    )
    table = capacity.render_table(figures, args)
    assert table in (REPO / "docs" / "deploy.md").read_text()


def test_orthanc_entrypoint_reads_compose_environment() -> None:
    """The Debian-package Orthanc image turns compose.yaml's ORTHANC__* variables into the
    configuration keys Orthanc knows (the orthancteam image's convention)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "orthanc_entrypoint", REPO / "deploy" / "docker" / "orthanc-entrypoint.py"
    )
    assert spec is not None and spec.loader is not None
    entrypoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entrypoint)
    environment = {k: str(v) for k, v in _compose()["services"]["orthanc"]["environment"].items()}
    config = entrypoint.build_config({**environment, "ORTHANC__STABLE_AGE": "5"})
    assert config["DicomAet"] == "ORTHANC"
    assert config["DicomModalities"] == {"medgate": ["MEDGATE", "medgate-head", 11112]}
    assert config["AuthenticationEnabled"] is False and config["StableAge"] == 5
    assert (config["HttpPort"], config["DicomPort"]) == (8042, 4242)
    json.dumps(config)  # what the entrypoint writes
