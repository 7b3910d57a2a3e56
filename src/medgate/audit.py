"""The append-only, hash-chained audit trail of everything done to patient data.

Each entry is one JSON line carrying the SHA-256 of the previous line, so that any modified,
deleted, inserted or reordered entry breaks the chain at a place ``verify`` can name. Identifiers
are stored only as keyed hashes (``medgate.logs.phi_hash``): the trail itself holds no PHI.
Event names map to the DICOM audit event codes of PS3.15 A.5.3 where one exists.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgate.logs import phi_hash

GENESIS = "0" * 64

# event name -> (DICOM audit event ID code, meaning) from PS3.15 A.5.3 / PS3.16 CID 400
EVENT_CODES: dict[str, tuple[str, str]] = {
    "application-start": ("110100", "Application Activity"),
    "application-stop": ("110100", "Application Activity"),
    "config-loaded": ("110100", "Application Activity"),
    "instance-received": ("110104", "DICOM Instances Transferred"),
    "instance-rejected": ("110104", "DICOM Instances Transferred"),
    "query": ("110112", "Query"),
    "retrieve": ("110104", "DICOM Instances Transferred"),
    "study-queued": ("110103", "DICOM Instances Accessed"),
    "model-run": ("110103", "DICOM Instances Accessed"),
    "result-created": ("110103", "DICOM Instances Accessed"),
    "result-sent": ("110104", "DICOM Instances Transferred"),
    "result-dead-lettered": ("110104", "DICOM Instances Transferred"),
    "api-request": ("110110", "Patient Record"),
    "export": ("110106", "Export"),
    "security-alert": ("110113", "Security Alert"),
    "user-authentication": ("110114", "User Authentication"),
}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_line: int | None = None
    reason: str | None = None


class AuditLog:
    """Append entries to a JSONL file, chained by SHA-256; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], hash_key: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hash_key = hash_key
        self._lock = threading.Lock()

    def record(
        self,
        event: str,
        *,
        outcome: str = "success",
        actor: str | None = None,
        study_uid: str | None = None,
        sop_instance_uid: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry; identifiers are hashed here, so callers pass them as they are.

        ``details`` must not contain PHI: pass only codes, counts, versions, statuses.
        """
        code, meaning = EVENT_CODES.get(event, ("", ""))
        entry: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "event": event,
            "event_code": code,
            "event_meaning": meaning,
            "outcome": outcome,
            "actor": actor,
            "study": phi_hash(study_uid, self.hash_key) if study_uid else None,
            "instance": phi_hash(sop_instance_uid, self.hash_key) if sop_instance_uid else None,
            "details": details or {},
        }
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                entry["prev"] = _last_hash(handle)
                line = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode() + b"\n"
                handle.seek(0, os.SEEK_END)
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def verify(self) -> VerifyResult:
        """Walk the chain; the first line whose ``prev`` does not match is named."""
        if not self.path.exists():
            return VerifyResult(True, 0)
        previous = GENESIS
        count = 0
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    return VerifyResult(False, count, number, "not valid JSON")
                if entry.get("prev") != previous:
                    return VerifyResult(
                        False, count, number, "chain broken: previous entry modified or missing"
                    )
                previous = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
                count += 1
        return VerifyResult(True, count)

    def trace(self, study_uid: str) -> list[dict[str, Any]]:
        """Every entry about one study, oldest first."""
        token = phi_hash(study_uid, self.hash_key)
        return [e for e in self.entries() if e.get("study") == token]


def _last_hash(handle: Any) -> str:
    """SHA-256 of the file's last line, read from the end (the file may be large)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return GENESIS
    block = 4096
    data = b""
    position = size
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        stripped = data.rstrip(b"\n")
        if b"\n" in stripped:
            return hashlib.sha256(stripped.rsplit(b"\n", 1)[1]).hexdigest()
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()
