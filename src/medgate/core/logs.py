"""Logging without patient identifiers: identifiers go into logs only as keyed hashes.

``phi_hash`` is an HMAC-SHA256 under ``audit.hash_key``: the same identifier always gives the same
token (so one study can be followed through the logs and the audit trail), but the token cannot be
turned back into the identifier without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from medgate.core.config import DEFAULT_HASH_KEY

_DEFAULT_KEY = os.environ.get("MEDGATE_AUDIT__HASH_KEY", DEFAULT_HASH_KEY)
_key: bytes = _DEFAULT_KEY.encode()


def set_hash_key(key: str) -> None:
    """Set the process-wide key for ``phi_hash`` (done once from the config at start-up)."""
    global _key
    _key = key.encode()


def phi_hash(value: object, key: str | None = None) -> str:
    """A short keyed hash standing for an identifier (UID, patient ID, name) in logs."""
    if value is None:
        return "-"
    secret = key.encode() if key is not None else _key
    digest = hmac.new(secret, str(value).encode("utf-8", "surrogateescape"), hashlib.sha256)
    return "h:" + digest.hexdigest()[:16]


def configure_logging(level: str | int = "INFO") -> None:
    """One log format for every medgate process; quiet the chatty libraries."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pynetdicom logs whole data sets (patient names included) at DEBUG; keep it at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.WARNING)
    # highdicom logs source SOP Instance UIDs at INFO; httpx logs every request URL.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
