"""A gateway in-process for the review tests: real store, real worker, real tiny ONNX model
(``LocalModelClient``, no Ray), the HTTP API through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.review_gateway import Gateway, make_settings
from tests.support.serving import write_bundle

from medgate.api.app import create_app
from medgate.cli.dicom_service import DicomService
from medgate.models.registry import discover_bundles
from medgate.pipeline.worker import Worker
from medgate.serving.deployments import LocalModelClient
from medgate.serving.inference import load_predictor
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.trust.audit import AuditLog


@pytest.fixture(scope="session")
def review_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review-bundles")
    write_bundle(root, "tiny_cxr")
    return root


@pytest.fixture
def gateway_factory(tmp_path: Path, review_bundles: Path) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(*, with_dicom: bool = False, **sections: dict[str, Any]) -> Gateway:
        """A gateway; ``with_dicom=True`` also runs medgate's DICOM side (receiver, study assembler,
        outbox sender to ``pacs``) and the worker loop, as ``medgate serve`` does."""
        settings = make_settings(tmp_path / f"store{len(made)}", review_bundles, **sections)
        settings.storage.path.mkdir(parents=True, exist_ok=True)
        index = Index(settings.storage.resolved_database_url())
        audit = AuditLog(settings.audit_path, settings.audit.hash_key)
        service = DicomService(settings, index, audit).start() if with_dicom else None
        store = service.store if service is not None else InstanceStore(settings, index)
        bundles, _ = discover_bundles(settings.models.path)
        by_name = {b.name: b for b in bundles}
        model = LocalModelClient({"tiny_cxr": load_predictor(by_name["tiny_cxr"], "cpu")})
        worker = Worker(settings, index, model, store=store, audit=audit, bundles=by_name)
        app = create_app(settings, index, model_client=model, bundles=by_name)
        gateway = Gateway(settings, index, store, worker, audit, TestClient(app), service)
        if service is not None:
            worker.start()
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.worker.stop()
        if gateway.service is not None:
            gateway.service.stop()  # closes the store
        else:
            gateway.store.close()
        gateway.index.close()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory()
