"""Fixtures of the PostgreSQL suite: a fresh database per test on the session's real PostgreSQL,
and DicomServices whose index, job queue and outbox live there."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from tests.support.postgres import PostgresServer

from medgate.cli.dicom_service import DicomService
from medgate.core.config import Settings

_names = itertools.count()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A new, empty PostgreSQL database (the schema is created by the first ``Index``)."""
    name = f"medgate_pg_{next(_names)}"
    engine = sa.create_engine(postgres_server.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def service_factory(
    settings_factory: Callable[..., Settings], pg_url: str
) -> Iterator[Callable[..., DicomService]]:
    """tests/dicom's ``service_factory`` with ``storage.database_url`` on PostgreSQL, so that
    the DICOM tests imported here run their durability paths against it unchanged."""
    started: list[DicomService] = []

    def make(**sections: dict) -> DicomService:
        storage = {"database_url": pg_url, **sections.pop("storage", {})}
        service = DicomService(settings_factory(storage=storage, **sections)).start()
        assert not service.index.is_sqlite
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def service(service_factory: Callable[..., DicomService]) -> DicomService:
    return service_factory()
