"""A gateway in-process for the review tests: real store, real worker, real tiny ONNX model
(``LocalModelClient``, no Ray), the HTTP API through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.serving import ingest, phantom_bytes, serving_overrides, write_bundle

from medgate.api.app import create_app
from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port
from medgate.models.registry import discover_bundles
from medgate.pipeline.worker import Worker
from medgate.serving.deployments import LocalModelClient
from medgate.serving.inference import load_predictor
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.trust.audit import AuditLog

REVIEW_TOKEN = "review-token-for-tests"
RESULTS_TOKEN = "results-token-for-tests"


@pytest.fixture(scope="session")
def review_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review-bundles")
    write_bundle(root, "tiny_cxr")
    return root


@dataclass
class Gateway:
    settings: Settings
    index: Index
    store: InstanceStore
    worker: Worker
    audit: AuditLog
    client: TestClient
    service: DicomService | None = None

    def process(self, seed: int, **changes: str) -> str:
        """Receive one phantom radiograph and run the pipeline on it; its StudyInstanceUID."""
        uid = ingest(self.store, phantom_bytes(seed, **changes))
        self.index.jobs.enqueue(uid)
        assert self.worker.run_once()
        return uid


def make_settings(storage: Path, bundles: Path, **sections: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        **serving_overrides(bundles),
        "dicom": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"path": str(storage), "min_free_mb": 0},
        "audit": {"hash_key": "review-test-key"},
        "api": {"tokens": {REVIEW_TOKEN: ["review"], RESULTS_TOKEN: ["results"]}},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_settings(None, **base)


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
