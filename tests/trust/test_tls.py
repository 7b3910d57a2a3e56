"""DICOM TLS contexts: mutual TLS 1.2+ with BCP195 ciphers, over real pynetdicom and DCMTK."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from tests.support.faults import dataset_bytes, dataset_offset, sop_uid
from tests.support.tools import require_tool

from medgate.cli.dicom_service import DicomService
from medgate.core.config import TlsConfig
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.tls import BCP195_CIPHERS, TlsConfigError, client_context, server_context


def server_config(pki) -> TlsConfig:
    return TlsConfig(
        enabled=True, cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca
    )


def client_config(pki, **changes) -> TlsConfig:
    values = dict(enabled=True, cert_file=pki.client_cert, key_file=pki.client_key, ca_file=pki.ca)
    values.update(changes)
    return TlsConfig(**values)


@pytest.fixture
def dicom_tls_server(pki) -> Iterator[int]:
    """A real pynetdicom Verification SCP behind ``server_context``."""
    ae = AE(ae_title="MEDGATE")
    ae.add_supported_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=server_context(server_config(pki)),
        evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0x0000)],
    )
    try:
        yield port
    finally:
        server.shutdown()


def echo(port: int, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    kwargs = {"tls_args": (context, "127.0.0.1")} if context is not None else {}
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDGATE", **kwargs)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0x0000


def test_mutual_tls_echo(pki, dicom_tls_server: int) -> None:
    assert echo(dicom_tls_server, client_context(client_config(pki)))


def test_refusals(pki, dicom_tls_server: int) -> None:
    port = dicom_tls_server
    assert not echo(port, None), "plain TCP accepted"
    no_cert = client_context(client_config(pki, cert_file=None, key_file=None))
    assert not echo(port, no_cert), "client without certificate accepted"
    rogue = client_context(
        client_config(pki, cert_file=pki.rogue_client_cert, key_file=pki.rogue_client_key)
    )
    assert not echo(port, rogue), "client certificate of an untrusted CA accepted"
    distrust = client_context(client_config(pki, ca_file=pki.rogue_ca))
    assert not echo(port, distrust), "server certificate of an untrusted CA accepted"


def tls_probe(pki, client: ssl.SSLContext) -> tuple[str, str]:
    """Handshake with a raw TLS server built by ``server_context``; (version, cipher)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    context = server_context(server_config(pki))
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            version, cipher = tls.version() or "", tls.cipher()[0]
            tls.sendall(b"x")
            return version, cipher
    finally:
        thread.join(5)
        listener.close()


def test_versions_and_ciphers(pki) -> None:
    version, _ = tls_probe(pki, client_context(client_config(pki)))
    assert version in ("TLSv1.2", "TLSv1.3")
    tls12 = client_context(client_config(pki))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = tls_probe(pki, tls12)
    assert version == "TLSv1.2" and cipher in BCP195_CIPHERS.split(":")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki.ca)
    old.load_cert_chain(pki.client_cert, pki.client_key)
    old.set_ciphers("ALL:@SECLEVEL=0")
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        tls_probe(pki, old)
    weak = client_context(client_config(pki))
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-SHA")  # RSA key exchange, CBC: not BCP195
    with pytest.raises((ssl.SSLError, OSError)):
        tls_probe(pki, weak)


def test_dcmtk_echoscu_interoperates(pki, dicom_tls_server: int) -> None:
    # DCMTK's echoscu: the virtualenv's bin holds pynetdicom's script of the same name
    echoscu = shutil.which("echoscu", path="/usr/bin:/usr/local/bin")
    if echoscu is None:
        pytest.fail("echoscu is not installed: run `make test` (DCMTK)")
    args = [
        echoscu,
        "-aec",
        "MEDGATE",
        "+tls",
        str(pki.client_key),
        str(pki.client_cert),
        "+cf",
        str(pki.ca),
        "127.0.0.1",
        str(dicom_tls_server),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    plain = subprocess.run(
        [echoscu, "-aec", "MEDGATE", "-to", "5", "127.0.0.1", str(dicom_tls_server)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode != 0


def test_config_errors_are_clear(pki, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"tls\.cert_file is required"):
        server_context(TlsConfig(key_file=pki.server_key, ca_file=pki.ca))
    with pytest.raises(TlsConfigError, match=r"tls\.ca_file"):
        client_context(TlsConfig(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(TlsConfigError, match="matching"):
        server_context(server_config(pki).model_copy(update={"key_file": pki.client_key}))
    with pytest.raises(TlsConfigError, match="ciphers"):
        client_context(client_config(pki, ciphers="NO-SUCH-CIPHER"))
    strict = server_context(server_config(pki).model_copy(update={"min_version": "1.3"}))
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_3
    assert strict.verify_mode == ssl.CERT_REQUIRED


# ------------------------------------------------------------------ DCMTK storescu -> receiver


@pytest.fixture
def tls_receiver(settings_factory, pki) -> Iterator[DicomService]:
    """medgate's real receiver (DicomService) with TLS required, on a free loopback port."""
    settings = settings_factory(
        tls={
            "enabled": True,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
            "ca_file": str(pki.ca),
        }
    )
    service = DicomService(settings).start()
    try:
        yield service
    finally:
        service.stop()


def storescu(service: DicomService, path: Path, *tls: str) -> subprocess.CompletedProcess[str]:
    """DCMTK's storescu (``/usr/bin``: the virtualenv has pynetdicom's script of that name)."""
    args = [require_tool("storescu"), "-aet", "DCMTKSCU", "-aec", "MEDGATE"]
    args += ["-to", "10", "-ta", "10", "-td", "10", *tls, "127.0.0.1", str(service.port), str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


def test_dcmtk_storescu_over_tls_stores_and_is_refused_without(
    pki, tls_receiver: DicomService, tmp_path: Path
) -> None:
    service = tls_receiver
    good, plain, rogue = ct_series(tmp_path / "series", 3, rows=16, columns=16, seed=7)
    done = storescu(
        service, good, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = service.index.instances.get(sop_uid(good))
    assert row is not None, "acknowledged over TLS but not indexed"
    stored = Path(row.path).read_bytes()
    assert stored[dataset_offset(stored) :] == dataset_bytes(good)  # the bytes as sent
    # no TLS at all: the association never gets past the handshake
    refused = storescu(service, plain)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert service.index.instances.get(sop_uid(plain)) is None
    # a client certificate from a CA the receiver does not trust
    untrusted = storescu(
        service,
        rogue,
        "+tls",
        str(pki.rogue_client_key),
        str(pki.rogue_client_cert),
        "+cf",
        str(pki.ca),
    )
    assert untrusted.returncode != 0, untrusted.stdout + untrusted.stderr
    assert service.index.instances.get(sop_uid(rogue)) is None
    assert service.index.instances.count() == 1
