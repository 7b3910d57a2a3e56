"""Fixtures of the DICOM network tests: running DicomServices on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings


@pytest.fixture
def service_factory(
    settings_factory: Callable[..., Settings],
) -> Iterator[Callable[..., DicomService]]:
    """Start DicomService(s) on free ports with temporary storage; all are stopped afterwards."""
    started: list[DicomService] = []

    def make(**sections: dict) -> DicomService:
        service = DicomService(settings_factory(**sections)).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def service(service_factory: Callable[..., DicomService]) -> DicomService:
    return service_factory()
