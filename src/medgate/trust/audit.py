"""The append-only, hash-chained audit trail of everything done to patient data.

Why a chain: a site must be able to show, after the fact, that nobody quietly edited the record of
what happened to a patient's images. Each entry is one JSON line that carries

* ``seq``: its position (1, 2, 3 ...), so a deleted, duplicated or moved entry shows at once;
* ``prev``: the SHA-256 of the previous line's bytes (``GENESIS`` for the first), so any change to
  an entry breaks the link from the next one;
* ``mac``: an HMAC-SHA256 of the entry under ``audit.hash_key``, so an entry that somebody without
  the key modified, forged or re-chained is named itself, not only by its successor.

A second file, the *anchor* (``<log>.anchor``), holds the count and the hash of the last entry,
also under the key. It is rewritten after every append, so cutting entries off the end of the log
(which leaves a perfectly valid shorter chain) is detected too. Copy the anchor line elsewhere
(``medgate audit verify`` prints it) to also catch someone who has the key and rewrites both files.

Identifiers are stored only as keyed hashes (``core.logs.phi_hash``): the trail holds no PHI.
``details`` is scrubbed defensively: values under identifying keys and anything shaped like a DICOM
UID are hashed as well. Event names map to the DICOM audit event IDs of PS3.15 A.5.3 / PS3.16
CID 400 (110100-110114) and carry the event action code (C, R, U, D, E) of PS3.15 A.5.3.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgate.core.logs import phi_hash

GENESIS = "0" * 64

# DICOM audit event IDs, PS3.16 CID 400 "Audit Event ID".
APPLICATION_ACTIVITY = ("110100", "Application Activity")
AUDIT_LOG_USED = ("110101", "Audit Log Used")
BEGIN_TRANSFERRING = ("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = ("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
STUDY_DELETED = ("110105", "DICOM Study Deleted")
EXPORT = ("110106", "Export")
IMPORT = ("110107", "Import")
NETWORK_ENTRY = ("110108", "Network Entry")
PATIENT_RECORD = ("110110", "Patient Record")
QUERY = ("110112", "Query")
SECURITY_ALERT = ("110113", "Security Alert")
USER_AUTHENTICATION = ("110114", "User Authentication")
NO_CODE = ("", "")

# event name -> (DICOM audit event ID, meaning, EventActionCode C/R/U/D/E of PS3.15 A.5.3).
# An event with no fitting DICOM event ID (internal workflow steps) keeps an empty code: it is still
# chained and traced, it just does not claim a meaning the standard does not give it.
EVENT_TYPES: dict[str, tuple[str, str, str]] = {
    "application-start": (*APPLICATION_ACTIVITY, "E"),
    "application-stop": (*APPLICATION_ACTIVITY, "E"),
    "config-loaded": (*APPLICATION_ACTIVITY, "E"),
    "association-accepted": (*BEGIN_TRANSFERRING, "E"),
    "instance-received": (*INSTANCES_TRANSFERRED, "C"),
    "instance-rejected": (*INSTANCES_TRANSFERRED, "C"),
    "query": (*QUERY, "E"),
    "retrieve": (*INSTANCES_TRANSFERRED, "C"),
    "study-complete": (*NO_CODE, "E"),
    "study-queued": (*NO_CODE, "E"),
    "model-run": (*INSTANCES_ACCESSED, "R"),
    "triage": (*INSTANCES_ACCESSED, "R"),
    "result-created": (*INSTANCES_ACCESSED, "C"),
    "result-sent": (*INSTANCES_TRANSFERRED, "R"),
    "result-confirmed": (*INSTANCES_TRANSFERRED, "R"),
    "result-dead-lettered": (*INSTANCES_TRANSFERRED, "R"),
    "study-deleted": (*STUDY_DELETED, "D"),
    "results-read": (*INSTANCES_ACCESSED, "R"),
    "api-request": (*PATIENT_RECORD, "R"),
    "cds-request": (*PATIENT_RECORD, "R"),
    "export": (*EXPORT, "R"),
    "import": (*IMPORT, "C"),
    "audit-log-used": (*AUDIT_LOG_USED, "R"),
    "network-entry": (*NETWORK_ENTRY, "E"),
    "security-alert": (*SECURITY_ALERT, "E"),
    "user-authentication": (*USER_AUTHENTICATION, "E"),
}

_UID_SHAPE = re.compile(r"^[0-9]+(\.[0-9]+){3,}$")
_IDENTIFYING_KEY = re.compile(
    r"uid|patient|name|accession|birth|address|phone|physician|institution|mrn|identifier",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found: ``first_bad_line`` is 1-based; None when the fault has no line."""

    ok: bool
    entries: int
    first_bad_line: int | None = None
    reason: str | None = None
    last_hash: str = GENESIS
    notes: list[str] = field(default_factory=list)


def anchor_path(log_path: str | os.PathLike[str]) -> Path:
    """Where the anchor of ``log_path`` lives."""
    path = Path(log_path)
    return path.with_name(path.name + ".anchor")


class AuditLog:
    """Append entries to a JSONL file, chained by SHA-256; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], hash_key: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hash_key = hash_key
        self.anchor = anchor_path(self.path)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing
    def record(
        self,
        event: str,
        *,
        outcome: str = "success",
        actor: str | None = None,
        study_uid: str | None = None,
        sop_instance_uid: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry; identifiers are hashed here, so callers pass them as they are.

        ``details`` should hold only codes, counts, versions and statuses; identifying-looking
        values are hashed anyway (see ``scrub_details``).
        """
        code, meaning, action = EVENT_TYPES.get(event, ("", "", ""))
        entry: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "event": event,
            "event_code": code,
            "event_meaning": meaning,
            "action": action,
            "outcome": outcome,
            "actor": actor,
            "study": phi_hash(study_uid, self.hash_key) if study_uid else None,
            "instance": phi_hash(sop_instance_uid, self.hash_key) if sop_instance_uid else None,
            "details": scrub_details(details or {}, self.hash_key),
        }
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last, complete = _last_line(handle)
                if last is None:
                    entry["seq"], entry["prev"] = 1, GENESIS
                else:
                    entry["seq"] = (_seq_of(last) or _count_lines(handle)) + 1
                    entry["prev"] = hashlib.sha256(last).hexdigest()
                line = self._seal(entry)
                handle.seek(0, os.SEEK_END)
                # A half-written line (crash mid-append) stays a line of its own: verify names it.
                handle.write((b"" if complete else b"\n") + line + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                self._write_anchor(entry["seq"], hashlib.sha256(line).hexdigest())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entry

    def record_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Append several ``(event, record-kwargs)`` entries under one lock and one fsync.

        Same entries as calling ``record`` for each in order; used by busy writers (the DICOM
        receiver's audit queue) so that a burst of instances costs one fsync, not two each.
        """
        if not items:
            return []
        entries: list[dict[str, Any]] = []
        for event, kwargs in items:
            code, meaning, action = EVENT_TYPES.get(event, ("", "", ""))
            study_uid = kwargs.get("study_uid")
            sop_uid = kwargs.get("sop_instance_uid")
            entries.append(
                {
                    "time": dt.datetime.now(dt.UTC).isoformat(),
                    "event": event,
                    "event_code": code,
                    "event_meaning": meaning,
                    "action": action,
                    "outcome": kwargs.get("outcome", "success"),
                    "actor": kwargs.get("actor"),
                    "study": phi_hash(study_uid, self.hash_key) if study_uid else None,
                    "instance": phi_hash(sop_uid, self.hash_key) if sop_uid else None,
                    "details": scrub_details(kwargs.get("details") or {}, self.hash_key),
                }
            )
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last, complete = _last_line(handle)
                if last is None:
                    seq, prev = 0, GENESIS
                else:
                    seq = _seq_of(last) or _count_lines(handle)
                    prev = hashlib.sha256(last).hexdigest()
                lines: list[bytes] = []
                for entry in entries:
                    seq += 1
                    entry["seq"], entry["prev"] = seq, prev
                    line = self._seal(entry)
                    prev = hashlib.sha256(line).hexdigest()
                    lines.append(line)
                handle.seek(0, os.SEEK_END)
                handle.write((b"" if complete else b"\n") + b"\n".join(lines) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                self._write_anchor(seq, prev)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entries

    def _seal(self, entry: dict[str, Any]) -> bytes:
        """Serialise ``entry``, with its MAC when a key is configured."""
        body = _dumps(entry)
        if self.hash_key is not None:
            entry["mac"] = _mac(self.hash_key, body)
            return _dumps(entry)
        return body

    def _write_anchor(self, count: int, last_hash: str) -> None:
        data: dict[str, Any] = {"count": count, "last_hash": last_hash}
        if self.hash_key is not None:
            data["mac"] = _mac(self.hash_key, _dumps(data))
        tmp = self.anchor.with_name(self.anchor.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(_dumps(data) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.anchor)

    # ------------------------------------------------------------------ reading
    def entries(self) -> Iterator[dict[str, Any]]:
        """Every parseable entry, oldest first (use ``verify`` to know they are genuine)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for line in handle:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue

    def trace(self, study_uid: str) -> list[dict[str, Any]]:
        """Every entry about one study, oldest first."""
        token = phi_hash(study_uid, self.hash_key)
        return [e for e in self.entries() if e.get("study") == token]

    def verify(self, *, require_anchor: bool = True) -> VerifyResult:
        """Walk the chain and the anchor; the first entry that is not genuine is named.

        Detected: a modified entry (MAC, or the next entry's ``prev`` without a key), a deleted,
        duplicated, inserted or moved entry (``seq`` and ``prev``), a cut-off tail or a missing
        anchor (anchor), a half-written last line. Not detected: an attacker who holds
        ``audit.hash_key`` and rewrites log and anchor together (compare the anchor with a copy
        kept elsewhere), or the loss of the whole log plus its anchor.
        """
        checker = _ChainChecker(self.hash_key)
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    fault = checker.feed(number, raw)
                    if fault is not None:
                        return fault
        return checker.finish(self.anchor, require_anchor)


class _ChainChecker:
    """Checks one line after another; keeps what the anchor comparison needs."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.previous = GENESIS
        self.count = 0
        self.hashes: dict[int, str] = {}

    def bad(self, line: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, self.count, line, reason, self.previous)

    def feed(self, number: int, raw: bytes) -> VerifyResult | None:
        if not raw.endswith(b"\n"):
            return self.bad(number, "incomplete last entry (no line end): cut or half-written")
        line = raw[:-1]
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.bad(number, "not valid JSON: entry modified")
        if not isinstance(entry, dict):
            return self.bad(number, "not a JSON object: entry modified")
        if self.key is not None:
            mac = entry.pop("mac", None)
            if not isinstance(mac, str) or not hmac.compare_digest(
                mac, _mac(self.key, _dumps(entry))
            ):
                return self.bad(
                    number, "MAC mismatch: entry modified or forged (or wrong audit.hash_key)"
                )
        expected = self.count + 1
        seq = entry.get("seq")
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                why = (
                    f"entries {expected}..{seq - 1} deleted"
                    if seq - 1 > expected
                    else (f"entry {expected} deleted")
                )
            else:
                why = "entry inserted, duplicated or moved"
            return self.bad(number, f"sequence number {seq}, expected {expected}: {why}")
        if entry.get("prev") != self.previous:
            if number > 1:
                return self.bad(
                    number - 1,
                    f"line {number - 1} modified: its hash no longer matches line {number}'s prev",
                )
            return self.bad(number, "first entry does not start the chain")
        self.previous = hashlib.sha256(line).hexdigest()
        self.count = expected
        self.hashes[expected] = self.previous
        return None

    def finish(self, anchor: Path, require_anchor: bool) -> VerifyResult:
        ok = VerifyResult(True, self.count, last_hash=self.previous)
        if not anchor.exists():
            if self.count and require_anchor:
                return self.bad(None, f"anchor {anchor.name} missing: the tail cannot be checked")
            return ok
        try:
            data = json.loads(anchor.read_bytes())
            count, last_hash = int(data["count"]), str(data["last_hash"])
        except (ValueError, KeyError, TypeError):
            return self.bad(None, f"anchor {anchor.name} unreadable")
        if self.key is not None:
            mac = data.pop("mac", None)
            if not isinstance(mac, str) or not hmac.compare_digest(
                mac, _mac(self.key, _dumps(data))
            ):
                return self.bad(None, f"anchor {anchor.name} MAC mismatch: anchor modified")
        if self.count < count:
            return self.bad(
                self.count + 1,
                f"log truncated: entries {self.count + 1}..{count} missing "
                f"(the anchor records {count} entries)",
            )
        if self.hashes.get(count) != last_hash:
            return self.bad(count, f"entry {count} differs from the one the anchor recorded")
        if self.count > count:
            ok.notes.append(
                f"{self.count - count} entries newer than the anchor (a crash between append and "
                "anchor update)"
            )
        return ok


def scrub_details(details: Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
    """Hash values that look identifying; keep codes, counts and statuses readable."""

    def clean(name: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(name, v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = str(value)
        if _IDENTIFYING_KEY.search(name) or _UID_SHAPE.match(text):
            return phi_hash(text, key)
        return text

    return {str(k): clean(str(k), v) for k, v in details.items()}


def _dumps(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _mac(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _seq_of(line: bytes) -> int | None:
    try:
        value = json.loads(line).get("seq")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _count_lines(handle: Any) -> int:
    """Fallback when the last entry is damaged: its position is the number of lines."""
    handle.seek(0)
    return sum(1 for _ in handle)


def _last_line(handle: Any) -> tuple[bytes | None, bool]:
    """The file's last line without its line end, and whether it had one (read from the end)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return None, True
    handle.seek(size - 1)
    complete = handle.read(1) == b"\n"
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
            return stripped.rsplit(b"\n", 1)[1], complete
    return data.rstrip(b"\n"), complete


def open_audit(settings: Any) -> AuditLog:
    """The audit log configured in ``settings`` (``audit.path``, keyed by ``audit.hash_key``)."""
    return AuditLog(settings.audit_path, settings.audit.hash_key)
