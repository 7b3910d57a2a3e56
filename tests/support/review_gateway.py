"""The in-process gateway of the review tests and its settings: real store, real worker, real tiny
ONNX model (``LocalModelClient``, no Ray), the HTTP API through Starlette's TestClient; the
tokens of the review and results roles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.support.serving import ingest, phantom_bytes, serving_overrides

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port
from medgate.pipeline.worker import Worker
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.trust.audit import AuditLog

REVIEW_TOKEN = "review-token-for-tests"
RESULTS_TOKEN = "results-token-for-tests"


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
