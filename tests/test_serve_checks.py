"""Secure by default: ``medgate serve`` refuses the public audit key and an open API on the
network, warns at every start about an API opened on purpose and about a DICOM listener on the
network that takes any calling AE. Real ``medgate serve`` processes; no Ray is reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from medgate.core.config import Settings, load_settings
from medgate.core.ports import free_port
from medgate.core.serve_checks import (
    anonymous_api_warning,
    is_loopback,
    open_dicom_warning,
    serve_refusals,
)

MEDGATE = [sys.executable, "-m", "medgate.cli.main"]


def _serve(config: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDGATE_")}
    return subprocess.run(
        [*MEDGATE, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "400", **environment},
    )


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    path = tmp_path / "medgate.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "store"}"\nmin_free_mb = 0\n'
        f'[models]\npath = "{tmp_path / "models"}"\n{text}'
    )
    return path


def test_serve_refuses_the_default_audit_key_and_says_how_to_set_one(tmp_path: Path) -> None:
    config = _config(tmp_path, f'[api]\nhost = "127.0.0.1"\nport = {free_port()}\n')
    result = _serve(config)
    assert result.returncode == 2, result.stderr
    assert "audit.hash_key" in result.stderr and "MEDGATE_AUDIT__HASH_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was opened


def test_serve_refuses_an_open_api_on_the_network(tmp_path: Path) -> None:
    config = _config(
        tmp_path, f'[api]\nhost = "0.0.0.0"\nport = {free_port()}\n[audit]\nhash_key = "k-1"\n'
    )
    result = _serve(config)
    assert result.returncode == 2, result.stderr
    assert "api.tokens" in result.stderr and "MEDGATE_API__TOKENS" in result.stderr
    assert "allow_anonymous" in result.stderr
    assert "audit.hash_key" not in result.stderr  # only the problem that is there


def test_serve_warns_about_an_anonymous_api_and_an_open_dicom_listener(tmp_path: Path) -> None:
    """The port is taken, so the gateway fails at the DICOM bind, before Ray: both warnings come
    first, at start."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(
            tmp_path,
            f'[api]\nhost = "0.0.0.0"\nport = {free_port()}\nallow_anonymous = true\n'
            f'[dicom]\nhost = "0.0.0.0"\nport = {port}\n[audit]\nhash_key = "k-2"\n',
        )
        result = _serve(config)
    assert result.returncode == 1, result.stderr
    assert "could not start medgate" in result.stderr
    assert "api.allow_anonymous" in result.stderr and "without a token" in result.stderr
    assert "accepts any calling AE title" in result.stderr


def test_serve_checks_pass_a_configured_gateway(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        api={"host": "0.0.0.0", "tokens": {"t-long-random": ["admin"]}},
        dicom={"host": "10.0.0.5", "allowed_calling_aes": ["CT1"]},
    )
    assert serve_refusals(settings) == []
    assert anonymous_api_warning(settings) is None
    assert open_dicom_warning(settings) is None


@pytest.mark.parametrize(
    ("api", "refused"),
    [
        ({"host": "127.0.0.1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "::1"}, False),
        ({"host": "0.0.0.0"}, True),
        ({"host": "::"}, True),
        ({"host": "gateway.site.example"}, True),
        ({"host": "0.0.0.0", "cds_jwt_issuers": {"https://ehr": "/k.pem"}}, False),
        ({"host": "0.0.0.0", "allow_anonymous": True}, False),
    ],
)
def test_open_api_refusal_by_address_and_credentials(api: dict, refused: bool) -> None:
    settings = load_settings(None, api=api, audit={"hash_key": "k"})
    assert bool(serve_refusals(settings)) is refused


def test_site_tokens_count_as_authentication() -> None:
    settings = Settings.model_validate(
        {
            "api": {"host": "0.0.0.0"},
            "audit": {"hash_key": "k"},
            "sites": [{"name": "clinic-1", "tokens": {"t": ["results"]}}],
        }
    )
    assert serve_refusals(settings) == []


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and is_loopback("LOCALHOST")
    assert not is_loopback("") and not is_loopback("192.168.1.4")
