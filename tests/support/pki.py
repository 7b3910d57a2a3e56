"""Certificates for the TLS tests, made in-process with cryptography: a CA with a server
(127.0.0.1, localhost) and a client certificate, and a rogue CA with its own client."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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


def _cert(
    subject_key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool,
    sans: tuple[x509.GeneralName, ...] = (),
) -> x509.Certificate:
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


def _write(
    path: Path,
    cert: x509.Certificate | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def make_pki(folder: Path) -> Pki:
    """The certificates and keys written as PEM files under ``folder``."""
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
