"""Shared fixtures: real Orthanc, free ports, settings on temporary storage, the --long flag.

Area-specific fixtures live in each area's own conftest.py (tests/<area>/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.postgres import PostgresServer, find_pg_bin

from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer, find_orthanc


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long forms of the fault-injection and fuzz suites",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True when the suite runs with --long (more fault injections, more fuzz cases)."""
    return bool(request.config.getoption("--long"))


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a fresh storage folder, loopback ports, short idle timeout; override per test."""

    def make(**sections: dict) -> Settings:
        base: dict[str, dict] = {
            "dicom": {"host": "127.0.0.1", "port": free_port(), "study_idle_seconds": 1.0},
            "storage": {"path": str(tmp_path / "store"), "min_free_mb": 0},
            "api": {"host": "127.0.0.1", "port": free_port()},
            "audit": {"hash_key": "test-key"},
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return load_settings(None, **base)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancServer]]:
    """Start real Orthanc servers (Debian's package) on loopback; all are stopped afterwards."""
    if find_orthanc() is None:
        pytest.fail("Orthanc is not installed: run `make test` (scripts/install.sh installs it)")
    started: list[OrthancServer] = []

    def make(**kwargs: object) -> OrthancServer:
        workdir = tmp_path / f"orthanc{len(started)}"
        server = OrthancServer(workdir, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:  # their folders are pytest's temporary ones: nothing to keep
        server.stop(graceful=False)


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., OrthancServer]) -> OrthancServer:
    """One Orthanc with no peers configured."""
    return orthanc_factory()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL (Debian's package) for the session; each test gets its own database.

    Its folder is a fresh temp dir outside pytest's (root-only) tree: as root the server runs as
    the ``postgres`` user, which must be able to reach it.
    """
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed: run `make test` (scripts/install.sh installs it)")
    server = PostgresServer().start()
    yield server
    server.cleanup()


_database_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    import sqlalchemy as sa

    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"medgate_test_{next(_database_counter)}"
    engine = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.url.rsplit("/", 1)[0] + "/" + name
