"""``ssl.SSLContext`` builders for DICOM TLS, from ``[tls]`` in the config.

Why here and not in the receiver/sender: one place decides what "secure" means, and both sides
(the C-STORE SCP and every SCU) take their context from it. What it means follows DICOM PS3.15
B.9 "BCP195 TLS Secure Transport Connection Profile" (RFC 9325, formerly RFC 7525):

* TLS 1.2 or newer only (``tls.min_version`` may raise it to 1.3); no compression, no
  renegotiation, a fresh ephemeral key per handshake;
* TLS 1.2 cipher suites limited to the AEAD ECDHE/DHE suites BCP195 recommends (TLS 1.3 suites are
  all AEAD and are left to OpenSSL);
* the peer must present a certificate signed by the CA in ``tls.ca_file``: the server asks the
  client for one (mutual TLS, ``tls.require_client_cert``), the client checks the server's
  certificate and, with ``tls.check_hostname``, its name.

pynetdicom takes these directly: ``ae.start_server(..., ssl_context=server_context(cfg))`` and
``ae.associate(host, port, tls_args=(client_context(cfg), host))``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

# RFC 9325 section 4.2 / RFC 7525 section 4.2, in OpenSSL's names, strongest first.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    )
)


class TlsConfigError(ValueError):
    """The ``[tls]`` section cannot give a working context; the message names the key."""


def _versions(config: Any) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if config.min_version == "1.3" else ssl.TLSVersion.TLSv1_2


def _need(config: Any, key: str) -> Path:
    value = getattr(config, key)
    if value is None:
        raise TlsConfigError(f"tls.{key} is required for DICOM TLS")
    path = Path(value)
    if not path.is_file():
        raise TlsConfigError(f"tls.{key}: {path} is not a readable file")
    return path


def _harden(context: ssl.SSLContext, config: Any) -> ssl.SSLContext:
    context.minimum_version = _versions(config)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE | ssl.OP_SINGLE_DH_USE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        context.set_ciphers(config.ciphers or BCP195_CIPHERS)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls.ciphers: OpenSSL accepts none of {config.ciphers!r}") from exc
    return context


def _load_chain(context: ssl.SSLContext, config: Any, *, required: bool) -> None:
    if config.cert_file is None and config.key_file is None and not required:
        return
    cert, key = _need(config, "cert_file"), _need(config, "key_file")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"tls.cert_file/tls.key_file: not a matching PEM certificate and key ({exc.reason})"
        ) from exc


def _load_ca(context: ssl.SSLContext, config: Any) -> None:
    ca = _need(config, "ca_file")
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls.ca_file: {ca} holds no usable PEM certificate") from exc


def server_context(config: Any) -> ssl.SSLContext:
    """The context of medgate's DICOM listener (SCP): our certificate, peers checked by CA."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)
    _load_chain(context, config, required=True)
    if config.require_client_cert or config.ca_file is not None:
        _load_ca(context, config)
    context.verify_mode = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_NONE
    return context


def client_context(config: Any) -> ssl.SSLContext:
    """The context of medgate's SCUs (sender, retriever): server checked by CA, our cert shown."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), config)
    _load_ca(context, config)
    _load_chain(context, config, required=False)
    context.check_hostname = bool(config.check_hostname)
    context.verify_mode = ssl.CERT_REQUIRED
    return context
