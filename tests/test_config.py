"""The typed config: file + environment, precedence, and one-line errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, SecretStr
from tests.support.configs import settings_to_toml

from medgate.core.config import ConfigError, load_settings
from medgate.core.redaction import REDACTED, mask_url_secrets, redacted_toml


def test_defaults_match_the_documented_contract() -> None:
    settings = load_settings(None)
    assert settings.dicom.ae_title == "MEDGATE"
    assert settings.dicom.port == 11112
    assert settings.dicom.study_idle_seconds == 10
    assert settings.dicom.allowed_calling_aes == []
    assert settings.api.port == 8000
    assert settings.storage.resolved_database_url().startswith("sqlite:///")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "medgate.toml"
    config.write_text('[dicom]\nport = 104\nae_title = "FILEAE"\n[pacs]\nhost = "pacs.local"\n')
    monkeypatch.setenv("MEDGATE_DICOM__PORT", "11113")
    monkeypatch.setenv("MEDGATE_DICOM__ALLOWED_CALLING_AES", '["CT1", "CR2"]')
    settings = load_settings(config)
    assert settings.dicom.port == 11113
    assert settings.dicom.ae_title == "FILEAE"
    assert settings.dicom.allowed_calling_aes == ["CT1", "CR2"]
    assert settings.pacs.host == "pacs.local"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[dicom]\nport = 'abc'\n", "dicom.port"),
        ("[dicom]\nae_title = 'THIS-IS-FAR-TOO-LONG-AE'\n", "dicom.ae_title"),
        ("[storage]\nmin_free_mb = -1\n", "storage.min_free_mb"),
        ("[nonsense]\nx = 1\n", "nonsense"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert key in message
    assert "\n" not in message


def test_cli_config_show_prints_toml_and_errors_without_traceback(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "medgate.cli.main", "config", "show"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[dicom]" in shown.stdout and 'ae_title = "MEDGATE"' in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom]\nport = 'abc'\n")
    failed = subprocess.run(
        [sys.executable, "-m", "medgate.cli.main", "config", "show", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert "dicom.port" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_settings_round_trip_through_toml(tmp_path: Path) -> None:
    settings = load_settings(None, dicom={"port": 2000}, api={"tokens": {"t1": ["cds"]}})
    path = tmp_path / "round.toml"
    path.write_text(settings_to_toml(settings))
    again = load_settings(path)
    assert again.model_dump() == settings.model_dump()


def test_config_show_redacts_tokens_keys_and_the_database_password() -> None:
    environment = {
        **os.environ,
        "MEDGATE_API__TOKENS": '{"hook-probe-token-7": ["cds"]}',
        "MEDGATE_AUDIT__HASH_KEY": "hook-probe-key-7",
        "MEDGATE_DEID__KEY": "hook-probe-deid-7",
        "MEDGATE_STORAGE__DATABASE_URL": "postgresql+psycopg://medgate:hook-probe-pw-7@db:5432/m",
        "MEDGATE_SITES": '[{"name": "clinic-1", "tokens": {"hook-probe-site-7": ["results"]}}]',
    }
    shown = subprocess.run(
        [sys.executable, "-m", "medgate.cli.main", "config", "show"],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    assert "hook-probe-" not in shown.stdout + shown.stderr
    data = tomllib.loads(shown.stdout)  # still valid TOML, written by tomli-w
    assert data["audit"]["hash_key"] == REDACTED
    assert data["deid"]["key"] == REDACTED
    assert data["api"]["tokens"] == {f"{REDACTED} 1": ["cds"]}  # how many, and their scopes
    assert data["sites"][0]["tokens"] == {f"{REDACTED} 1": ["results"]}
    assert data["storage"]["database_url"] == f"postgresql+psycopg://medgate:{REDACTED}@db:5432/m"


class _FutureSection(BaseModel):
    """Fields that another section may add later: redacted without anyone listing them."""

    smtp_password: str = "pw-1"
    jwt_secret: str = "pw-2"
    client_credentials: dict[str, str] = Field(default_factory=lambda: {"id-1": "pw-3"})
    api_key: SecretStr = SecretStr("pw-4")
    opaque: str = Field("pw-5", json_schema_extra={"secret": True})
    webhook_url: str = "https://bot:pw-6@hooks.example/notify?x=1&access_token=pw-7"
    key_file: str = "/etc/medgate/key.pem"  # a path to a key is not itself a secret
    host: str = "smtp.example"
    no_password: str | None = None


def test_redaction_is_generic_by_name_type_declaration_and_url() -> None:
    text = redacted_toml(_FutureSection())
    assert "pw-" not in text
    data = tomllib.loads(text)
    assert data["webhook_url"] == (
        f"https://bot:{REDACTED}@hooks.example/notify?x=1&access_token={REDACTED}"
    )
    assert data["key_file"] == "/etc/medgate/key.pem"
    assert data["host"] == "smtp.example"
    assert "no_password" not in data  # unset stays visibly unset
    assert mask_url_secrets("sqlite:////var/x.sqlite") == "sqlite:////var/x.sqlite"
    assert mask_url_secrets("postgresql://user@db/x") == "postgresql://user@db/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (  # Slack-style: the secret is the last path segment
            "https://hooks.example.com/services/T0A1B2C3D/B0E4F5G6H/q8Xz3kLm9Pw2Rt7Yv4Nb6Hc1",
            f"https://hooks.example.com/services/T0A1B2C3D/B0E4F5G6H/{REDACTED}",
        ),
        (  # Feishu-style: a UUID as the path's secret
            "https://open.example.cn/open-apis/bot/v2/hook/1f3a9c2e-4b7d-4e8a-9c1f-2d3e4f5a6b7c",
            f"https://open.example.cn/open-apis/bot/v2/hook/{REDACTED}",
        ),
        # words a person chose stay readable
        ("https://fhir.example.org/fhir/R4/notifications-endpoint", None),
        ("https://ris.example.org/api/v1/critical_results_webhook", None),
    ],
)
def test_a_webhook_secret_in_the_url_path_is_redacted(url: str, shown: str | None) -> None:
    assert mask_url_secrets(url) == (shown or url)
