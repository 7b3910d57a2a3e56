"""Fixtures of the trust suite: PHI-laden test data sets, certificates, a filled store."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom import Dataset
from pydicom.uid import generate_uid
from tests.support.phi_data import pydicom_test_files, synthetic_dataset

from medgate.store.db import Index
from medgate.store.instances import InstanceRecord

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


@dataclass
class FilledStore:
    index: Index
    study_uids: list[str]
    files: list[Path]


@pytest.fixture
def filled_store(settings_factory: Callable, tmp_path: Path, test_files: list[Path]):
    """Settings plus an index whose instances are pydicom's files and synthetic ones on disk."""

    def make(n_pydicom: int = 25, **sections: dict):
        settings = settings_factory(**sections)
        root = Path(settings.storage.path)
        root.mkdir(parents=True, exist_ok=True)
        index = Index(settings.storage.resolved_database_url())
        originals: list[Path] = []
        sources: list[Dataset] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for path in test_files[:n_pydicom]:
                sources.append(pydicom.dcmread(path))
        shared_study = generate_uid()
        for _ in range(3):
            sources.append(synthetic_dataset(study_uid=shared_study, patient_id="MRN-0045817"))
        sources.append(synthetic_dataset(patient_id="MRN-0045817"))  # same patient, 2nd study
        sources.append(synthetic_dataset(burned_in="YES"))
        sources.append(synthetic_dataset("1.2.840.10008.5.1.4.1.1.7", burned_in=None))
        for n, ds in enumerate(sources):
            sop = str(ds.get("SOPInstanceUID", "") or f"1.2.3.{n}")
            study = str(ds.get("StudyInstanceUID", "") or f"1.2.3.9.{n}")
            target = root / "instances" / f"{n:03d}" / f"{sop}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            if n < n_pydicom:
                shutil.copyfile(test_files[n], target)
            else:
                ds.save_as(target, enforce_file_format=True)
            originals.append(target)
            record = InstanceRecord(
                sop_instance_uid=sop,
                study_instance_uid=study,
                series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "1.2.3"),
                sop_class_uid=str(ds.get("SOPClassUID", "") or "1.2.3"),
                transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "") or "1.2.3"),
                size=target.stat().st_size,
                sha256="0" * 64,
                path=str(target),
                modality=str(ds.get("Modality", "") or ""),
            )
            index.instances.add(record)
        studies = [row.study_instance_uid for row in index.studies.list()]
        return settings, FilledStore(index, studies, originals)

    made: list[FilledStore] = []

    def tracked(*args, **kwargs):
        settings, store = make(*args, **kwargs)
        made.append(store)
        return settings, store

    yield tracked
    for store in made:
        store.index.close()


# ------------------------------------------------------------------ certificates


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool, sans=()):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server (127.0.0.1, localhost) and a client certificate, plus a rogue CA."""
    import ipaddress

    folder = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca = _cert(ca_key, "medgate test CA", ca_key, "medgate test CA", ca=True)
    rogue = _cert(rogue_key, "rogue CA", rogue_key, "rogue CA", ca=True)
    server_key, client_key, rogue_client_key = _key(), _key(), _key()
    sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = _cert(server_key, "medgate", ca_key, "medgate test CA", ca=False, sans=sans)
    client = _cert(client_key, "PACS", ca_key, "medgate test CA", ca=False, sans=sans)
    rogue_client = _cert(rogue_client_key, "PACS", rogue_key, "rogue CA", ca=False, sans=sans)
    return Pki(
        ca=_write(folder / "ca.pem", cert=ca),
        server_cert=_write(folder / "server.pem", cert=server),
        server_key=_write(folder / "server.key", key=server_key),
        client_cert=_write(folder / "client.pem", cert=client),
        client_key=_write(folder / "client.key", key=client_key),
        rogue_ca=_write(folder / "rogue_ca.pem", cert=rogue),
        rogue_client_cert=_write(folder / "rogue_client.pem", cert=rogue_client),
        rogue_client_key=_write(folder / "rogue_client.key", key=rogue_client_key),
    )
