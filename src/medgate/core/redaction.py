"""Settings as TOML with every secret replaced, for ``medgate config show`` and support requests.

A value is secret when its field is declared secret (``json_schema_extra={"secret": True}``), when
its type is pydantic's ``SecretStr`` / ``SecretBytes``, or when the field's name ends in a word
that names a secret (``password``, ``secret``, ``token(s)``, ``key(s)``, ``credentials``): a field
added later (an SMTP password, a JWT secret) is therefore redacted without anybody remembering to.
A password inside any URL (``storage.database_url``, a webhook, an SMTP URL) is masked too, and
so is a query value whose name is a secret's (``?access_token=``), and a path segment that looks
like a generated token (``_looks_generated``): chat webhooks (Slack, Teams, Feishu) carry their
secret in the path, ``https://hooks.example/services/T0/B0/<secret>``.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import tomli_w
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

REDACTED = "<redacted>"

#: The last word of a field name (words split at "_") that marks its value as a secret.
SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "tokens", "key", "keys", "credentials"}
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{20,}$")


def _looks_generated(segment: str) -> bool:
    """A path segment of 20+ URL-safe characters mixing letters and digits: a generated token
    (a Slack webhook's 24-character secret, a UUID), not a word a person chose."""
    return bool(
        _TOKEN_SEGMENT.match(segment)
        and any(c.isdigit() for c in segment)
        and any(c.isalpha() for c in segment)
    )


def is_secret_name(name: str) -> bool:
    """Whether a key named ``name`` (``smtp_password``, ``access_token``) holds a secret."""
    return name.lower().replace("-", "_").rsplit("_", 1)[-1] in SECRET_WORDS


def is_secret_field(name: str, info: FieldInfo) -> bool:
    """Whether the field ``name`` holds a secret, by declaration, by type or by its name."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret") is True:
        return True
    types = (info.annotation, *get_args(info.annotation))
    if any(kind in (SecretStr, SecretBytes) for kind in types):
        return True
    return is_secret_name(name)


def mask_url_secrets(text: str) -> str:
    """A URL's password, secret query values and token-like path segments redacted, other text
    as is: ``scheme://user:pass@host/x?token=t`` -> ``scheme://user:<redacted>@host/x?token=<redacted>``.
    """
    if not _URL.match(text):
        return text
    parts = original = urlsplit(text)
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:{REDACTED}@{hostinfo}")
    if parts.query:
        items = []
        for item in parts.query.split("&"):
            name, equals, _value = item.partition("=")
            items.append(f"{name}={REDACTED}" if equals and is_secret_name(unquote(name)) else item)
        parts = parts._replace(query="&".join(items))
    segments = parts.path.split("/")
    if any(_looks_generated(segment) for segment in segments):
        masked = [REDACTED if _looks_generated(segment) else segment for segment in segments]
        parts = parts._replace(path="/".join(masked))
    return text if parts == original else urlunsplit(parts)


def _hidden(value: Any) -> Any:
    """A secret's stand-in that keeps its shape: how many tokens there are and their scopes."""
    if value is None or value == "" or value == {} or value == []:
        return value  # "not set" is worth seeing and reveals nothing
    if isinstance(value, dict):
        return {
            f"{REDACTED} {number}": _plain(item) if not isinstance(item, str) else REDACTED
            for number, item in enumerate(value.values(), start=1)
        }
    if isinstance(value, list):
        return [REDACTED for _ in value]
    return REDACTED


def _plain(value: Any) -> Any:
    """``value`` as TOML-ready data, secrets in nested models redacted, URL passwords masked."""
    if isinstance(value, BaseModel):
        return redacted_model(value)
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return mask_url_secrets(value)
    if isinstance(value, PurePath):
        return str(value)
    return value


def redacted_model(model: BaseModel) -> dict[str, Any]:
    """The model's fields as plain data with every secret replaced by ``<redacted>``."""
    data: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        data[name] = _hidden(_plain(value)) if is_secret_field(name, info) else _plain(value)
    return data


def _without_none(value: Any) -> Any:
    # TOML has no null: an unset key is simply left out (and reads back as its default).
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value if item is not None]
    return value


def data_to_toml(data: dict[str, Any]) -> str:
    """Plain data (``model_dump(mode="json")`` or ``redacted_model``) as TOML text."""
    return tomli_w.dumps(_without_none(data))


def redacted_toml(model: BaseModel) -> str:
    """The configuration as TOML with every secret redacted: safe to print and to paste."""
    return data_to_toml(redacted_model(model))
