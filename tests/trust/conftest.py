"""Fixtures of the trust suite: PHI-laden test data sets, certificates, a filled store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.filled_store import FilledStore, fill_store
from tests.support.phi_data import pydicom_test_files
from tests.support.pki import Pki, make_pki

from medgate.core.config import Settings

LONG_TIMEOUT_S = 6 * 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--long``, the trust tests get a per-test timeout of hours instead of the project's
    600 s (pyproject): 1,000 kill -9 of the receiver alone take 1-3 h on the 2-core test
    machine (measured 4.6-12 s per kill). A hang is still caught."""
    if not config.getoption("--long"):
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


@pytest.fixture(scope="session")
def test_files() -> list[Path]:
    files = pydicom_test_files()
    assert len(files) >= 40, "pydicom's bundled test files are missing"
    return files


# ------------------------------------------------------------------ a filled store


@pytest.fixture
def filled_store(settings_factory: Callable, tmp_path: Path, test_files: list[Path]):
    """Settings plus an index whose instances are pydicom's files and synthetic ones on disk."""

    made: list[FilledStore] = []

    def make(n_pydicom: int = 25, **sections: dict) -> tuple[Settings, FilledStore]:
        settings = settings_factory(**sections)
        store = fill_store(settings, test_files[:n_pydicom])
        made.append(store)
        return settings, store

    yield make
    for store in made:
        store.index.close()


# ------------------------------------------------------------------ certificates


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server (127.0.0.1, localhost) and a client certificate, plus a rogue CA."""
    return make_pki(tmp_path_factory.mktemp("pki"))
